"""What a run learns: detection classes and, when the dataset YAML declares cls_names, image views."""
from __future__ import annotations

import argparse
from dataclasses import dataclass

from utils.data.dataset_yaml import check_dataset
from utils.data.synthetic import ensure_synthetic

RESULTS_KEYS = (
    "train/box_loss", "train/obj_loss", "train/cls_loss",
    "metrics/precision", "metrics/recall", "metrics/mAP_0.5", "metrics/mAP_0.5:0.95",
    "val/box_loss", "val/obj_loss", "val/cls_loss",
    "x/lr0", "x/lr1", "x/lr2",
)
VIEW_RESULTS_KEYS = ("train/view_loss", "val/view_loss", "metrics/view_accuracy", "metrics/view_balanced_accuracy",
                     "x/w_det", "x/w_view")


@dataclass
class Task:
    """What the run learns: detection classes and, when the YAML has cls_names, image views."""

    nc: int
    names: dict
    view_names: list | None

    @property
    def n_views(self) -> int | None:
        return len(self.view_names) if self.view_names else None

    @property
    def task_names(self) -> tuple[str, ...]:
        return ("det", "view") if self.view_names else ("det",)

    @property
    def loss_names(self) -> tuple[str, ...]:
        return ("box_loss", "obj_loss", "cls_loss", "view_loss")[: 4 if self.view_names else 3]

    @property
    def results_keys(self) -> tuple[str, ...]:
        return RESULTS_KEYS + VIEW_RESULTS_KEYS if self.view_names else RESULTS_KEYS


def load_task(opt: argparse.Namespace) -> tuple[dict, Task]:
    """The dataset dict and the task it declares (single-cls folds every class into one)."""
    ensure_synthetic(opt.data)
    data = check_dataset(opt.data)
    nc = 1 if opt.single_cls else int(data["nc"])
    names = {0: "item"} if opt.single_cls and len(data["names"]) != 1 else data["names"]
    return data, Task(nc=nc, names=names, view_names=data.get("cls_names") or None)
