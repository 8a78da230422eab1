"""val.py on exported files gives the checkpoint's figures on the med valid split (320; joint and dual on 64 images).

Dynamic exports run exactly the checkpoint's inputs (rectangular batches of 32), so mAP50 and mAP50-95
must agree to 3 decimals and the view accuracy exactly. A fixed-size export runs batch 1 on square
320x320 letterboxes, as YOLOv5's val.py does for such files: its figures are compared with the checkpoint's
on those same square inputs, to 3 decimals. (They are not the rectangular figures: this YOLOv5 model,
trained on square mosaics, scores mAP50 0.607 on square letterboxes and 0.441 on rectangular ones.)
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import torch

import export
import val
from utils.backends import load_backend
from utils.data.dataset_yaml import check_dataset
from utils.data.loaders import create_dataloader
from utils.evaluation.validation import evaluate
from tests.export_models import make_checkpoints
from tests.helpers import med_subset_yaml
from tests.yolov5_files import MED_E20, fixture



def validate(weights: Path, data: str, tmp_path: Path, *extra: str):
    opt = val.parse_opt(["--weights", str(weights), "--data", data, "--img", "320", "--batch-size", "32",
                         "--workers", "2", "--project", str(tmp_path / "val"), *extra])
    (result,) = val.main(opt)
    return result


def square_reference(weights: Path, data: str):
    """The checkpoint on the inputs val.py gives a fixed 320x320 export: batch 1, square letterboxes, pad 0.5."""
    model = load_backend(weights, torch.device("cpu"))
    loader, _ = create_dataloader(check_dataset(data)["val"], 320, 1, 32, rect=False, pad=0.5, workers=2,
                                  nc=len(model.names))
    return evaluate(model, loader, names=model.names, device=torch.device("cpu"), plots=False)


def figures(result) -> tuple[str, ...]:
    return tuple(f"{x:.3f}" for x in (result.precision, result.recall, result.map50, result.map))


def test_yolov5_checkpoint_and_its_exports_give_the_same_map(tmp_path: Path):
    (tmp_path / "dynamic").mkdir()
    (tmp_path / "fixed").mkdir()
    dynamic_pt, fixed_pt = tmp_path / "dynamic" / "best.pt", tmp_path / "fixed" / "best.pt"
    for copy in (dynamic_pt, fixed_pt):
        shutil.copyfile(fixture(MED_E20), copy)
    export.run(export.parse_opt(["--weights", str(dynamic_pt), "--include", "onnx", "--imgsz", "320", "--dynamic"]))
    export.run(export.parse_opt(["--weights", str(fixed_pt), "--include", "onnx", "--imgsz", "320"]))
    reference = validate(dynamic_pt, "data/med-detection.yaml", tmp_path)
    assert (reference.n_images, reference.n_instances) == (183, 183)
    assert figures(reference)[2:] == ("0.441", "0.143")  # YOLOv5's own val.py figures (fixture README)
    # ONNX Runtime here; TorchScript's raw outputs match the checkpoint's in tests/test_export.py (measured: equal)
    assert figures(validate(dynamic_pt.with_suffix(".onnx"), "data/med-detection.yaml", tmp_path)) == figures(reference)
    fixed = validate(fixed_pt.with_suffix(".onnx"), "data/med-detection.yaml", tmp_path)
    assert fixed.n_images == 183
    assert figures(fixed) == figures(square_reference(fixed_pt, "data/med-detection.yaml"))
    with pytest.raises(SystemExit) as stopped:
        validate(fixed_pt.with_suffix(".onnx"), "data/med-detection.yaml", tmp_path, "--img", "416")
    message = str(stopped.value.code)
    assert "exported for 320x320" in message and "best.onnx" in message and "\n" not in message


def test_joint_and_dual_exports_give_the_same_view_accuracy(tmp_path: Path, med_root: Path):
    checkpoints = make_checkpoints(tmp_path)
    data = str(med_subset_yaml(tmp_path, med_root, n=64, split="valid"))  # two rectangular batches of 32
    for kind in ("joint", "dual"):
        export.run(export.parse_opt(["--weights", str(checkpoints[kind]), "--include", "onnx", "--imgsz", "320",
                                     "--dynamic"]))
        reference = validate(checkpoints[kind], data, tmp_path)
        assert (reference.n_images, reference.view.n) == (64, 64)
        exported = validate(checkpoints[kind].with_suffix(".onnx"), data, tmp_path)
        assert figures(exported) == figures(reference), kind
        assert exported.view.accuracy == reference.view.accuracy, kind
        assert (exported.view.confusion == reference.view.confusion).all(), kind
