"""Overfit 12 real med images with the joint and the dual model: view accuracy 1.0 and mAP50 > 0.9.

Proves the view head trains through the shared backbone together with detection, which
the original project never did (its classifier output was discarded), and that the dual
model's two networks both learn from one summed loss.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from models.yolo_cls import DualModel, JointModel, view_loss
from tests.helpers import quicken_batchnorm
from utils.data.loaders import create_dataloader
from utils.evaluation.validation import evaluate
from utils.torch_utils import init_seeds, smart_optimizer
from utils.training.run_setup import load_hyp, scale_hyp_for_model
from utils.training.loss import ComputeLoss

IMGSZ = 256
MAX_STEPS = {"joint": 400, "dual": 400}  # the dual model's classifier learns from scratch with no detection features
CHECK_EVERY = 25  # evaluate this often and stop once both goals hold (the goals are the same; the wait is shorter)
NAMES = {0: "AR", 1: "MR", 2: "PR", 3: "TR"}
VIEWS = ["PSAX", "PLAX", "A4C"]


def _four_images_per_view(label_dir: Path) -> list[str]:
    chosen: dict[int, list[str]] = {v: [] for v in range(3)}
    for label in sorted(label_dir.glob("*.txt")):
        last = label.read_text().strip().splitlines()[-1].split()
        if len(last) != 3:
            continue
        view = last.index("1")
        if len(chosen[view]) < 4:
            chosen[view].append(str(label.parent.parent / "images" / f"{label.stem}.png"))
        if all(len(v) == 4 for v in chosen.values()):
            break
    return [p for paths in chosen.values() for p in paths]


@pytest.mark.parametrize("kind", ["joint", "dual"])
def test_overfit_twelve_med_images(kind: str, med_root: Path, tmp_path: Path):
    init_seeds(0)
    listing = tmp_path / "twelve.txt"
    listing.write_text("\n".join(_four_images_per_view(med_root / "train" / "labels")) + "\n")
    hyp = load_hyp("hyp.medical.yaml")
    loader, dataset = create_dataloader(str(listing), IMGSZ, 12, 32, hyp=hyp, augment=True, workers=0, nc=4, n_views=3)
    assert sorted(dataset.views.tolist()) == [0] * 4 + [1] * 4 + [2] * 4
    eval_loader, _ = create_dataloader(str(listing), IMGSZ, 12, 32, rect=True, workers=0, nc=4, n_views=3)
    imgs, targets, views, *_ = next(iter(loader))

    if kind == "joint":
        model = JointModel("yolov5n.yaml", nc=4, n_views=3)
    else:
        model = DualModel("yolov5n.yaml", nc=4, n_views=3)  # the default (thin) classifier
    compute_loss = ComputeLoss(model, scale_hyp_for_model(hyp, 3, 4, IMGSZ))
    optimizer = smart_optimizer(model, "AdamW", lr=0.003, momentum=0.9, decay=0.0)
    quicken_batchnorm(model)
    model.train()
    x = imgs.float() / 255
    for step in range(1, MAX_STEPS[kind] + 1):
        outputs = model(x)
        det_loss, _ = compute_loss(outputs.det, targets)
        loss = det_loss + view_loss(outputs.view_logits, views) * x.shape[0]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % CHECK_EVERY == 0 or step == MAX_STEPS[kind]:
            result = evaluate(model, eval_loader, names=NAMES, device=torch.device("cpu"), training=True,
                              view_names=VIEWS)
            if result.view.accuracy == 1.0 and result.map50 > 0.9:
                break
    print(f"{kind}: goals checked after {step} steps")
    assert result.view.n == 12
    assert result.view.accuracy == 1.0, f"view accuracy on the training images only {result.view.accuracy:.3f}"
    assert result.map50 > 0.9, f"mAP50 on the training images only reached {result.map50:.3f}"
    assert np.isfinite(result.view_loss)
