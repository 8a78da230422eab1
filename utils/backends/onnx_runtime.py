"""ONNX files written by export.py (or YOLOv5's export.py), run by ONNX Runtime: CPU, or CUDA when it is there."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from utils.backends.base import Backend, Predictions
from utils.export.metadata import DETECTION_OUTPUT, VIEW_OUTPUT, ExportedFileError, ExportMetadata
from utils.logger import LOGGER


@dataclass(frozen=True)
class SessionSettings:
    """ONNX Runtime session options; the defaults are what won on 2 CPU cores (docs/deploy.md).

    threads: intra-op threads (0 = ONNX Runtime's choice, one per physical core); optimization: basic,
    extended or all (graph rewrites at load); parallel: run independent graph branches concurrently;
    spin: idle worker threads busy-wait for the next run (ONNX Runtime's default; off here: on 2 shared
    cores a spinning worker took the CPU from the pre-processing and NMS around each run, docs/deploy.md).
    """

    threads: int = 0
    optimization: str = "all"
    parallel: bool = False
    spin: bool = False


LEVELS = ("disable", "basic", "extended", "all")


def session_options(settings: SessionSettings):
    """ort.SessionOptions for the settings."""
    import onnxruntime as ort

    if settings.optimization not in LEVELS:
        raise ValueError(f"optimization must be one of {', '.join(LEVELS)}, got {settings.optimization!r}")
    options = ort.SessionOptions()
    options.intra_op_num_threads = settings.threads
    options.graph_optimization_level = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL, "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED, "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[settings.optimization]
    options.execution_mode = (ort.ExecutionMode.ORT_PARALLEL if settings.parallel
                              else ort.ExecutionMode.ORT_SEQUENTIAL)
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if settings.spin else "0")
    options.log_severity_level = 3  # errors only: ORT's start-up notes are not the user's business
    return options


def providers_for(device: torch.device) -> list[str]:
    """CUDA first when the device is a GPU and this onnxruntime build has the CUDA provider; CPU always."""
    import onnxruntime as ort

    if device.type == "cuda":
        if "CUDAExecutionProvider" in ort.get_available_providers():
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]
        LOGGER.warning("WARNING ⚠️ this onnxruntime has no CUDA provider (install onnxruntime-gpu); running on the CPU")
    return ["CPUExecutionProvider"]


class OnnxRuntimeBackend(Backend):
    """An InferenceSession on the file; names, views, stride and input size from its metadata and input shape."""

    format = "onnx"

    def __init__(self, weights: str | Path, device: torch.device, settings: SessionSettings | None = None) -> None:
        import onnxruntime as ort

        file = Path(weights)
        if not file.is_file():
            raise ExportedFileError(f"--weights {file}: file not found")
        try:
            self.session = ort.InferenceSession(str(file), session_options(settings or SessionSettings()),
                                                providers=providers_for(device))
        except Exception as e:  # onnxruntime raises its own exception types for unparsable or invalid models
            raise ExportedFileError(f"--weights {file}: not an ONNX model ONNX Runtime can load "
                                    f"({str(e).strip().splitlines()[0][:160]})") from e
        inputs, outputs = self.session.get_inputs(), [o.name for o in self.session.get_outputs()]
        if len(inputs) != 1 or DETECTION_OUTPUT not in outputs:
            raise ExportedFileError(f"--weights {file}: expected one input and an '{DETECTION_OUTPUT}' output "
                                    f"(YOLOv5's layout), found inputs {[i.name for i in inputs]} and outputs {outputs}")
        shape = list(inputs[0].shape)
        meta = ExportMetadata.from_onnx_props(self.session.get_modelmeta().custom_metadata_map, file, shape)
        if meta.view_names and VIEW_OUTPUT not in outputs:
            raise ExportedFileError(f"--weights {file}: its metadata names views but the graph has no "
                                    f"'{VIEW_OUTPUT}' output")
        fixed = all(isinstance(d, int) for d in shape)
        super().__init__(file, device, names=meta.names, view_names=meta.view_names, stride=meta.stride,
                         fixed_shape=tuple(shape) if fixed else None, half=inputs[0].type == "tensor(float16)")
        self.metadata = meta
        self.input_name = inputs[0].name
        self.output_names = [DETECTION_OUTPUT] + ([VIEW_OUTPUT] if meta.view_names else [])

    def _run(self, images: torch.Tensor) -> Predictions:
        array = images.detach().cpu().numpy().astype(np.float16 if self.half else np.float32, copy=False)
        out = self.session.run(self.output_names, {self.input_name: array})
        decoded = torch.from_numpy(out[0]).float().to(self.device)
        views = torch.from_numpy(out[1]).float().to(self.device) if len(out) > 1 else None
        return Predictions(decoded, views)
