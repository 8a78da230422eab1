"""YOLOv5's optimisation rules around the optimizer: warmup, gradient accumulation, clipping."""
from __future__ import annotations

import numpy as np
import torch

NOMINAL_BATCH = 64  # YOLOv5 accumulates gradients up to this batch size


def warmup(optimizers: dict[str, torch.optim.Optimizer], ni: int, warmup_iters: int, epoch: int, lf, hyp: dict,
           batch_size: int) -> int:
    """YOLOv5 warmup: bias lr falls from warmup_bias_lr, other lrs rise from 0, momentum rises; returns accumulate.

    A group may carry its own 'warmup_bias_lr' (an optimizer with another base lr scales it).
    """
    xi = [0, warmup_iters]
    accumulate = max(1, int(np.interp(ni, xi, [1, NOMINAL_BATCH / batch_size]).round()))
    for o in optimizers.values():
        for j, group in enumerate(o.param_groups):
            start = group.get("warmup_bias_lr", hyp["warmup_bias_lr"]) if j == 0 else 0.0  # group 0 holds the biases
            group["lr"] = float(np.interp(ni, xi, [start, group["initial_lr"] * lf(epoch)]))
            if "momentum" in group:
                group["momentum"] = float(np.interp(ni, xi, [hyp["warmup_momentum"], hyp["momentum"]]))
    return accumulate


def clip_gradients(optimizers: dict[str, torch.optim.Optimizer], max_norm: float = 10.0) -> list[torch.Tensor]:
    """Clip the gradient norm at max_norm (YOLOv5's rule) separately over each optimizer's parameters.

    With one optimizer this is YOLOv5's global clip. With two networks (dual backbones) one global
    norm would let the classifier's large gradient shrink the detector's step, coupling two networks
    that share nothing; clipping each network on its own keeps them independent. Returns the norms
    before clipping, one per optimizer.
    """
    norms = []
    for o in optimizers.values():
        params = [p for g in o.param_groups for p in g["params"]]
        norms.append(torch.nn.utils.clip_grad_norm_(params, max_norm=max_norm))
    return norms


def zero_grad(optimizers: dict[str, torch.optim.Optimizer]) -> None:
    for o in optimizers.values():
        o.zero_grad()
