"""End-to-end smoke: train.py -> val.py -> detect.py on a few real images, in one process."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

import detect
import train
import val
from utils.engine import RESULTS_KEYS

MED_NAMES = ["AR", "MR", "PR", "TR"]


def _subset_yaml(tmp: Path, image_dir: Path, n: int, names, extra: dict | None = None) -> Path:
    """A dataset YAML whose train/val are .txt lists of the first n real images (labels found beside them)."""
    images = sorted(image_dir.glob("*.*"))[:n]
    listing = tmp / f"{image_dir.parent.name}_{n}.txt"
    listing.write_text("\n".join(str(p) for p in images) + "\n")
    cfg = {"train": str(listing), "val": str(listing), "names": names, **(extra or {})}
    path = tmp / "subset.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, med_root) -> Path:
    tmp = tmp_path_factory.mktemp("pipeline")
    data = _subset_yaml(tmp, med_root / "train" / "images", 8, MED_NAMES)
    opt = train.parse_opt([
        "--data", str(data), "--cfg", "models/yolov5n.yaml", "--weights", "", "--img", "160",
        "--epochs", "1", "--batch-size", "4", "--workers", "0", "--project", str(tmp / "runs"), "--name", "exp",
    ])
    result = train.main(opt)
    return Path(result["save_dir"])


def test_train_writes_yolov5_run_folder(trained_run: Path):
    for name in ("weights/last.pt", "weights/best.pt", "results.csv", "hyp.yaml", "opt.yaml", "results.png",
                 "labels.jpg", "train_batch0.jpg", "confusion_matrix.png", "PR_curve.png", "F1_curve.png",
                 "P_curve.png", "R_curve.png"):
        assert (trained_run / name).is_file(), f"missing {name}"
    header = (trained_run / "results.csv").read_text().splitlines()[0]
    assert [c.strip() for c in header.split(",")] == ["epoch", *RESULTS_KEYS]
    assert trained_run.name == "exp"


def test_checkpoint_is_plain_data(trained_run: Path):
    ckpt = torch.load(trained_run / "weights" / "best.pt", map_location="cpu", weights_only=True)
    assert ckpt["names"] == dict(enumerate(MED_NAMES))
    assert ckpt["model_yaml"]["nc"] == 4
    assert ckpt["optimizer"] is None, "finished runs strip the optimizer, as YOLOv5 does"


def test_val_reports_images_and_instances(trained_run: Path, med_root: Path, tmp_path: Path):
    data = _subset_yaml(tmp_path, med_root / "train" / "images", 8, MED_NAMES)
    opt = val.parse_opt(["--weights", str(trained_run / "weights" / "best.pt"), "--data", str(data), "--img", "160",
                         "--workers", "0", "--project", str(tmp_path / "val"), "--save-json", "--save-txt"])
    (result,) = val.main(opt)
    assert result.n_images == 8
    assert result.n_instances == 8, "one box per med image: the view line must not become a box"
    assert (tmp_path / "val" / "exp" / "predictions.json").is_file()


def test_detect_writes_annotated_images(trained_run: Path, med_root: Path, tmp_path: Path):
    images = sorted((med_root / "valid" / "images").glob("*.png"))[:2]
    src = tmp_path / "src"
    src.mkdir()
    for p in images:
        (src / p.name).symlink_to(p)
    opt = detect.parse_opt(["--weights", str(trained_run / "weights" / "best.pt"), "--source", str(src),
                            "--img", "160", "--conf-thres", "0.001", "--save-txt", "--save-csv",
                            "--project", str(tmp_path / "detect")])
    out = detect.main(opt)
    assert sorted(p.name for p in out.glob("*.png")) == sorted(p.name for p in images)
    assert (out / "predictions.csv").is_file()


def test_run_folder_increments(tmp_path: Path, med_root: Path):
    data = _subset_yaml(tmp_path, med_root / "train" / "images", 4, MED_NAMES)
    args = ["--data", str(data), "--cfg", "models/yolov5n.yaml", "--img", "64", "--epochs", "1", "--batch-size", "4",
            "--workers", "0", "--noval", "--noplots", "--noautoanchor", "--project", str(tmp_path / "runs")]
    first = train.main(train.parse_opt(args))["save_dir"]
    second = train.main(train.parse_opt(args))["save_dir"]
    assert Path(first).name == "exp" and Path(second).name == "exp2"


def test_resume_continues_from_last(tmp_path: Path, med_root: Path, monkeypatch):
    """A run that dies after epoch 1 of 3 resumes at epoch 2 from last.pt, in the same folder."""
    from utils import engine

    data = _subset_yaml(tmp_path, med_root / "train" / "images", 4, MED_NAMES)
    args = ["--data", str(data), "--cfg", "models/yolov5n.yaml", "--img", "64", "--epochs", "3", "--batch-size", "4",
            "--workers", "0", "--noplots", "--noautoanchor", "--project", str(tmp_path / "runs")]
    real_save = engine.save_checkpoint

    def save_then_crash(ckpt, path):
        real_save(ckpt, path)
        if Path(path).name == "last.pt" and ckpt["epoch"] == 1:
            raise KeyboardInterrupt("simulated crash after epoch 1")

    monkeypatch.setattr(engine, "save_checkpoint", save_then_crash)
    with pytest.raises(KeyboardInterrupt):
        train.main(train.parse_opt(args))
    monkeypatch.setattr(engine, "save_checkpoint", real_save)

    (save_dir,) = (tmp_path / "runs").iterdir()
    last = save_dir / "weights" / "last.pt"
    saved = torch.load(last, weights_only=True)
    assert saved["epoch"] == 1 and saved["optimizer"] is not None
    resumed = train.main(train.parse_opt(["--resume", str(last)]))
    assert resumed["save_dir"] == str(save_dir)
    rows = (save_dir / "results.csv").read_text().splitlines()[1:]
    assert [int(float(r.split(",")[0])) for r in rows] == [0, 1, 2]
    with pytest.raises(SystemExit, match="nothing to resume"):
        train.main(train.parse_opt(["--resume", str(last)]))
