"""One training step, shared by every strategy."""
from __future__ import annotations

import torch

from models.yolo import ModelOutputs
from models.yolo_cls import view_loss
from utils.training.loss import ComputeLoss

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
