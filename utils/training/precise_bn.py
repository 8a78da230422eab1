"""Precise BatchNorm statistics (Wu & Johnson 2021): recompute them for the weights being evaluated.

BatchNorm's running statistics are a moving average (momentum 0.03) over batches that passed
through earlier weights; while the learning rate is high they can lag the weights. This module
recomputes them, so that benchmarks/precise_bn.py can tell how much of a run's validation
figures the statistics decide and how much the weights do. It is a diagnostic, not a training
option: as `--precise-bn` inside training it did not pay (README, "BatchNorm statistics").
"""
from __future__ import annotations

from typing import Callable, Iterable

import torch
import torch.distributed as dist
from torch import nn


def batchnorm_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, batches: Iterable[torch.Tensor],
                          prepare: Callable[[torch.Tensor], torch.Tensor]) -> int:
    """Replace every BatchNorm's running mean/var by their average over `batches` at the current weights.

    BatchNorm layers run in training mode (each batch normalised by its own statistics, as in
    training) and everything else in eval mode (no dropout); each batch counts equally
    (momentum None). Modes and momenta are restored. Returns the number of images seen.
    """
    norms = batchnorm_layers(model)
    if any(isinstance(m, nn.SyncBatchNorm) for m in norms) and dist.is_available() and dist.is_initialized():
        raise RuntimeError("recalibrating SyncBatchNorm on one rank would wait for the others")
    if not norms:
        return 0
    modes = {m: m.training for m in model.modules()}
    momenta = [m.momentum for m in norms]
    seen = 0
    try:
        model.eval()
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # cumulative average: every batch weighs the same
            m.train()
        for batch in batches:
            model(prepare(batch))
            seen += len(batch)
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        for m, training in modes.items():
            m.training = training
    return seen
