"""Small helpers shared by the end-to-end tests."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

MED_NAMES = ["AR", "MR", "PR", "TR"]
MED_VIEWS = ["PSAX", "PLAX", "A4C"]


def med_subset_yaml(tmp: Path, med_root: Path, n: int = 8, with_views: bool = True, split: str = "train") -> Path:
    """A dataset YAML whose train and val are a .txt list of the first n images of a med split (labels beside them)."""
    images = sorted((med_root / split / "images").glob("*.png"))[:n]
    listing = tmp / f"med_{n}.txt"
    listing.write_text("\n".join(str(p) for p in images) + "\n")
    cfg = {"train": str(listing), "val": str(listing), "names": MED_NAMES}
    if with_views:
        cfg["cls_names"] = MED_VIEWS
    path = tmp / ("med_views.yaml" if with_views else "med_plain.yaml")
    path.write_text(yaml.safe_dump(cfg))
    return path


def quicken_batchnorm(model, momentum: float = 0.3) -> None:
    """Let BatchNorm's running statistics follow the batch within a few steps.

    The overfit tests train on one repeated batch and evaluate in eval mode; with YOLOv5's momentum
    (0.03) the running statistics lag the trained weights by a hundred steps or more, and the test
    would wait for the statistics, not for the learning it checks.
    """
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.momentum = momentum


@pytest.fixture
def one_torch_thread():
    """One torch thread for the test (import it into a test module, where it applies to every test): small
    forwards run faster on one thread, far faster when other jobs share the CPU, and results do not
    depend on the machine's core count."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
