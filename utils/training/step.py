"""One training step, shared by every strategy: forward, task losses, balancer, backward, and every
`accumulate` iterations the optimizer step (clip, step, EMA, balancer update); a non-finite loss skips it.

Under AMP (utils/training/amp.py) the forward runs in autocast, the losses in float32, the backward on
the scaled loss; the optimizer step unscales before clipping and is skipped as a whole when a gradient
overflowed (counted in `amp_skipped_steps`, apart from non-finite losses): no EMA update, and the
balancer drops what it gathered for that step. With AMP off every one of these is the FP32 path.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from models.yolo import ModelOutputs
from models.yolo_cls import view_loss
from utils.logger import LOGGER
from utils.torch_utils import ModelEMA
from utils.training.amp import FP32, Amp, float32_outputs
from utils.training.balancers import Balancer
from utils.training.distributed import any_rank
from utils.training.history import TrainingHistory
from utils.training.interference import InterferenceMonitor
from utils.training.loss import ComputeLoss
from utils.training.optim import clip_gradients, zero_grad


def task_losses(outputs: ModelOutputs, targets: torch.Tensor, views: torch.Tensor, compute_loss: ComputeLoss,
                batch_size: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Per-task losses to balance, and the detached items for logging (box, obj, cls[, view]).

    YOLOv5's detection loss is a per-image mean multiplied by the batch size; the view
    cross-entropy is put on the same scale so fixed weights of 1.0 mean equal footing.
    """
    det_loss, det_items = compute_loss(outputs.det, targets)
    if outputs.view_logits is None:
        return {"det": det_loss}, det_items
    view = view_loss(outputs.view_logits, views)
    return {"det": det_loss, "view": view * batch_size}, torch.cat((det_items, view.detach().view(1)))


@dataclass
class StepParts:
    """What a step touches. `forward` is the model as the forward pass sees it (DDP-wrapped or not), `model`
    the model itself; `ema`, `history` and `monitor` exist on rank 0 only (None elsewhere)."""

    forward: torch.nn.Module
    model: torch.nn.Module
    optimizers: dict[str, torch.optim.Optimizer]
    balancer: Balancer
    compute_loss: ComputeLoss
    task_names: tuple[str, ...]
    loss_scale: int | None = None  # DDP: losses times the world size (DDP averages gradients, YOLOv5 keeps the sum)
    ema: ModelEMA | None = None
    history: TrainingHistory | None = None
    monitor: InterferenceMonitor | None = None
    amp: Amp = FP32


@dataclass
class StepState:
    """Carried from step to step (and in the checkpoint): gradient accumulation and skipped steps."""

    accumulate: int
    last_opt_step: int = -1
    skipped_steps: int = 0  # non-finite losses, and in FP32 non-finite gradients
    amp_skipped_steps: int = 0  # optimizer steps the AMP scaler skipped (a gradient overflowed in float16)


def train_step(parts: StepParts, state: StepState, imgs: torch.Tensor, targets: torch.Tensor, views: torch.Tensor,
               ni: int, epoch: int, batch_index: int) -> torch.Tensor | None:
    """One batch: its loss items (box, obj, cls[, view]) for logging, or None when a non-finite loss skipped it."""
    amp = parts.amp
    with amp.autocast():
        outputs = parts.forward(imgs)
    losses, loss_items = task_losses(float32_outputs(outputs), targets, views, parts.compute_loss, imgs.shape[0])
    if parts.loss_scale is not None:
        losses = {name: value * parts.loss_scale for name, value in losses.items()}
    loss = parts.balancer.combine(losses, amp=amp)
    if any_rank(not bool(torch.isfinite(loss))):  # all ranks skip together, or the others would hang
        state.skipped_steps += 1
        LOGGER.warning(f"WARNING ⚠️ non-finite loss at epoch {epoch} batch {batch_index} (this process: "
                       f"{loss.item()}), step skipped")
        zero_grad(parts.optimizers)
        return None
    if parts.monitor is not None and parts.monitor.due(ni):
        weights = parts.balancer.weights.to(loss.device)
        record = parts.monitor.measure({name: weights[k] * losses[name] for k, name in enumerate(parts.task_names)},
                                       ni, epoch, amp=amp)
        if record is not None:
            parts.history.log_interference(record)
    parts.balancer.backward(loss, losses, amp=amp)
    if ni - state.last_opt_step >= state.accumulate:
        if not optimizer_step(parts, ni, epoch):
            if amp.enabled:  # an overflow in float16: routine, the scaler lowers its scale
                state.amp_skipped_steps += 1
            else:  # FP32: a finite loss with a non-finite gradient, skipped like a non-finite loss
                state.skipped_steps += 1
                LOGGER.warning(f"WARNING ⚠️ non-finite gradient at epoch {epoch} batch {batch_index}, step skipped")
        state.last_opt_step = ni
    return loss_items


def optimizer_step(parts: StepParts, ni: int, epoch: int) -> bool:
    """Unscale (AMP), clip (per optimizer), step, clear gradients, update the EMA and let the balancer learn from
    the step; False when a gradient was not finite (an AMP overflow, or in FP32 a NaN/inf gradient) and the step
    was skipped as a whole (no parameter moves, no EMA update, balancer.skip_step)."""
    amp = parts.amp
    amp.unscale_(parts.optimizers.values())  # clipping reads true norms
    stepped = amp.step(parts.optimizers.values(), clip_gradients(parts.optimizers))
    zero_grad(parts.optimizers)
    if stepped:
        if parts.ema is not None:  # only rank 0 validates and saves the EMA
            parts.ema.update(parts.model)
        parts.balancer.step(amp)  # before amp.update(): amp.grad_scale is still this step's scale
        if parts.history is not None and parts.balancer.adaptive and parts.balancer.last_stats is not None:
            parts.history.log_step({"step": ni, "epoch": epoch, **parts.balancer.last_stats})
    else:
        parts.balancer.skip_step()
    amp.update()
    return stepped
