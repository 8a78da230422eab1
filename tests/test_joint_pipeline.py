"""Joint detection + view classification end to end: train.py -> val.py -> detect.py with cls_names."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
import yaml

import detect
import train
import val
from utils.training.task import RESULTS_KEYS, VIEW_RESULTS_KEYS

MED_NAMES = ["AR", "MR", "PR", "TR"]
VIEWS = ["PSAX", "PLAX", "A4C"]


def _joint_yaml(tmp: Path, med_root: Path, n: int = 8) -> Path:
    images = sorted((med_root / "train" / "images").glob("*.png"))[:n]
    listing = tmp / "joint_list.txt"
    listing.write_text("\n".join(str(p) for p in images) + "\n")
    path = tmp / "joint.yaml"
    path.write_text(yaml.safe_dump({"train": str(listing), "val": str(listing), "names": MED_NAMES, "cls_names": VIEWS}))
    return path


@pytest.fixture(scope="module")
def joint_run(tmp_path_factory, med_root) -> tuple[Path, Path, str]:
    tmp = tmp_path_factory.mktemp("joint")
    data = _joint_yaml(tmp, med_root)
    import logging

    from utils.logger import LOGGER

    records: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())
    LOGGER.addHandler(handler)
    try:
        # hyp.scratch-low has mosaic on: the view task must switch it off with one warning
        result = train.main(train.parse_opt([
            "--data", str(data), "--cfg", "models/yolov5n.yaml", "--img", "128", "--epochs", "1", "--batch-size", "4",
            "--workers", "0", "--project", str(tmp / "runs"), "--fitness", "joint"]))
    finally:
        LOGGER.removeHandler(handler)
    return Path(result["save_dir"]), data, "\n".join(records)


def test_joint_results_csv_appends_view_columns(joint_run):
    save_dir, _, _ = joint_run
    header = (save_dir / "results.csv").read_text().splitlines()[0]
    assert [c.strip() for c in header.split(",")] == ["epoch", *RESULTS_KEYS, *VIEW_RESULTS_KEYS]


def test_mixing_augmentations_switched_off_once_with_a_warning(joint_run):
    save_dir, _, log = joint_run
    assert log.count("switched off") == 1 and "mosaic=1.0" in log
    assert yaml.safe_load((save_dir / "hyp.yaml").read_text())["mosaic"] == 0.0


def test_training_history_records_tasks(joint_run):
    save_dir, _, _ = joint_run
    history = json.loads((save_dir / "training_history.json").read_text())
    (epoch,) = history["epochs"]
    assert set(epoch["train_loss"]) == {"box_loss", "obj_loss", "cls_loss", "view_loss"}
    assert epoch["task_weights"] == {"det": 1.0, "view": 1.0}
    assert {"view_accuracy", "view_balanced_accuracy", "mAP_0.5", "mAP_0.5:0.95"} <= set(epoch["val"])
    assert set(epoch["lr"]["model"]) == {"bias", "norm_weight", "weight"} and epoch["time_s"] >= epoch["train_s"] > 0
    assert history["run"]["view_names"] == VIEWS
    assert history["run"]["torch_threads"] == torch.get_num_threads() and history["run"]["torch_version"] == torch.__version__


def test_joint_checkpoint_and_val_view_table(joint_run, tmp_path):
    save_dir, data, _ = joint_run
    ckpt = torch.load(save_dir / "weights" / "best.pt", weights_only=True)
    assert ckpt["view_names"] == VIEWS and ckpt["model_yaml"]["view_head"]["n_views"] == 3
    assert (save_dir / "view_confusion_matrix.png").is_file()
    opt = val.parse_opt(["--weights", str(save_dir / "weights" / "best.pt"), "--data", str(data), "--img", "128",
                         "--workers", "0", "--project", str(tmp_path / "val")])
    (result,) = val.main(opt)
    assert result.view is not None and result.view.n == 8
    assert 0.0 <= result.view.accuracy <= 1.0
    assert (tmp_path / "val" / "exp" / "view_confusion_matrix.png").is_file()


def test_detect_writes_view_to_txt_and_csv(joint_run, med_root, tmp_path):
    save_dir, _, _ = joint_run
    src = sorted((med_root / "valid" / "images").glob("*.png"))[0]
    opt = detect.parse_opt(["--weights", str(save_dir / "weights" / "best.pt"), "--source", str(src), "--img", "128",
                            "--conf-thres", "0.001", "--max-det", "2", "--save-txt", "--save-csv",
                            "--project", str(tmp_path / "detect")])
    out = detect.main(opt)
    label_lines = (out / "labels" / f"{src.stem}.txt").read_text().strip().splitlines()
    view_tokens = label_lines[-1].split()
    assert len(view_tokens) == 3 and sorted(view_tokens) == ["0", "0", "1"], "view line is one-hot like the dataset's"
    assert label_lines[-2] == "", "a blank line separates boxes from the view line, as in the dataset"
    with open(out / "predictions.csv") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["Image Name", "Prediction", "Confidence", "View", "View Confidence"]
    assert all(r[3] in VIEWS for r in rows[1:])
