"""Side-by-side per-epoch metrics of several training runs, as a markdown table.

    python benchmarks/summarize_runs.py runs/records/joint_fixed runs/records/detection_only

Reads each run's results.csv (YOLOv5's columns, plus the view columns of joint runs) and
training_history.json (epoch times) and prints one row per epoch.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd


def load_run(run_dir: Path) -> pd.DataFrame:
    frame = pd.read_csv(run_dir / "results.csv", skipinitialspace=True)
    frame.columns = [c.strip() for c in frame.columns]
    history = run_dir / "training_history.json"
    if history.is_file():
        times = {r["epoch"]: r["time_s"] for r in json.loads(history.read_text())["epochs"]}
        frame["time_s"] = frame["epoch"].map(times)
    return frame


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", type=Path)
    args = p.parse_args()
    frames = {run.name: load_run(run) for run in args.runs}
    columns = [("metrics/mAP_0.5", "mAP50"), ("metrics/mAP_0.5:0.95", "mAP50-95"),
               ("metrics/view_accuracy", "view acc"), ("metrics/view_balanced_accuracy", "bal acc")]
    header = ["epoch"]
    for name, frame in frames.items():
        header += [f"{name} {label}" for key, label in columns if key in frame]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    epochs = sorted(set().union(*(set(f["epoch"].astype(int)) for f in frames.values())))
    for epoch in epochs:
        row = [str(epoch)]
        for frame in frames.values():
            match = frame[frame["epoch"] == epoch]
            for key, _ in columns:
                if key in frame:
                    row.append(f"{match[key].iloc[0]:.3f}" if len(match) else "")
        print("| " + " | ".join(row) + " |")
    for name, frame in frames.items():
        if "time_s" in frame:
            print(f"\n{name}: {len(frame)} epochs, median {frame['time_s'].median():.0f} s per epoch (train + val)")


if __name__ == "__main__":
    main()
