"""python -m utils.audit end to end on hand-made datasets: each planted problem is found, a clean dataset
yields no issue, the dataset folder is never written, --write-clean leaves out exactly the flagged files,
and bad input stops with one line naming the flag."""
from __future__ import annotations

import csv
import runpy
from pathlib import Path

import pytest
import yaml

from tests.audit_data import EXPECTED, clean_dataset, planted_dataset, snapshot
from tests.helpers import med_subset_yaml
from utils.audit.cli import main


def _rows(out: Path) -> list[dict]:
    with open(out / "issues.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _found(rows: list[dict]) -> set[tuple[str, str]]:
    folder = {"train": "train", "val": "valid"}
    return {(r["kind"], r["split"] + "/" + Path(r["file"]).name) for r in rows
            if Path(r["file"]).parts[0] == folder[r["split"]]}


def test_clean_dataset_yields_no_issue(tmp_path):
    data = clean_dataset(tmp_path / "clean")
    out = main(["--data", str(data), "--project", str(tmp_path / "runs"), "--name", "a"])
    assert _rows(out) == []
    report = (out / "report.md").read_text()
    assert "No issue found." in report and "No conflict." in report
    assert "val: 0 of 1 patients (0 of 3 images) also in train" in report


def test_every_planted_problem_is_found_and_nothing_else(tmp_path):
    root = tmp_path / "planted"
    data = planted_dataset(root)
    before = snapshot(root)
    out = main(["--data", str(data), "--project", str(tmp_path / "runs"), "--name", "a", "--write-clean"])
    assert snapshot(root) == before, "the audit wrote into the dataset folder"
    rows = _rows(out)
    assert _found(rows) == EXPECTED
    by_key = {(r["kind"], Path(r["file"]).name): r for r in rows}
    flip = by_key[("view_conflict", "P4-v1.mp4-0.png")]
    assert (flip["given"], flip["suggested"]) == ("PLAX", "PSAX") and "byte-identical to train/P1" in flip["evidence"]
    moved = by_key[("box_conflict", "P5-v1.mp4-1.png")]
    assert moved["given"] == "MR@0.70,0.70,0.20,0.20" and moved["suggested"] == "MR@0.30,0.30,0.20,0.20"
    assert float(moved["score"]) == pytest.approx(1.0)  # the boxes do not overlap: 1 - IoU = 1
    leak = by_key[("group_leak", "P7-v2.mp4-0.png")]
    assert leak["evidence"] == "patient P7: 2 in train, 1 in val"
    assert float(leak["score"]) == pytest.approx(2 / 3, abs=1e-4)
    mixed = by_key[("mixed_view_group", "P2-v1.mp4-1.png")]
    assert (mixed["given"], mixed["suggested"]) == ("PLAX", "PSAX")

    clean_yaml = out / "clean" / "planted_clean.yaml"
    config = yaml.safe_load(clean_yaml.read_text())
    kept = {s: [Path(p).name for p in Path(config[s]).read_text().split()] for s in ("train", "val")}
    dropped = {"P1-v1.mp4-0.png", "P2-v1.mp4-0.png", "P2-v1.mp4-1.png", "P5-v1.mp4-0.png", "P5-v1.mp4-1.png",
               "P6-v1.mp4-0.png", "P6-v1.mp4-1.png", "P4-v1.mp4-0.png"}
    assert not dropped & set(kept["train"] + kept["val"])
    assert "P7-v1.mp4-0.png" in kept["train"] and "P7-v2.mp4-0.png" in kept["val"]  # leaks are reported, not dropped
    assert len(kept["train"]) == 6 + 2 and len(kept["val"]) == 3 + 1
    assert config["cls_names"] == ["PSAX", "PLAX", "A4C"] and "path" not in config
    report = (out / "report.md").read_text()
    assert "8 records left out" in report and "`train/images/P5-v1.mp4-1.png` | train | box_conflict" in report
    for picture in ("sheet_conflicts.jpg", "video_views.png", "agreement_val.png"):
        assert (out / picture).stat().st_size > 0


def test_detection_only_dataset_has_no_view_parts(tmp_path):
    data = planted_dataset(tmp_path / "planted")
    config = yaml.safe_load(data.read_text())
    del config["cls_names"]
    data.write_text(yaml.safe_dump(config))
    out = main(["--data", str(data), "--project", str(tmp_path / "runs"), "--name", "a"])
    kinds = {kind for kind, _ in _found(_rows(out))}
    assert kinds == {"exact_duplicate_across", "near_duplicate_within", "box_conflict", "class_conflict", "group_leak"}
    report = (out / "report.md").read_text()
    assert report.count("No view task (no `cls_names`).") == 2 and not (out / "video_views.png").exists()


def test_run_folders_increment(tmp_path):
    data = clean_dataset(tmp_path / "clean")
    first = main(["--data", str(data), "--project", str(tmp_path / "runs")])
    second = main(["--data", str(data), "--project", str(tmp_path / "runs")])
    assert (first.name, second.name) == ("exp", "exp2")


@pytest.mark.parametrize("flags, message", [
    (["--near-thres", "1.5"], "ERROR: --near-thres 1.5: expected a number in [0, 1]"),
    (["--folds", "1"], "ERROR: --folds 1: expected a number >= 2"),
    (["--drop", "typo"], "ERROR: --drop typo: unknown kind"),
    (["--by", "patient", "--group-regex", "^(x)"], "ERROR: --group-regex '^(x)' does not match the file name"),
    (["--", "--epochs", "1"], "ERROR: flags after '--' (--epochs 1) go to the trainer, and only --folds trains"),
    (["--folds", "2", "--", "--data", "x.yaml"], "ERROR: the audit sets --data itself for each fold"),
    (["--reuse-folds"], "ERROR: --reuse-folds needs --folds K"),
])
def test_bad_input_stops_with_one_line(tmp_path, capsys, flags, message):
    data = clean_dataset(tmp_path / "clean")
    with pytest.raises(SystemExit) as stop:
        main(["--data", str(data), "--project", str(tmp_path / "runs"), *flags])
    assert str(stop.value).startswith(message)


def test_refuses_to_write_inside_the_dataset(tmp_path):
    data = clean_dataset(tmp_path / "clean")
    with pytest.raises(SystemExit) as stop:
        main(["--data", str(data), "--project", str(tmp_path / "clean" / "train")])
    assert str(stop.value).startswith("ERROR: --project/--name ") and "is inside the dataset folder" in str(stop.value)


def test_missing_yaml_names_the_file(tmp_path):
    with pytest.raises(SystemExit) as stop:
        main(["--data", str(tmp_path / "nope.yaml"), "--project", str(tmp_path / "runs")])
    assert str(stop.value).startswith(f"ERROR: dataset YAML {tmp_path / 'nope.yaml'} not found")


def test_split_against_itself_every_frame_is_its_own_neighbour(tmp_path, med_root):
    """train == val (six real frames): the copy scores 1.0 and each val file is the train file itself."""
    data = med_subset_yaml(tmp_path, med_root, n=6)
    out = main(["--data", str(data), "--project", str(tmp_path / "runs"), "--size", "16", "12"])
    rows = _rows(out)
    assert sorted(r["kind"] for r in rows) == ["exact_duplicate_across"] * 6 + ["group_leak"] * 6
    exact = [r for r in rows if r["kind"] == "exact_duplicate_across"]
    assert all(r["split"] == "val" and r["evidence"] == "the same file is also listed in train" for r in exact)
    report = (out / "report.md").read_text()
    assert "| val | 6 | 1.000 | " in report and "6 of the train/val pairs are one file listed by both splits" in report
    nearest = list(csv.DictReader(open(out / "nearest_train_val.csv")))
    assert len(nearest) == 6 and all(r["file"] == r["nearest_train_file"] and r["agree"] == "1" for r in nearest)


def test_med_ceiling_and_cross_split_conflicts_reappear(tmp_path, med_root):
    """The shipped med split (1,225 frames, ~15-30 s): the figures of docs/results.md's view-label ceiling."""
    out = main(["--data", "data/med.yaml", "--project", str(tmp_path / "runs")])
    report = (out / "report.md").read_text()
    assert "| val | 183 | 0.667 | 0.601 | 0.661 | 0.426 (PLAX) |" in report
    assert "| >=0.99 | 18 | 12 | 0.667 |" in report
    assert ("- `train/amZlwqpnacKV-unnamed_1_1.mp4-61.png` == `val/amZlwqpnacKV-unnamed_1_1.mp4-62.png`: PLAX vs PSAX"
            in report)
    assert "val: 33 of 34 patients (182 of 183 images) also in train" in report
    assert "77 of the 80 val videos are also in train; 22 of them have a different majority view" in report


def test_the_old_benchmark_runs_the_audit(tmp_path, monkeypatch):
    data = clean_dataset(tmp_path / "clean")
    monkeypatch.setattr("sys.argv", ["view_neighbours.py", "--data", str(data), "--project", str(tmp_path / "r")])
    runpy.run_path(str(Path(__file__).resolve().parents[1] / "benchmarks" / "view_neighbours.py"), run_name="__main__")
    assert (tmp_path / "r" / "exp" / "report.md").is_file()


def test_unreadable_image_and_rejected_label_are_reported(tmp_path):
    root = tmp_path / "clean"
    data = clean_dataset(root)
    (root / "train" / "images" / "D-v1.mp4-0.png").write_bytes(b"not a png")
    (root / "train" / "labels" / "D-v1.mp4-0.txt").write_text("3 0.5 0.5 0.3 0.3\n")
    bad_label = root / "valid" / "labels" / "C-v1.mp4-0.txt"
    bad_label.write_text("3 0.5 -0.5 0.3 0.3\n")  # a negative coordinate: the loader rejects the file
    rows = _rows(main(["--data", str(data), "--project", str(tmp_path / "runs")]))
    assert _found(rows) == {("unreadable_image", "train/D-v1.mp4-0.png"), ("corrupt_label", "val/C-v1.mp4-0.png")}
    (corrupt,) = [r for r in rows if r["kind"] == "corrupt_label"]
    assert str(bad_label) in corrupt["evidence"] and "negative coordinate -0.5" in corrupt["evidence"]


def test_coco128_detection_only(tmp_path, coco128_root):
    out = main(["--data", "data/coco128.yaml", "--project", str(tmp_path / "runs")])
    rows = _rows(out)
    assert len(rows) == 128 and {r["kind"] for r in rows} == {"exact_duplicate_across"}
    report = (out / "report.md").read_text()
    assert "128 of the train/val pairs are one file listed by both splits" in report
    assert report.count("No view task (no `cls_names`).") == 2
    assert "Skipped: --by patient: file name 000000000009.jpg" in report
