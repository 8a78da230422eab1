"""train_dual.py end to end: two networks on one engine; val.py and detect.py take its checkpoint."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

import detect
import train_dual
import val
from tests.helpers import med_subset_yaml


ARGS = ["--cfg", "models/yolov5n.yaml", "--img", "96", "--batch-size", "4", "--workers", "0", "--noautoanchor",
        "--hyp", "hyp.medical.yaml", "--cls-optimizer", "AdamW", "--cls-lr0", "0.002", "--cls-imgsz", "64"]


@pytest.fixture(scope="module")
def dual_run(tmp_path_factory, med_root) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("dual")
    data = med_subset_yaml(tmp, med_root)
    result = train_dual.main(train_dual.parse_opt(["--data", str(data), "--epochs", "1",
                                                   "--project", str(tmp / "runs"), *ARGS]))
    return Path(result["save_dir"]), data


def test_dual_checkpoint_holds_both_networks(dual_run):
    save_dir, _ = dual_run
    ckpt = torch.load(save_dir / "weights" / "best.pt", weights_only=True)
    assert set(ckpt["model_yaml"]["dual"]) == {"detector", "classifier", "cls_imgsz"}
    assert ckpt["model_yaml"]["dual"]["cls_imgsz"] == 64
    keys = ckpt["model"].keys()
    assert any(k.startswith("detector.") for k in keys) and any(k.startswith("classifier.") for k in keys)
    history = json.loads((save_dir / "training_history.json").read_text())
    lrs = history["epochs"][0]["lr"]
    assert set(lrs) == {"detector", "classifier"}
    opt_yaml = yaml.safe_load((save_dir / "opt.yaml").read_text())
    assert opt_yaml["cls_optimizer"] == "AdamW" and opt_yaml["cls_lr0"] == 0.002


def test_val_and_detect_accept_dual_checkpoint(dual_run, med_root, tmp_path):
    save_dir, data = dual_run
    weights = str(save_dir / "weights" / "best.pt")
    (result,) = val.main(val.parse_opt(["--weights", weights, "--data", str(data), "--img", "96", "--workers", "0",
                                        "--project", str(tmp_path / "val")]))
    assert result.n_instances == 8 and result.view is not None and result.view.n == 8
    src = sorted((med_root / "valid" / "images").glob("*.png"))[0]
    out = detect.main(detect.parse_opt(["--weights", weights, "--source", str(src), "--img", "96", "--save-txt",
                                        "--project", str(tmp_path / "detect")]))
    assert (out / src.name).is_file()
    assert len((out / "labels" / f"{src.stem}.txt").read_text().strip().splitlines()[-1].split()) == 3


def test_detector_initialised_from_detection_checkpoint(dual_run, tmp_path, med_root):
    """--weights may name a checkpoint: its detector part (or a detection-only model) initialises the detector."""
    save_dir, data = dual_run
    source = torch.load(save_dir / "weights" / "best.pt", weights_only=True)["model"]
    opt = train_dual.parse_opt(["--data", str(data), "--epochs", "1", "--project", str(tmp_path / "runs"),
                                "--weights", str(save_dir / "weights" / "best.pt"), "--noval", *ARGS])
    model, _ = train_dual.dual_model_factory(opt)(opt, 4, {0: "AR", 1: "MR", 2: "PR", 3: "TR"}, 3, torch.device("cpu"))
    for name, tensor in model.detector.state_dict().items():
        assert torch.equal(tensor, source[f"detector.{name}"]), name


def test_refuses_dataset_without_views(tmp_path, med_root):
    data = med_subset_yaml(tmp_path, med_root, with_views=False)
    with pytest.raises(SystemExit, match="declares no cls_names"):
        train_dual.main(train_dual.parse_opt(["--data", str(data), "--epochs", "1",
                                              "--project", str(tmp_path / "runs"), *ARGS]))
