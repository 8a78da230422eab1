"""A few real training steps of each strategy without the Trainer: the shared step on real med batches.

The AMP and CUDA-cleanliness tests drive `utils.training.step.train_step` directly (model, loss,
optimizers, EMA and balancer built as the engine builds them; gradnorm also measures interference
every 2 steps), which takes a second where a whole training run takes ten.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from models.yolo_cls import DualModel, build_model, last_shared_weight, shared_parameters
from tests.helpers import med_subset_yaml
from train_dual import dual_optimizers
from utils.data.loaders import create_dataloader
from utils.torch_utils import ModelEMA
from utils.training.amp import FP32, Amp
from utils.training.balancers import PCGrad, UncertaintyWeighting, fixed_weights_from_hyp
from utils.training.gradnorm import GradNorm
from utils.training.history import TrainingHistory
from utils.training.interference import InterferenceMonitor
from utils.training.loss import ComputeLoss
from utils.training.model_setup import make_optimizers
from utils.training.run_setup import load_hyp, scale_hyp_for_model
from utils.training.step import StepParts, StepState, train_step

STRATEGIES = ("fixed", "uncertainty", "pcgrad", "gradnorm", "dual")
TASKS = ("det", "view")
IMGSZ = 64


def med_loader(tmp: Path, med_root: Path, n: int = 8, batch_size: int = 4):
    """Validation-style loader (no augmentation) over the first n med train images at IMGSZ."""
    listing = med_subset_yaml(tmp, med_root, n=n).parent / f"med_{n}.txt"
    loader, _ = create_dataloader(str(listing), IMGSZ, batch_size, 32, hyp=load_hyp("hyp.medical.yaml"), rect=True,
                                  pad=0.5, workers=0, nc=4, n_views=3)
    return loader


def med_batches(tmp: Path, med_root: Path) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Two batches of four images as the engine hands them to the step: (float images, targets, views)."""
    listing = med_subset_yaml(tmp, med_root, n=8).parent / "med_8.txt"
    loader, _ = create_dataloader(str(listing), IMGSZ, 4, 32, hyp=load_hyp("hyp.medical.yaml"), workers=0, nc=4,
                                  n_views=3, shuffle=False)
    return [(imgs.float() / 255, targets, views) for imgs, targets, views, _, _ in loader]


def build_parts(strategy: str, amp: Amp = FP32, history_file: Path | None = None, seed: int = 0) -> StepParts:
    """The step's parts for one strategy, as the engine builds them (gradnorm also measures interference)."""
    torch.manual_seed(seed)
    hyp = load_hyp("hyp.medical.yaml")
    opt = argparse.Namespace(optimizer="SGD", cls_optimizer=None, cls_lr0=None)
    if strategy == "dual":
        model = DualModel("models/yolov5n.yaml", "models/yolov5n-cls-thin.yaml", nc=4, n_views=3)
        optimizers = dual_optimizers(model, opt, hyp)
    else:
        model = build_model("models/yolov5n.yaml", nc=4, n_views=3)
        optimizers = make_optimizers(model, opt, hyp)
    hyp = scale_hyp_for_model(hyp, model.detect.nl, 4, IMGSZ)
    if strategy == "uncertainty":
        balancer = UncertaintyWeighting(TASKS, lr=0.01)
    elif strategy == "pcgrad":
        balancer = PCGrad(TASKS, shared_parameters(model), list(model.parameters()),
                          fixed_weights_from_hyp(hyp, TASKS).weight_dict(), seed=seed)
    elif strategy == "gradnorm":
        balancer = GradNorm(TASKS, last_shared_weight(model))
    else:
        balancer = fixed_weights_from_hyp(hyp, TASKS)
    monitor = InterferenceMonitor(model, TASKS, every=2) if strategy == "gradnorm" else None
    history = TrainingHistory(history_file or Path("unwritten_history.json"))  # in memory unless log_epoch is called
    return StepParts(forward=model, model=model, optimizers=optimizers, balancer=balancer,
                     compute_loss=ComputeLoss(model, hyp), task_names=TASKS, ema=ModelEMA(model), history=history,
                     monitor=monitor, amp=amp)


def run_steps(parts: StepParts, batches: list, steps: int, state: StepState | None = None) -> list[torch.Tensor | None]:
    """`steps` iterations of the shared step (one optimizer step each); the loss items of each."""
    state = state or StepState(accumulate=1)
    return [train_step(parts, state, *batches[ni % len(batches)], ni=ni, epoch=0, batch_index=ni)
            for ni in range(steps)]
