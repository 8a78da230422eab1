"""YOLOv5 detection loss: assign labels to anchors and grid cells, then CIoU box, objectness and class BCE."""
from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from utils.boxes import bbox_iou

# Cell shifts (dx, dy) tried for every matched label: its own cell, then left, up, right, down.
_CELL_SHIFTS = ((0, 0), (-1, 0), (0, -1), (1, 0), (0, 1))
_NEIGHBOUR_MARGIN = 0.5  # a neighbour is used when the centre lies within half a cell of the shared edge


def smooth_bce(eps: float = 0.1) -> tuple[float, float]:
    """Positive and negative BCE targets under label smoothing `eps` (1 - eps/2, eps/2)."""
    return 1.0 - 0.5 * eps, 0.5 * eps


class WeightedBCE(nn.Module):
    """BCE-with-logits whose pos_weight follows the input's device, so the loss survives `model.to()`."""

    def __init__(self, pos_weight: float = 1.0, reduction: str = "mean"):
        super().__init__()
        self.pos_weight = float(pos_weight)
        self.reduction = reduction

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        pos_weight = logits.new_tensor([self.pos_weight])
        return F.binary_cross_entropy_with_logits(logits, target, pos_weight=pos_weight, reduction=self.reduction)


class FocalLoss(nn.Module):
    """Focal loss (Lin et al. 2017) on top of a pos-weighted BCE: down-weights easy examples by (1 - p_t)^gamma."""

    def __init__(self, pos_weight: float = 1.0, gamma: float = 1.5, alpha: float = 0.25, reduction: str = "mean"):
        super().__init__()
        self.bce = WeightedBCE(pos_weight, reduction="none")
        self.gamma = gamma
        self.alpha = alpha
        self.reduction = reduction

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        loss = self.bce(logits, target)
        prob = logits.sigmoid()
        prob_of_truth = target * prob + (1.0 - target) * (1.0 - prob)
        alpha_weight = target * self.alpha + (1.0 - target) * (1.0 - self.alpha)
        loss = loss * alpha_weight * (1.0 - prob_of_truth) ** self.gamma
        if self.reduction == "mean":
            return loss.mean()
        if self.reduction == "sum":
            return loss.sum()
        return loss


def _make_bce(pos_weight: float, focal_gamma: float) -> nn.Module:
    return FocalLoss(pos_weight, gamma=focal_gamma) if focal_gamma > 0 else WeightedBCE(pos_weight)


def _objectness_balance(nl: int) -> list[float]:
    """Per-level objectness weights: small-stride maps have many more empty cells, so they weigh more."""
    weights = [4.0, 1.0, 0.4] if nl == 3 else [4.0, 1.0, 0.25, 0.06, 0.02]
    return (weights + [weights[-1]] * nl)[:nl]


def _describe(obj: Any) -> str:
    """Short human description of whatever was passed as `preds`, for error messages."""
    if isinstance(obj, torch.Tensor):
        return f"a tensor of shape {list(obj.shape)}"
    if isinstance(obj, (list, tuple)) and not hasattr(obj, "_fields"):
        return f"a {type(obj).__name__} of {len(obj)} items"
    return f"a {type(obj).__name__}"


