"""training_history.json: one record per epoch (losses, task weights, lrs, metrics, time).

Rewritten atomically after every epoch so a crash leaves the last complete version and a
resumed run appends to it. JSON rather than CSV because records nest (per-task weights,
per-class metrics) and later balancers add per-step entries.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from utils.files import write_json_atomic


class TrainingHistory:
    """Accumulates epoch records (and optional per-step records) and keeps the file in sync."""

    def __init__(self, path: str | Path, run_info: dict | None = None) -> None:
        self.path = Path(path)
        self.data: dict[str, Any] = {"run": run_info or {}, "epochs": [], "steps": [], "interference": []}
        if self.path.is_file():  # a resumed run continues the same history
            try:
                loaded = json.loads(self.path.read_text())
                self.data["epochs"] = loaded.get("epochs", [])
                self.data["steps"] = loaded.get("steps", [])
                self.data["interference"] = loaded.get("interference", [])
                self.data["run"] = {**loaded.get("run", {}), **self.data["run"]}
            except (json.JSONDecodeError, OSError):
                pass  # an unreadable history is replaced, never fatal

    def log_epoch(self, record: dict) -> None:
        epoch = record.get("epoch")
        self.data["epochs"] = [r for r in self.data["epochs"] if r.get("epoch") != epoch] + [record]
        self.save()

    def elapsed_before(self, epoch: int) -> float:
        """elapsed_s of the last epoch recorded before `epoch`: the training time a resumed run already spent."""
        kept = [r for r in self.data["epochs"] if r.get("epoch", -1) < epoch and "elapsed_s" in r]
        return float(kept[-1]["elapsed_s"]) if kept else 0.0

    def log_step(self, record: dict) -> None:
        """Kept in memory; written with the next epoch record."""
        self.data["steps"].append(record)

    def log_interference(self, record: dict) -> None:
        """A gradient-interference measurement (utils/training/interference.py); written with the next epoch record."""
        self.data["interference"].append(record)

    def save(self) -> None:
        write_json_atomic(self.path, self.data, indent=1, default=float)
