"""Write an ExportModule to ONNX or TorchScript, with the metadata the backends read back.

ONNX goes through PyTorch's TorchScript-based exporter (`dynamo=False`), the path YOLOv5 uses: on the
models here it exports yolov5n in under a second, offline, needs neither onnxscript nor a network, and
honours --opset as given. The newer torch.export-based path (the default since torch 2.9) took about
30 s for the same model and could not lower the graph to opset 17 (tried with torch 2.14.1,
onnxscript 0.7.2). The file is checked with onnx.checker before it is kept.
"""
from __future__ import annotations

import contextlib
import os
import warnings
from pathlib import Path
from typing import Iterator

import torch

from utils.export.metadata import DETECTION_OUTPUT, INPUT_NAME, VIEW_OUTPUT, ExportMetadata, ExportedFileError
from utils.export.wrapper import ExportModule


@contextlib.contextmanager
def _quiet_tracing() -> Iterator[None]:
    """Tracing warns about the shape arithmetic it records and about its own deprecation; neither is actionable."""
    with warnings.catch_warnings():
        for category in (torch.jit.TracerWarning, DeprecationWarning, FutureWarning):
            warnings.filterwarnings("ignore", category=category)
        yield


def export_onnx(module: ExportModule, example: torch.Tensor, file: Path, meta: ExportMetadata, opset: int) -> Path:
    """`images` -> `output0` [B, N, 5 + nc] (+ `view_probs` [B, K]); dynamic batch and size when meta.dynamic."""
    import onnx

    outputs = [DETECTION_OUTPUT, VIEW_OUTPUT] if module.with_views else [DETECTION_OUTPUT]
    axes = None
    if meta.dynamic:
        axes = {INPUT_NAME: {0: "batch", 2: "height", 3: "width"}, DETECTION_OUTPUT: {0: "batch", 1: "anchors"}}
        if module.with_views:
            axes[VIEW_OUTPUT] = {0: "batch"}
    with _quiet_tracing():
        torch.onnx.export(module, (example,), str(file), dynamo=False, opset_version=opset, input_names=[INPUT_NAME],
                          output_names=outputs, dynamic_axes=axes, do_constant_folding=True)
    model = onnx.load(str(file))
    columns = model.graph.output[0].type.tensor_type.shape.dim[2]
    columns.Clear()
    columns.dim_value = 5 + len(meta.names)  # the tracer leaves this axis symbolic; it is the fixed 5 + nc
    for key, value in meta.onnx_props().items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model)
    onnx.save(model, str(file))
    return file


def export_torchscript(module: ExportModule, example: torch.Tensor, file: Path, meta: ExportMetadata) -> Path:
    """A traced module returning what the ONNX file returns, with config.txt (JSON metadata) inside."""
    with _quiet_tracing():
        traced = torch.jit.trace(module, example, strict=False)
    traced.save(str(file), _extra_files={"config.txt": meta.config_json()})
    return file


SUFFIXES = {"onnx": ".onnx", "torchscript": ".torchscript"}  # the formats this project exports


def output_file(weights: Path, fmt: str) -> Path:
    """Beside the weights, as YOLOv5 writes them: best.pt -> best.onnx, best.torchscript."""
    file = weights.with_suffix(SUFFIXES[fmt])
    if not os.access(file.parent, os.W_OK):
        raise ExportedFileError(f"--weights {weights}: cannot write {file.name} beside it (folder not writable); "
                                f"copy the weights to a writable folder first")
    return file
