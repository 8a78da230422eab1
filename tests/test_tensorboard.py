"""TensorBoard event files in the run folder, as YOLOv5 writes them: every results.csv column per epoch."""
from __future__ import annotations

import csv
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import train_dual
from tests.helpers import med_subset_yaml


def test_event_files_hold_every_results_column_of_every_epoch(tmp_path: Path, med_root: Path):
    data = med_subset_yaml(tmp_path, med_root, n=8)
    result = train_dual.main(train_dual.parse_opt([
        "--data", str(data), "--cfg", "models/yolov5n.yaml", "--img", "64", "--epochs", "2", "--batch-size", "4",
        "--workers", "0", "--noplots", "--noautoanchor", "--project", str(tmp_path / "runs")]))
    save_dir = Path(result["save_dir"])
    assert list(save_dir.glob("events.out.tfevents.*")), "no event file in the run folder"
    events = EventAccumulator(str(save_dir))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    with open(save_dir / "results.csv") as f:
        rows = [{k.strip(): float(v) for k, v in row.items()} for row in csv.DictReader(f)]
    columns = [c for c in rows[0] if c != "epoch"]
    assert {"train/box_loss", "metrics/mAP_0.5", "x/lr0", "x/w_det", "x/w_view", "metrics/view_accuracy"} <= set(columns)
    assert set(columns) <= tags
    assert {"x/classifier/lr0", "x/classifier/lr1", "x/classifier/lr2"} <= tags  # the second optimizer's groups
    for column in columns:
        points = events.Scalars(column)
        assert [p.step for p in points] == [0, 1], column
        for point, row in zip(points, rows):  # the same figures as results.csv (which rounds to 5 digits)
            assert abs(point.value - row[column]) <= 1e-4 * max(1.0, abs(row[column])), column
