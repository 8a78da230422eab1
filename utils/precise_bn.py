"""Precise BatchNorm statistics (Wu & Johnson 2021): recompute them for the weights being validated.

BatchNorm's running statistics are a moving average (momentum 0.03) over batches that passed
through earlier weights. While the learning rate is high the weights move faster than that
average follows, and the eval-mode model normalises with stale statistics. Measured on the
patient split (view_only, yolov5n 320): at epochs 3-11 the validated view accuracy swung
between 0.11 and 0.59 while the same checkpoints, recalibrated on 480 training images, scored
0.65-0.87. `--precise-bn N` recomputes the statistics of the EMA model on the epoch's last N
training images before each validation, so validation, best.pt and the saved weights agree
with the weights. Off by default, as in YOLOv5.
"""
from __future__ import annotations

from collections import deque
from typing import Callable, Iterable, Iterator

import torch
import torch.distributed as dist
from torch import nn


class RecentBatches:
    """The last `max_images` training images of the epoch, as the loader gave them (uint8, no copy)."""

    def __init__(self, max_images: int) -> None:
        if max_images < 1:
            raise ValueError(f"RecentBatches needs max_images >= 1, got {max_images}")
        self.max_images = int(max_images)
        self._batches: deque[torch.Tensor] = deque()
        self.images = 0

    def add(self, batch: torch.Tensor) -> None:
        self._batches.append(batch)
        self.images += len(batch)
        while self.images - len(self._batches[0]) >= self.max_images:  # drop the oldest while enough remain
            self.images -= len(self._batches.popleft())

    def clear(self) -> None:
        self._batches.clear()
        self.images = 0

    def __iter__(self) -> Iterator[torch.Tensor]:
        return iter(self._batches)


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
        raise RuntimeError("precise BatchNorm on one rank cannot run SyncBatchNorm, which would wait for the others")
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