class ComputeLoss:
    """YOLOv5 detection loss over raw Detect maps.

    Returns (total, items): total = (lbox + lobj + lcls) * batch_size, items = detached (lbox, lobj, lcls),
    each already multiplied by its hyp gain. The gains are used as given: the TRAINER scales them to the
    model and image size before building this loss (hyp['box'] *= 3/nl; hyp['cls'] *= nc/80 * 3/nl;
    hyp['obj'] *= (imgsz/640)**2 * 3/nl), exactly once.
    """

    def __init__(self, model: nn.Module, hyp: dict, label_smoothing: float = 0.0):
        core = model.module if hasattr(model, "module") else model
        self.detect = core.detect
        self.nc: int = int(self.detect.nc)
        self.nl: int = int(self.detect.nl)
        self.na: int = int(self.detect.na)
        self.no: int = int(self.detect.no)
        self.hyp = hyp
        self.anchor_t = float(hyp.get("anchor_t", 4.0))
        self.gr = 1.0  # objectness target = gr * IoU + (1 - gr)
        self.balance = _objectness_balance(self.nl)
        self.class_positive, self.class_negative = smooth_bce(label_smoothing)
        focal_gamma = float(hyp.get("fl_gamma", 0.0))
        self.cls_loss = _make_bce(hyp.get("cls_pw", 1.0), focal_gamma)
        self.obj_loss = _make_bce(hyp.get("obj_pw", 1.0), focal_gamma)

    @property
    def anchors(self) -> torch.Tensor:
        """Anchors [nl, na, 2] in grid units, read live so AutoAnchor updates and .to(device) are seen."""
        return self.detect.anchors

    def _check_inputs(self, preds: Any, targets: Any) -> None:
        expected = (
            f"ComputeLoss expects a list of {self.nl} raw detection maps shaped "
            f"[B, {self.na}, ny, nx, {self.no}]"
        )
        if hasattr(preds, "det") and not isinstance(preds, torch.Tensor):
            raise ValueError(f"{expected}; got {_describe(preds)} (pass outputs.det, not the whole model output)")
        if not isinstance(preds, (list, tuple)):
            hint = " (decoded predictions? the loss needs the raw training-mode maps)" if (
                isinstance(preds, torch.Tensor) and preds.ndim == 3) else ""
            raise ValueError(f"{expected}; got {_describe(preds)}{hint}")
        if len(preds) != self.nl:
            raise ValueError(f"{expected}; got {_describe(preds)}")
        for level, pred in enumerate(preds):
            if not isinstance(pred, torch.Tensor):
                raise ValueError(f"{expected}; got {_describe(preds)} whose item {level} is {_describe(pred)}")
            if pred.ndim != 5 or pred.shape[1] != self.na or pred.shape[-1] != self.no:
                raise ValueError(f"{expected}; got map {level} of shape {list(pred.shape)}")
            if pred.shape[0] != preds[0].shape[0]:
                raise ValueError(f"{expected}; got maps with different batch sizes {[p.shape[0] for p in preds]}")
        if not isinstance(targets, torch.Tensor) or targets.ndim != 2 or targets.shape[1] != 6:
            got = _describe(targets)
            raise ValueError(f"ComputeLoss expects targets shaped [N, 6] (image, class, cx, cy, w, h); got {got}")

    def __call__(self, preds: Sequence[torch.Tensor], targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self._check_inputs(preds, targets)
        targets = targets.to(preds[0].device)
        zero = preds[0].new_zeros(())
        lbox, lobj, lcls = zero.clone(), zero.clone(), zero.clone()
        tcls, tbox, indices, anchors = self.build_targets(preds, targets)

        for level, pred in enumerate(preds):
            img, anchor, gj, gi = indices[level]
            obj_target = torch.zeros(pred.shape[:4], dtype=pred.dtype, device=pred.device)
            n_matched = img.shape[0]
            if n_matched:
                matched = pred[img, anchor, gj, gi]  # [n, no]
                pred_xy = matched[:, :2].sigmoid() * 2.0 - 0.5
                pred_wh = (matched[:, 2:4].sigmoid() * 2.0) ** 2 * anchors[level]
                pred_box = torch.cat((pred_xy, pred_wh), 1)
                iou = bbox_iou(pred_box, tbox[level], CIoU=True).reshape(-1)
                lbox = lbox + (1.0 - iou).mean()

                # Objectness target: IoU at matched cells; where several labels share a cell the highest wins.
                iou_target = (iou.detach().clamp(0) * self.gr + (1.0 - self.gr)).to(obj_target.dtype)
                flat_index = ((img * self.na + anchor) * pred.shape[2] + gj) * pred.shape[3] + gi
                obj_target.view(-1).scatter_reduce_(0, flat_index, iou_target, reduce="amax", include_self=True)

                if self.nc > 1:
                    class_target = torch.full_like(matched[:, 5:], self.class_negative)
                    class_target[torch.arange(n_matched, device=pred.device), tcls[level]] = self.class_positive
                    lcls = lcls + self.cls_loss(matched[:, 5:], class_target)

            lobj = lobj + self.obj_loss(pred[..., 4], obj_target) * self.balance[level]

        lbox = lbox * self.hyp["box"]
        lobj = lobj * self.hyp["obj"]
        lcls = lcls * self.hyp["cls"]
        batch_size = preds[0].shape[0]
        return (lbox + lobj + lcls) * batch_size, torch.stack((lbox, lobj, lcls)).detach()

    def build_targets(
        self, preds: Sequence[torch.Tensor], targets: torch.Tensor
    ) -> tuple[list[torch.Tensor], list[torch.Tensor], list[tuple[torch.Tensor, ...]], list[torch.Tensor]]:
        """Assign labels to (image, anchor, cell) per level.

        Returns per level: class ids [k], box targets [k, 4] (xy offset from the cell's corner, wh; grid
        units), indices (image, anchor, gj, gi) and the matched anchors [k, 2] (grid units).
        Grid sizes come from each map's own shape, so any input size, square or not, works.
        """
        device = targets.device
        targets = targets.float()
        n_labels = targets.shape[0]
        anchor_ids = torch.arange(self.na, device=device, dtype=targets.dtype).view(self.na, 1)
        anchor_ids = anchor_ids.expand(self.na, n_labels)
        # [na, n, 7]: (image, class, cx, cy, w, h, anchor) for every label under every anchor
        per_anchor = torch.cat((targets.unsqueeze(0).expand(self.na, n_labels, 6), anchor_ids.unsqueeze(-1)), 2)
        shifts = torch.tensor(_CELL_SHIFTS, device=device, dtype=targets.dtype)  # [5, 2]
        all_anchors = self.anchors.to(device=device, dtype=targets.dtype)

        tcls, tbox, indices, anch = [], [], [], []
        for level, pred in enumerate(preds):
            grid_h, grid_w = pred.shape[2], pred.shape[3]
            level_anchors = all_anchors[level]  # [na, 2]
            scale = torch.tensor([1, 1, grid_w, grid_h, grid_w, grid_h, 1], device=device, dtype=targets.dtype)
            labels = per_anchor * scale

            wh_ratio = labels[..., 4:6] / level_anchors.unsqueeze(1)  # [na, n, 2]
            fits = torch.max(wh_ratio, 1.0 / wh_ratio).amax(2) < self.anchor_t
            labels = labels[fits]  # [m, 7]

            centre = labels[:, 2:4]
            centre_from_far_edge = torch.tensor([grid_w, grid_h], device=device, dtype=targets.dtype) - centre
            near_low = (centre % 1.0 < _NEIGHBOUR_MARGIN) & (centre > 1.0)  # left, up
            near_high = (centre_from_far_edge % 1.0 < _NEIGHBOUR_MARGIN) & (centre_from_far_edge > 1.0)  # right, down
            own_cell = torch.ones_like(near_low[:, 0])
            use = torch.stack((own_cell, near_low[:, 0], near_low[:, 1], near_high[:, 0], near_high[:, 1]))  # [5, m]

            labels = labels.unsqueeze(0).expand(len(_CELL_SHIFTS), -1, -1)[use]  # [k, 7]
            cell_shift = shifts.unsqueeze(1).expand(-1, use.shape[1], -1)[use]  # [k, 2]
            centre = labels[:, 2:4]
            # floor(centre + 0.5 * shift): the neighbour across the nearer edge (for an integer centre, its own cell)
            cell = (centre + cell_shift * _NEIGHBOUR_MARGIN).floor()
            cell[:, 0].clamp_(0, grid_w - 1)
            cell[:, 1].clamp_(0, grid_h - 1)
            gi, gj = cell.long().unbind(1)
            img = labels[:, 0].long()
            anchor = labels[:, 6].long()

            indices.append((img, anchor, gj, gi))
            tbox.append(torch.cat((centre - cell, labels[:, 4:6]), 1))
            anch.append(level_anchors[anchor])
            tcls.append(labels[:, 1].long())
        return tcls, tbox, indices, anch
