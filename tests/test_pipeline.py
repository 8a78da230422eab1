"""End-to-end smoke: train.py -> val.py -> detect.py on a few real images, in one process."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

import detect
import train
import val
from utils.paths import ROOT
from utils.training.task import RESULTS_KEYS

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
    from utils.training import engine

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
    elapsed = [r["elapsed_s"] for r in json.loads((save_dir / "training_history.json").read_text())["epochs"]]
    assert elapsed == sorted(elapsed) and elapsed[2] > elapsed[1] + 0.01, "elapsed_s runs on after the resume"
    with pytest.raises(SystemExit, match="nothing to resume"):
        train.main(train.parse_opt(["--resume", str(last)]))


def test_val_on_med_valid_split_counts_one_box_per_image(trained_run: Path):
    """The view line of every med label must be skipped: 183 images, 183 instances (not 366)."""
    opt = val.parse_opt(["--weights", str(trained_run / "weights" / "best.pt"), "--data", "data/med.yaml",
                         "--img", "160", "--workers", "0", "--project", str(trained_run / "val"), "--task", "speed"])
    (result,) = val.main(opt)
    assert (result.n_images, result.n_instances) == (183, 183)


def test_training_survives_corrupt_samples(tmp_path: Path, med_root: Path, caplog):
    """A zero-byte image, an undecodable image and a bad label row are skipped and reported; training goes on."""
    import shutil

    images, labels = tmp_path / "ds" / "images", tmp_path / "ds" / "labels"
    images.mkdir(parents=True)
    labels.mkdir(parents=True)
    for src in sorted((med_root / "train" / "images").glob("*.png"))[:4]:
        shutil.copy(src, images / src.name)
        shutil.copy(med_root / "train" / "labels" / f"{src.stem}.txt", labels / f"{src.stem}.txt")
    (images / "zero_bytes.png").write_bytes(b"")
    (images / "not_an_image.png").write_bytes(b"this is text, not a PNG")
    good = sorted(images.glob("*-*.png"))[0]
    shutil.copy(good, images / "bad_label.png")
    (labels / "bad_label.txt").write_text("0 0.5 0.5 0.2\n")
    data = tmp_path / "ds.yaml"
    data.write_text(yaml.safe_dump({"path": str(tmp_path / "ds"), "train": "images", "val": "images", "names": MED_NAMES}))
    args = ["--data", str(data), "--cfg", "models/yolov5n.yaml", "--img", "64", "--epochs", "1", "--batch-size", "4",
            "--workers", "0", "--noplots", "--noautoanchor", "--project", str(tmp_path / "runs")]
    with caplog.at_level("INFO", logger="yolomed"):
        result = train.main(train.parse_opt(args))
    text = caplog.text
    for name in ("zero_bytes.png", "not_an_image.png", "bad_label"):
        assert f"{name}" in text and "ignoring corrupt image/label" in text
    assert "4 images, 0 backgrounds, 3 corrupt" in text
    assert (Path(result["save_dir"]) / "weights" / "last.pt").is_file()


@pytest.mark.parametrize("content, message", [
    ({"val": "images", "names": ["a"]}, "train"),
    ({"train": "images", "val": "images"}, "names"),
    ({"train": "does/not/exist", "val": "images", "names": ["a"]}, "does/not/exist"),
])
def test_bad_dataset_yaml_stops_with_one_sentence(tmp_path: Path, content: dict, message: str, capsys):
    (tmp_path / "images").mkdir()
    data = tmp_path / "bad.yaml"
    data.write_text(yaml.safe_dump({"path": str(tmp_path), **content}))
    args = ["--data", str(data), "--cfg", "models/yolov5n.yaml", "--img", "64", "--epochs", "1",
            "--project", str(tmp_path / "runs")]
    with pytest.raises(SystemExit) as exit_info:
        train.main(train.parse_opt(args))
    assert message in str(exit_info.value) and "bad.yaml" in str(exit_info.value)


def test_first_run_default_needs_no_download(tmp_path: Path):
    """With no --data, training uses the synthetic dataset the code generates itself: both tasks, offline."""
    from utils.data import synthetic

    cfg = yaml.safe_load((ROOT / "data" / "synthetic.yaml").read_text())
    cfg.update(n_train=8, n_val=4, path=str(tmp_path / "synth"))
    synthetic_yaml = tmp_path / "synthetic.yaml"
    synthetic_yaml.write_text(yaml.safe_dump(cfg))
    opt = train.parse_opt(["--cfg", "models/yolov5n.yaml", "--img", "64", "--epochs", "1", "--batch-size", "4",
                           "--workers", "0", "--noplots", "--noautoanchor", "--project", str(tmp_path / "runs")])
    assert Path(opt.data).name == "synthetic.yaml"
    opt.data = str(synthetic_yaml)
    result = train.main(opt)
    assert len(list((tmp_path / "synth" / "images" / "train").glob("*.png"))) == 8
    assert synthetic.SHAPE_NAMES == ("square", "disc", "triangle")
    header = (Path(result["save_dir"]) / "results.csv").read_text().splitlines()[0]
    assert "metrics/view_accuracy" in header, "the default data trains the view task too"


def test_detection_only_yaml_ignores_the_synthetic_view_line(tmp_path: Path):
    """The same files without cls_names train plain detection: the view line is never read as a box."""
    synthetic_yaml = tmp_path / "synthetic.yaml"
    synthetic_yaml.write_text(yaml.safe_dump({"synthetic": True, "n_train": 8, "n_val": 4, "path": str(tmp_path / "synth"),
                                              "train": "images/train", "val": "images/val",
                                              "names": {0: "square", 1: "disc", 2: "triangle"}}))
    result = train.main(train.parse_opt([
        "--data", str(synthetic_yaml), "--cfg", "models/yolov5n.yaml", "--img", "64", "--epochs", "1",
        "--batch-size", "4", "--workers", "0", "--noplots", "--noautoanchor", "--project", str(tmp_path / "runs")]))
    header = (Path(result["save_dir"]) / "results.csv").read_text().splitlines()[0]
    assert "view" not in header
