"""ComputeLoss: hand-checked target assignment, shape safety, and loss values that can be worked out on paper."""
from __future__ import annotations

import math
import re

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from utils.training.loss import ComputeLoss, FocalLoss, smooth_bce

HYP = {"box": 0.05, "obj": 1.0, "cls": 0.5, "cls_pw": 1.0, "obj_pw": 1.0, "anchor_t": 4.0, "fl_gamma": 0.0}
UNIT_HYP = {**HYP, "box": 1.0, "obj": 1.0, "cls": 1.0}


class StubDetect(nn.Module):
    """Only the attributes ComputeLoss reads from a Detect head, so hand cases can pick any grid and anchors."""

    def __init__(self, anchors_grid: list[list[list[float]]], strides: list[float], nc: int):
        super().__init__()
        self.nc, self.no = nc, nc + 5
        self.nl, self.na = len(anchors_grid), len(anchors_grid[0])
        self.register_buffer("stride", torch.tensor(strides, dtype=torch.float32))
        self.register_buffer("anchors", torch.tensor(anchors_grid, dtype=torch.float32))


class StubModel(nn.Module):
    def __init__(self, detect: StubDetect):
        super().__init__()
        self.detect = detect


def one_level_loss(nc: int = 1, anchor=(1.5, 2.0), hyp: dict = UNIT_HYP, label_smoothing: float = 0.0) -> ComputeLoss:
    """A single 4x4 level (stride 8, 32x32 input) with one anchor."""
    return ComputeLoss(StubModel(StubDetect([[list(anchor)]], [8.0], nc)), hyp, label_smoothing)


def three_level_stub(nc: int = 4) -> StubModel:
    pixels = torch.tensor([[10, 13, 16, 30, 33, 23], [30, 61, 62, 45, 59, 119], [116, 90, 156, 198, 373, 326]])
    strides = torch.tensor([8.0, 16.0, 32.0])
    grid = (pixels.view(3, 3, 2) / strides.view(3, 1, 1)).tolist()
    return StubModel(StubDetect(grid, strides.tolist(), nc))


