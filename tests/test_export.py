"""export.py and the backends: exported files give the checkpoint's outputs, carry YOLOv5's layout and metadata,
and a file that cannot be used stops with one sentence naming it.

Tolerances (exported against the PyTorch checkpoint, the same letterboxed med images): decoded box
coordinates 2e-3 px (measured up to 4.3e-4 for ONNX Runtime, 0 for TorchScript), objectness and class
scores 1e-4 (measured 1.8e-6), view probabilities 1e-5 (measured 3.6e-7); after NMS the same boxes,
classes and count, coordinates within 0.01 px and confidences within 1e-4.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

import export
from tests.export_models import make_checkpoints
from tests.helpers import MED_NAMES, MED_VIEWS, one_torch_thread  # noqa: F401 (a fixture)
from tests.yolov5_files import MED_E20, fixture
from utils.backends import load_backend
from utils.boxes import non_max_suppression
from utils.data.augmentations import letterbox
from utils.export.metadata import ExportedFileError

BOX_ATOL, SCORE_ATOL, VIEW_ATOL = 2e-3, 1e-4, 1e-5
NMS_BOX_ATOL = 0.01
NMS_CONF = 0.01  # low enough that every image tested keeps boxes (the 20-epoch detector is unsure on some)
CPU = torch.device("cpu")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict[tuple[str, bool], Path]:
    """(kind, dynamic) -> the checkpoint, with .onnx and .torchscript exported beside it at 320."""
    files = {}
    for dynamic in (False, True):
        folder = tmp_path_factory.mktemp("dynamic" if dynamic else "fixed")
        for kind, weights in make_checkpoints(folder).items():
            export.run(export.parse_opt(["--weights", str(weights), "--include", "onnx", "torchscript",
                                         "--imgsz", "320", *(["--dynamic"] if dynamic else [])]))
            files[kind, dynamic] = weights
    return files


def med_batch(med_root: Path, n: int, shape: tuple[int, int], auto: bool) -> torch.Tensor:
    """n med valid images letterboxed as detect.py does (RGB, [0, 1])."""
    images = sorted((med_root / "valid" / "images").glob("*.png"))[:n]
    arrays = [letterbox(cv2_read(p), shape, stride=32, auto=auto)[0][..., ::-1].transpose(2, 0, 1) for p in images]
    return torch.from_numpy(np.ascontiguousarray(np.stack(arrays))).float() / 255


def cv2_read(path: Path) -> np.ndarray:
    import cv2

    return cv2.imread(str(path))


def assert_same_predictions(ours, reference) -> None:
    """Decoded outputs within the stated tolerances, then the same detections after NMS."""
    diff = (ours.decoded - reference.decoded).abs()
    assert float(diff[..., :4].max()) <= BOX_ATOL and float(diff[..., 4:].max()) <= SCORE_ATOL
    assert (ours.view_probs is None) == (reference.view_probs is None)
    if reference.view_probs is not None:
        assert float((ours.view_probs - reference.view_probs).abs().max()) <= VIEW_ATOL
        assert torch.equal(ours.view_probs.argmax(1), reference.view_probs.argmax(1))
    found = 0
    pairs = zip(non_max_suppression(ours.decoded, NMS_CONF), non_max_suppression(reference.decoded, NMS_CONF))
    for mine, theirs in pairs:
        assert mine.shape == theirs.shape
        found += len(theirs)
        assert torch.equal(mine[:, 5], theirs[:, 5])
        assert float((mine[:, :4] - theirs[:, :4]).abs().max()) <= NMS_BOX_ATOL
        assert float((mine[:, 4] - theirs[:, 4]).abs().max()) <= SCORE_ATOL
    assert found, "the trained detector finds boxes on these images"


@pytest.mark.parametrize("kind", ["detect", "joint", "dual"])
@pytest.mark.parametrize("suffix", [".onnx", ".torchscript"])
def test_dynamic_export_matches_checkpoint_at_any_batch_and_size(exported, med_root, kind, suffix):
    weights = exported[kind, True]
    reference, runtime = load_backend(weights, CPU), load_backend(weights.with_suffix(suffix), CPU)
    assert runtime.dynamic and runtime.names == dict(enumerate(MED_NAMES)) and runtime.stride == 32
    assert runtime.view_names == (None if kind == "detect" else MED_VIEWS)
    for n, shape, auto in ((3, (320, 320), True), (1, (416, 416), False)):  # rect 256x320, then another size
        images = med_batch(med_root, n, shape, auto)
        assert_same_predictions(runtime(images), reference(images))


@pytest.mark.parametrize("kind", ["detect", "joint", "dual"])
@pytest.mark.parametrize("suffix", [".onnx", ".torchscript"])
def test_fixed_export_matches_checkpoint_and_names_its_size(exported, med_root, kind, suffix):
    weights = exported[kind, False]
    reference, runtime = load_backend(weights, CPU), load_backend(weights.with_suffix(suffix), CPU)
    assert runtime.fixed_shape == (1, 3, 320, 320) and runtime.imgsz == (320, 320)
    images = med_batch(med_root, 3, (320, 320), auto=False)  # batch 3 runs as three chunks of the exported batch 1
    assert_same_predictions(runtime(images), reference(images))
    with pytest.raises(ExportedFileError) as stopped:
        runtime(med_batch(med_root, 1, (320, 320), auto=True))  # 256x320
    message = str(stopped.value)
    assert str(runtime.weights) in message and "exported for 320x320" in message and "--dynamic" in message
    assert "\n" not in message


def test_onnx_layout_and_metadata(exported):
    fixed = onnx.load(str(exported["joint", False].with_suffix(".onnx")))
    dynamic = onnx.load(str(exported["joint", True].with_suffix(".onnx")))

    def dims(value) -> list:
        return [d.dim_value or d.dim_param for d in value.type.tensor_type.shape.dim]

    assert [i.name for i in fixed.graph.input] == ["images"] and dims(fixed.graph.input[0]) == [1, 3, 320, 320]
    assert [o.name for o in fixed.graph.output] == ["output0", "view_probs"]
    assert dims(fixed.graph.output[0]) == [1, 6300, 9] and dims(fixed.graph.output[1]) == [1, 3]  # 3 x (40²+20²+10²)
    assert dims(dynamic.graph.input[0]) == ["batch", 3, "height", "width"]
    assert dims(dynamic.graph.output[0]) == ["batch", "anchors", 9]
    props = {p.key: p.value for p in fixed.metadata_props}
    assert props["stride"] == "32" and props["names"] == str(dict(enumerate(MED_NAMES)))  # YOLOv5's two keys
    assert props["view_names"] == str(MED_VIEWS) and props["task"] == "joint" and props["imgsz"] == "[320, 320]"
    assert props["dynamic"] == "False" and {p.key: p.value for p in dynamic.metadata_props}["dynamic"] == "True"
    assert props["format"] == "yolomed-export-v1"
    detect = onnx.load(str(exported["detect", False].with_suffix(".onnx")))
    assert [o.name for o in detect.graph.output] == ["output0"]
    assert "view_names" not in {p.key for p in detect.metadata_props}
    fused = {n.op_type for n in fixed.graph.node}
    assert "BatchNormalization" not in fused and "Dropout" not in fused  # fused Conv+BN, eval mode


def test_torchscript_config_is_yolov5s_plus_views(exported):
    extra = {"config.txt": ""}
    torch.jit.load(str(exported["dual", False].with_suffix(".torchscript")), _extra_files=extra)
    config = json.loads(extra["config.txt"])
    assert config["shape"] == [1, 3, 320, 320] and config["stride"] == 32
    assert config["names"] == {str(i): n for i, n in enumerate(MED_NAMES)}
    assert config["view_names"] == MED_VIEWS and config["task"] == "dual"


def test_fixed_batch_export_pads_the_last_chunk(tmp_path, med_root):
    weights = make_checkpoints(tmp_path)["joint"]
    (file,) = export.run(export.parse_opt(["--weights", str(weights), "--include", "onnx", "--imgsz", "320",
                                           "--batch-size", "2"]))
    runtime = load_backend(file, CPU)
    assert runtime.fixed_shape == (2, 3, 320, 320)
    images = med_batch(med_root, 3, (320, 320), auto=False)  # one full chunk, then one padded with a blank image
    assert_same_predictions(runtime(images), load_backend(weights, CPU)(images))


def test_files_that_cannot_be_used_stop_with_one_sentence(exported, tmp_path):
    text = tmp_path / "notes.onnx"
    text.write_text("not a model")
    garbage_ts = tmp_path / "notes.torchscript"
    garbage_ts.write_bytes(b"\x00" * 64)
    plain = tmp_path / "plain.onnx"  # ONNX, but not a detector's: no metadata, no output0
    torch.onnx.export(torch.nn.Conv2d(3, 1, 1), (torch.zeros(1, 3, 8, 8),), str(plain), dynamo=False)
    detection_only = load_backend(exported["detect", False].with_suffix(".onnx"), CPU)
    cases = [(lambda: load_backend(text, CPU), "not an ONNX model"),
             (lambda: load_backend(garbage_ts, CPU), "not a TorchScript file"),
             (lambda: load_backend(plain, CPU), "expected one input and an 'output0' output"),
             (lambda: detection_only.require_views("the view table"), "detection-only model")]
    for call, words in cases:
        with pytest.raises(ExportedFileError) as stopped:
            call()
        message = str(stopped.value)
        assert words in message and message.startswith("--weights ") and "\n" not in message, message


def test_export_flags_refused_with_one_line(exported):
    weights = str(exported["detect", False])
    for argv, words in ((["--include", "openvino"], "--include openvino: a YOLOv5 format not exported"),
                        (["--include", "onnx", "--half"], "--half only compatible with GPU export"),
                        (["--include", "onnx", "--opset", "9"], "--opset 9: expected an ONNX opset from 11 to 20")):
        with pytest.raises(SystemExit) as stopped:
            export.main(export.parse_opt(["--weights", weights, *argv]))
        assert words in str(stopped.value.code) and "\n" not in str(stopped.value.code)


def test_yolov5_file_exports_at_another_opset(tmp_path):
    weights = tmp_path / "yolov5n-med-e20.pt"
    shutil.copyfile(fixture(MED_E20), weights)
    (file,) = export.run(export.parse_opt(["--weights", str(weights), "--include", "onnx", "--imgsz", "256",
                                           "--opset", "12"]))
    model = onnx.load(str(file))
    assert model.opset_import[0].version == 12 and file == weights.with_suffix(".onnx")
    assert load_backend(file, CPU).fixed_shape == (1, 3, 256, 256)
