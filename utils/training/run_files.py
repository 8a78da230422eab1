"""A run folder and the files training writes into it: results.csv rows, history records, resume trims."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from utils.torch_utils import PARAM_GROUP_NAMES
from utils.training.balancers import Balancer
from utils.training.history import TrainingHistory
from utils.training.task import RESULTS_KEYS, Task

@dataclass
class RunFolder:
    """Where one training run writes: YOLOv5's runs/train/exp*/ layout."""

    save_dir: Path

    @property
    def weights(self) -> Path:
        return self.save_dir / "weights"

    @property
    def last(self) -> Path:
        return self.weights / "last.pt"

    @property
    def best(self) -> Path:
        return self.weights / "best.pt"

    @property
    def results_csv(self) -> Path:
        return self.save_dir / "results.csv"


def append_results_row(csv: Path, epoch: int, values: list[float], keys: tuple[str, ...] = RESULTS_KEYS) -> None:
    """One results.csv line in YOLOv5's layout: 20-character right-aligned fields, header on first write.

    YOLOv5's 14 columns come first, in order; a view task appends its columns after them.
    """
    keys = ("epoch", *keys)
    header = "" if csv.exists() else ("%20s," * len(keys) % keys).rstrip(",") + "\n"
    with open(csv, "a") as f:
        f.write(header + ("%20.5g," * len(keys) % (epoch, *values)).rstrip(",") + "\n")


def epoch_record(epoch: int, task: Task, train_losses: list, balancer: Balancer, lrs: dict, results: tuple,
                 view_val: dict | None, t_epoch: float, fit: float) -> dict:
    """One training_history.json entry: losses, task weights, lrs, metrics, time."""
    record = {
        "epoch": epoch,
        "time_s": round(time.time() - t_epoch, 3),
        "train_loss": dict(zip(task.loss_names, train_losses)),
        "task_weights": balancer.weight_dict(),
        "lr": {name: dict(zip(PARAM_GROUP_NAMES, group_lrs)) for name, group_lrs in lrs.items()},
        "val": dict(zip(("precision", "recall", "mAP_0.5", "mAP_0.5:0.95", "box_loss", "obj_loss", "cls_loss"), results)),
        "fitness": fit,
    }
    if view_val is not None:
        record["val"].update(view_val)
    return record


def drop_epochs_from(results_csv: Path, history: TrainingHistory, start_epoch: int) -> None:
    """Forget results.csv rows and history records of epochs >= start_epoch (they are re-run after a resume)."""
    if results_csv.exists():
        lines = results_csv.read_text().splitlines(keepends=True)
        kept = lines[:1] + [ln for ln in lines[1:] if ln.strip() and int(float(ln.split(",")[0])) < start_epoch]
        if len(kept) != len(lines):
            results_csv.write_text("".join(kept))
    history.data["epochs"] = [r for r in history.data["epochs"] if r.get("epoch", -1) < start_epoch]
    for key in ("steps", "interference"):
        history.data[key] = [r for r in history.data.get(key, []) if r.get("epoch", -1) < start_epoch]