def maps_for(height: int, width: int, strides=(8, 16, 32), batch: int = 2, na: int = 3, no: int = 9, fill: float = 0.0):
    return [torch.full((batch, na, height // s, width // s, no), fill) for s in strides]


# (a) ---------------------------------------------------------------------------------------------------------------
def test_build_targets_hand_case_assigns_own_and_nearest_neighbour_cells():
    loss = one_level_loss()
    # Label 1, image 0: centre at grid (x=1.3, y=2.7), wh = the anchor (1.5, 2.0).
    #   frac(x)=0.3 < 0.5 and x > 1 -> left neighbour; frac(4-x)=0.7 -> no right.
    #   frac(y)=0.7 -> no up; frac(4-y)=0.3 < 0.5 and 4-y=1.3 > 1 -> bottom neighbour.
    # Label 2, image 1: centre (0.4, 3.6): frac(x)=0.4 but x <= 1 -> no left; frac(4-x)=0.6 -> no right;
    #   frac(y)=0.6 -> no up; frac(4-y)=0.4 but 4-y <= 1 -> no bottom. Own cell only.
    targets = torch.tensor([[0, 0, 1.3 / 4, 2.7 / 4, 1.5 / 4, 2.0 / 4], [1, 0, 0.4 / 4, 3.6 / 4, 1.5 / 4, 2.0 / 4]])
    preds = maps_for(32, 32, strides=(8,), na=1, no=6)
    tcls, tbox, indices, anchors = loss.build_targets(preds, targets)
    img, anchor, gj, gi = indices[0]

    got = {
        (int(b), int(j), int(i)): tuple(round(float(v), 4) for v in box[:2])
        for b, j, i, box in zip(img, gj, gi, tbox[0])
    }
    expected = {
        (0, 2, 1): (0.3, 0.7),  # own cell: offset from its top-left corner
        (0, 2, 0): (1.3, 0.7),  # left neighbour: the centre lies 1.3 cells right of its corner
        (0, 3, 1): (0.3, -0.3),  # bottom neighbour: the centre lies 0.3 cells above it
        (1, 3, 0): (0.4, 0.6),
    }
    assert got == expected
    assert torch.allclose(tbox[0][:, 2:], torch.tensor([1.5, 2.0]).expand(4, 2))
    assert anchor.tolist() == [0] * 4 and tcls[0].tolist() == [0] * 4
    assert torch.allclose(anchors[0], torch.tensor([1.5, 2.0]).expand(4, 2))


def test_build_targets_rejects_labels_too_far_from_every_anchor_size():
    loss = one_level_loss(anchor=(1.0, 1.0))
    # wh 0.3 x 0.3 cells: ratio 1/0.3 = 3.3 < 4 -> match; 0.2 x 0.2: ratio 5 -> no match; 3.9 x 1 -> match.
    targets = torch.tensor([[0, 0, 0.5, 0.5, 0.3 / 4, 0.3 / 4], [0, 0, 0.5, 0.5, 0.2 / 4, 0.2 / 4],
                            [0, 0, 0.5, 0.5, 3.9 / 4, 1.0 / 4]])
    _, tbox, _, _ = loss.build_targets(maps_for(32, 32, strides=(8,), na=1, no=6), targets)
    matched_widths = sorted({round(float(w), 3) for w in tbox[0][:, 2]})
    assert matched_widths == [0.3, 3.9]


def test_assigned_offsets_stay_within_what_the_head_can_predict():
    """2 sigma(t) - 0.5 spans (-0.5, 1.5): every assigned cell, neighbours included, must keep the centre in reach.

    Centres on exact cell edges (cx = 0.5 -> integer grid x) are where a naive floor(x) + 1 neighbour breaks.
    """
    loss = ComputeLoss(three_level_stub(nc=4), HYP)
    generator = torch.Generator().manual_seed(0)
    random_labels = torch.cat((
        torch.zeros(50, 1),
        torch.randint(0, 4, (50, 1), generator=generator).float(),
        torch.rand(50, 2, generator=generator),  # centres
        0.02 + 0.5 * torch.rand(50, 2, generator=generator),  # sizes
    ), 1)
    edge_labels = torch.tensor([[1, 0, 0.5, 0.5, 0.2, 0.2], [1, 1, 0.25, 0.75, 0.1, 0.3], [1, 2, 1.0, 1.0, 0.1, 0.1]])
    preds = maps_for(256, 320)
    _, tbox, indices, _ = loss.build_targets(preds, torch.cat((random_labels, edge_labels)))
    for pred, boxes, (img, a, gj, gi) in zip(preds, tbox, indices):
        assert bool((boxes[:, :2] >= -0.5).all() and (boxes[:, :2] <= 1.5).all())
        assert int(gj.max()) < pred.shape[2] and int(gi.max()) < pred.shape[3]


# (b) ---------------------------------------------------------------------------------------------------------------
def test_non_square_input_uses_each_maps_own_grid():
    from models.yolo import DetectionModel

    torch.manual_seed(0)
    model = DetectionModel("models/yolov5n.yaml", nc=4)
    images = torch.rand(2, 3, 320, 256)  # h x w
    preds = model(images).det
    assert [tuple(p.shape[2:4]) for p in preds] == [(40, 32), (20, 16), (10, 8)]

    targets = torch.tensor([
        [0, 1, 0.999, 0.999, 0.10, 0.10],  # bottom-right corner
        [0, 2, 0.001, 0.001, 0.08, 0.12],  # top-left corner
        [1, 3, 0.50, 0.99, 0.30, 0.20],  # bottom edge of the tall side
        [1, 0, 0.99, 0.50, 0.40, 0.60],
    ])
    loss = ComputeLoss(model, HYP)
    _, tbox, indices, _ = loss.build_targets(preds, targets)
    for pred, (img, anchor, gj, gi), boxes in zip(preds, indices, tbox):
        ny, nx = pred.shape[2:4]
        assert len(img) > 0
        assert int(gj.min()) >= 0 and int(gj.max()) < ny and int(gi.min()) >= 0 and int(gi.max()) < nx
        # The label at cy=0.99 sits in the last row of every level: a square-grid bug would put it at nx-1 or beyond.
        own = (img == 1) & (boxes[:, 0] >= 0) & (boxes[:, 0] < 1) & (boxes[:, 1] >= 0) & (boxes[:, 1] < 1)
        assert int(ny - 1) in gj[own].tolist()
    total, items = loss(preds, targets)
    assert torch.isfinite(total) and items.shape == (3,) and bool((items > 0).all())


# (c) ---------------------------------------------------------------------------------------------------------------
def test_wrong_inputs_raise_value_error_saying_what_was_expected_and_got():
    from models.yolo import ModelOutputs

    loss = ComputeLoss(three_level_stub(nc=4), HYP)
    maps = maps_for(64, 64)
    targets = torch.zeros((0, 6))
    expected = r"expects a list of 3 raw detection maps shaped \[B, 3, ny, nx, 9\]"
    cases = {
        "ModelOutputs": (ModelOutputs(det=maps, view_logits=None), "ModelOutputs"),
        "tuple of 2": (tuple(maps[:2]), "tuple of 2 items"),
        "empty list": ([], "list of 0 items"),
        "decoded": (torch.zeros(2, 100, 9), r"tensor of shape \[2, 100, 9\]"),
        "wrong nc": ([torch.zeros(2, 3, 8, 8, 10)] * 3, r"shape \[2, 3, 8, 8, 10\]"),
    }
    for name, (bad, got_text) in cases.items():
        with pytest.raises(ValueError, match=expected) as info:
            loss(bad, targets)
        assert re.search(got_text, str(info.value)), (name, str(info.value))
    with pytest.raises(ValueError, match=r"targets shaped \[N, 6\]"):
        loss(maps, torch.zeros(3, 5))


# (d) ---------------------------------------------------------------------------------------------------------------
def test_zero_targets_give_objectness_only_loss_equal_to_hand_value():
    hyp = {**HYP, "obj": 0.7}
    loss = ComputeLoss(three_level_stub(nc=4), hyp)
    preds = maps_for(64, 96, fill=0.0)  # every logit 0 -> BCE(0, target 0) = log 2 at every cell
    total, items = loss(preds, torch.zeros((0, 6)))
    expected_obj = math.log(2) * (4.0 + 1.0 + 0.4) * 0.7  # balance per level, gain used as given
    assert items[0] == 0 and items[2] == 0
    assert items[1].item() == pytest.approx(expected_obj, rel=1e-5)
    assert total.item() == pytest.approx(expected_obj * 2, rel=1e-5)  # x batch size


# (e) ---------------------------------------------------------------------------------------------------------------
def test_gradient_reaches_detect_convolutions():
    from models.yolo import DetectionModel

    torch.manual_seed(0)
    model = DetectionModel("models/yolov5n.yaml", nc=4)
    preds = model(torch.rand(2, 3, 128, 160)).det
    targets = torch.tensor([[0, 1, 0.5, 0.5, 0.2, 0.3], [1, 3, 0.3, 0.6, 0.1, 0.1]])
    total, _ = ComputeLoss(model, HYP)(preds, targets)
    total.backward()
    convs = [m for m in model.detect.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 3
    for conv in convs:
        assert conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0


# (f) ---------------------------------------------------------------------------------------------------------------
def _logit(p: torch.Tensor) -> torch.Tensor:
    return torch.log(p / (1 - p))


def _perfect_maps(loss: ComputeLoss, preds: list[torch.Tensor], targets: torch.Tensor) -> list[torch.Tensor]:
    """Raw maps whose decoded box equals the target at every assigned cell; objectness +20 there, -20 elsewhere."""
    _, tbox, indices, anchors = loss.build_targets(preds, targets)
    perfect = []
    for pred, (img, a, gj, gi), box, anchor in zip(preds, indices, tbox, anchors):
        pred = pred.clone()
        pred[..., 4] = -20.0
        pred[img, a, gj, gi, 0:2] = _logit((box[:, :2] + 0.5) / 2)  # 2 sigma(t) - 0.5 = offset
        pred[img, a, gj, gi, 2:4] = _logit(torch.sqrt(box[:, 2:] / anchor) / 2)  # (2 sigma(t))^2 anchor = wh
        pred[img, a, gj, gi, 4] = 20.0
        perfect.append(pred)
    return perfect


def test_perfect_prediction_gives_zero_box_and_objectness_loss():
    loss = ComputeLoss(three_level_stub(nc=4), UNIT_HYP)
    targets = torch.tensor([[0, 1, 0.40, 0.55, 0.10, 0.15], [1, 2, 0.62, 0.33, 0.30, 0.25]])
    preds = maps_for(256, 320)
    perfect = _perfect_maps(loss, preds, targets)
    _, items = loss(perfect, targets)
    assert items[0].item() < 1e-4
    assert items[1].item() < 1e-4  # objectness target is IoU = 1 at assigned cells, 0 elsewhere

    nudged = [p.clone() for p in perfect]
    nudged[0][..., 0:4] += 0.5  # same cells, wrong boxes: the test can fail
    _, items_nudged = loss(nudged, targets)
    assert items_nudged[0].item() > 1e-2


def test_highest_iou_wins_when_labels_share_a_cell():
    loss = one_level_loss(anchor=(1.0, 1.0))
    # Both labels centred at (1.5, 1.5): frac = 0.5, so no neighbours; both land in cell (1, 1).
    # Raw box logits 0 decode to a box of size = anchor at the centre -> IoU 1 with label A, 0.25 with label B.
    label_a = [0, 0, 1.5 / 4, 1.5 / 4, 1.0 / 4, 1.0 / 4]
    label_b = [0, 0, 1.5 / 4, 1.5 / 4, 2.0 / 4, 2.0 / 4]
    pred = torch.zeros(1, 1, 4, 4, 6)
    pred[..., 4] = 2.0
    softplus2 = F.softplus(torch.tensor(2.0)).item()
    # BCE(x, t) = softplus(x) - t x; mean over 16 cells, one with t = 1; level weight 4.0
    expected_obj = 4.0 * (16 * softplus2 - 1.0 * 2.0) / 16
    for order in ([label_a, label_b], [label_b, label_a]):
        _, items = loss([pred], torch.tensor(order))
        assert items[1].item() == pytest.approx(expected_obj, rel=1e-5)


# (g) ---------------------------------------------------------------------------------------------------------------
def test_label_smoothing_sets_class_targets_to_one_minus_and_half_eps():
    assert smooth_bce(0.2) == pytest.approx((0.9, 0.1))
    class_logits = torch.tensor([1.0, -2.0, 0.5])
    pred = torch.zeros(1, 1, 4, 4, 8)
    pred[..., 5:] = class_logits  # every assigned cell predicts the same class scores
    targets = torch.tensor([[0, 1, 0.5, 0.5, 0.25, 0.25]])
    for eps, class_target in ((0.2, [0.1, 0.9, 0.1]), (0.0, [0.0, 1.0, 0.0])):
        loss = one_level_loss(nc=3, anchor=(1.0, 1.0), label_smoothing=eps)
        assert (loss.class_positive, loss.class_negative) == pytest.approx((1 - eps / 2, eps / 2))
        _, items = loss([pred], targets)
        expected = F.binary_cross_entropy_with_logits(class_logits, torch.tensor(class_target)).item()
        assert items[2].item() == pytest.approx(expected, rel=1e-5)


def test_single_class_has_no_class_loss():
    loss = one_level_loss(nc=1, anchor=(1.0, 1.0))
    _, items = loss([torch.zeros(1, 1, 4, 4, 6)], torch.tensor([[0, 0, 0.5, 0.5, 0.25, 0.25]]))
    assert items[2] == 0 and items[0] > 0


def test_focal_loss_matches_hand_value_and_is_used_when_gamma_positive():
    focal = FocalLoss(pos_weight=1.0, gamma=2.0, alpha=0.25)
    # logit 0, target 1: BCE = log 2, p_t = 0.5, alpha weight 0.25, modulation (1 - 0.5)^2
    assert focal(torch.tensor([0.0]), torch.tensor([1.0])).item() == pytest.approx(math.log(2) * 0.25 * 0.25)
    loss = one_level_loss(hyp={**UNIT_HYP, "fl_gamma": 1.5})
    assert isinstance(loss.obj_loss, FocalLoss) and isinstance(loss.cls_loss, FocalLoss)
