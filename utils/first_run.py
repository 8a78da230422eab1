"""The closing lines of `make run`: where its outputs are, and the two figures that say it worked.

    python -m utils.first_run runs/train/first-run runs/val/first-run runs/detect/first-run

The figures are those of the epoch best.pt was saved at, as the training run validated it
(training_history.json); val.py, run on best.pt just before, prints the same split's full tables.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from utils.training.best_checkpoint import best_checkpoint_epoch

IMAGE_SUFFIXES = (".png", ".jpg")


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix in IMAGE_SUFFIXES) if folder.is_dir() else []


def summary(train_dir: Path, val_dir: Path, detect_dir: Path) -> list[str]:
    """A few lines: run folder, plots, annotated images, and best.pt's mAP50 and view accuracy."""
    history = json.loads((train_dir / "training_history.json").read_text())
    epochs = history["epochs"]
    best = best_checkpoint_epoch(epochs)
    record = next((r for r in epochs if r["epoch"] == best), epochs[-1])
    val, weights = record["val"], record["task_weights"]
    n_views = len(history["run"].get("view_names") or []) or 1
    lines = [
        f"Run folder:       {train_dir} (weights/best.pt from epoch {record['epoch']} of {len(epochs)}, "
        f"results.csv, training_history.json)",
        f"Plots:            {len(_images(train_dir))} in {train_dir}, {len(_images(val_dir))} in {val_dir}",
        f"Annotated images: {len(_images(detect_dir))} in {detect_dir} (boxes, and the view with its probability)",
        f"best.pt on val:   mAP50 {val['mAP_0.5']:.3f}, view accuracy {val.get('view_accuracy', float('nan')):.3f} "
        f"(chance {1 / n_views:.2f}), balanced {val.get('view_balanced_accuracy', float('nan')):.3f}",
        "GradNorm weights: " + ", ".join(f"{task} {w:.2f}" for task, w in weights.items()) + " at that epoch",
    ]
    return lines


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Print where a `make run` left its outputs and how well it did")
    p.add_argument("train_dir", type=Path)
    p.add_argument("val_dir", type=Path)
    p.add_argument("detect_dir", type=Path)
    opt = p.parse_args(argv)
    print("\n".join(["", "make run: done", *summary(opt.train_dir, opt.val_dir, opt.detect_dir)]))


if __name__ == "__main__":
    main()
