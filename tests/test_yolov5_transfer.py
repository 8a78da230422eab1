"""Fine-tuning from YOLOv5's own checkpoints: YOLOv5's transfer rule and log line, in every training script."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

import detect
import train
import train_dual
import train_gradnorm
from tests.helpers import med_subset_yaml
from tests.yolov5_files import COCO_N, MED_E20, fixture
from utils.checkpoints import load_checkpoint
from utils.training.model_setup import build_training_model

MED = {0: "AR", 1: "MR", 2: "PR", 3: "TR"}
CPU = torch.device("cpu")


def _build(weights: Path, nc: int = 4, n_views: int | None = None, extra: list[str] | None = None):
    opt = train.parse_opt(["--weights", str(weights), *(extra or [])])
    model, _ = build_training_model(opt, nc, MED if nc == 4 else {i: str(i) for i in range(nc)}, n_views, CPU)
    return model


def _line(messages: list[str], start: str) -> str:
    return next(m for m in messages if m.startswith(start))


def test_same_classes_transfer_everything(messages):
    model = _build(fixture(MED_E20))
    assert _line(messages, "Transferred") == f"Transferred 350/350 items from {MED_E20}"
    source = load_checkpoint(MED_E20)["model"]
    assert all(torch.equal(v, source[k]) for k, v in model.state_dict().items())


def test_other_nc_leaves_detect_outputs_fresh_and_keeps_checkpoint_anchors(messages):
    model = _build(fixture(COCO_N), nc=4)
    assert _line(messages, "Transferred") == f"Transferred 344/350 items from {COCO_N}"
    assert f"{COCO_N} predicts 80 classes, this run 4: its Detect output convolutions start fresh" in messages
    assert "model.24 (6, other shape)" in _line(messages, "Fresh")
    source = load_checkpoint(COCO_N)["model"]
    assert torch.equal(model.detect.anchors, source["model.24.anchors"])  # AutoAnchor'd on coco128 by YOLOv5
    assert not torch.equal(source["model.24.anchors"], _build(COCO_N, extra=["--cfg", "yolov5n.yaml"]).detect.anchors)


def test_cfg_or_hyp_anchors_exclude_the_checkpoint_anchors(messages, tmp_path: Path):
    _build(fixture(COCO_N), nc=80, extra=["--cfg", "models/yolov5n.yaml"])
    assert _line(messages, "Transferred") == f"Transferred 349/350 items from {COCO_N}"
    assert "model.24 (1, excluded)" in _line(messages, "Fresh")
    hyp = yaml.safe_load(Path("data/hyps/hyp.scratch-low.yaml").read_text())
    (tmp_path / "hyp.yaml").write_text(yaml.safe_dump({**hyp, "anchors": 3}))
    messages.clear()
    model = _build(COCO_N, nc=80, extra=["--hyp", str(tmp_path / "hyp.yaml")])
    assert _line(messages, "Transferred") == f"Transferred 349/350 items from {COCO_N}"
    assert model.yaml["anchors"] == 3


def test_joint_model_gets_a_fresh_view_head(messages):
    model = _build(fixture(MED_E20), n_views=3)
    assert _line(messages, "Transferred") == f"Transferred 350/354 items from {MED_E20}"
    assert _line(messages, "Fresh") == "Fresh (not transferred): view_head (4, not in the file)"
    assert model.n_views == 3


def test_dual_model_detector_from_yolov5_classifier_fresh(messages, tmp_path: Path, med_root: Path):
    data = med_subset_yaml(tmp_path, med_root)
    opt = train_dual.parse_opt(["--data", str(data), "--weights", str(fixture(MED_E20)), "--img", "96"])
    model, _ = train_dual.dual_model_factory(opt)(opt, 4, MED, 3, CPU)
    assert _line(messages, "Transferred") == f"Transferred 350/350 items from {MED_E20}"
    assert "The view classifier starts fresh (no --cls-weights)" in messages
    source = load_checkpoint(MED_E20)["model"]
    assert all(torch.equal(v, source[k]) for k, v in model.detector.state_dict().items())


def test_resume_from_a_yolov5_file_is_refused():
    opt = train.parse_opt(["--weights", str(fixture(MED_E20))])
    opt.resume = True
    with pytest.raises(SystemExit, match="a YOLOv5 run cannot be continued here"):
        build_training_model(opt, 4, MED, None, CPU)


def test_gradnorm_trains_from_yolov5_weights_then_detect_runs(tmp_path: Path, med_root: Path, messages):
    data = med_subset_yaml(tmp_path, med_root, n=4)
    result = train_gradnorm.main(train_gradnorm.parse_opt([
        "--data", str(data), "--weights", str(fixture(MED_E20)), "--img", "96", "--batch-size", "2", "--epochs", "1",
        "--workers", "0", "--noautoanchor", "--hyp", "hyp.medical.yaml", "--project", str(tmp_path / "runs")]))
    assert f"Transferred 350/354 items from {MED_E20}" in messages
    best = Path(result["save_dir"]) / "weights" / "best.pt"
    assert torch.load(best, weights_only=True)["model_yaml"]["view_head"]["n_views"] == 3
    src = sorted((med_root / "valid" / "images").glob("*.png"))[0]
    out = detect.main(detect.parse_opt(["--weights", str(MED_E20), "--source", str(src), "--img", "320",
                                        "--project", str(tmp_path / "detect")]))
    assert (out / src.name).is_file()
