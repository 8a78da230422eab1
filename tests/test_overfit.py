"""Overfit 8 real med images: proves that loss, target assignment and decoding agree.

If any of the three disagreed (wrong grid offsets, anchors in the wrong units, a view
line read as a box), the model could not reach a high mAP50 even on its training images.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from models.yolo import DetectionModel
from tests.helpers import quicken_batchnorm
from utils.data.loaders import create_dataloader
from utils.evaluation.validation import evaluate
from utils.torch_utils import init_seeds, smart_optimizer
from utils.training.run_setup import load_hyp, scale_hyp_for_model
from utils.training.loss import ComputeLoss

IMGSZ = 256
MAX_STEPS = 250
CHECK_EVERY = 25  # evaluate this often and stop once mAP50 > 0.9 (the goal is the same; the wait is shorter)
NAMES = {0: "AR", 1: "MR", 2: "PR", 3: "TR"}


def _two_images_per_class(label_dir: Path, per_class: int = 2) -> list[str]:
    """First images (sorted) whose box is of each class, so every class is represented."""
    chosen: dict[int, list[str]] = {c: [] for c in range(4)}
    for label in sorted(label_dir.glob("*.txt")):
        cls = int(label.read_text().split()[0])
        if len(chosen[cls]) < per_class:
            chosen[cls].append(str(label.parent.parent / "images" / f"{label.stem}.png"))
        if all(len(v) == per_class for v in chosen.values()):
            break
    return [p for paths in chosen.values() for p in paths]


def test_overfit_eight_med_images(med_root: Path, tmp_path: Path):
    init_seeds(0)
    images = _two_images_per_class(med_root / "train" / "labels")
    listing = tmp_path / "eight.txt"
    listing.write_text("\n".join(images) + "\n")
    hyp = load_hyp("hyp.medical.yaml")
    loader, dataset = create_dataloader(str(listing), IMGSZ, 8, 32, hyp=hyp, augment=True, workers=0, shuffle=True,
                                        nc=4)
    assert dataset.n == 8 and sum(len(lb) for lb in dataset.labels) == 8
    eval_loader, _ = create_dataloader(str(listing), IMGSZ, 8, 32, rect=True, workers=0, nc=4)
    imgs, targets, *_ = next(iter(loader))

    model = DetectionModel("yolov5n.yaml", nc=4)
    compute_loss = ComputeLoss(model, scale_hyp_for_model(hyp, 3, 4, IMGSZ))
    optimizer = smart_optimizer(model, "AdamW", lr=0.003, momentum=0.9, decay=0.0)
    quicken_batchnorm(model)
    model.train()
    x = imgs.float() / 255
    losses = []
    for step in range(1, MAX_STEPS + 1):
        loss, _ = compute_loss(model(x).det, targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if step % CHECK_EVERY == 0 or step == MAX_STEPS:
            result = evaluate(model, eval_loader, names=NAMES, device=torch.device("cpu"), training=True)
            if result.map50 > 0.9:
                break
    print(f"goal checked after {step} steps")
    assert np.mean(losses[-10:]) < 0.5 * np.mean(losses[:10]), "the loss did not halve"

    assert result.n_instances == 8
    assert result.map50 > 0.9, f"mAP50 on the training images only reached {result.map50:.3f}"
