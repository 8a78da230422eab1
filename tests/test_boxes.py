"""Box formats, IoU family, scale_boxes and NMS against values computed by hand."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from utils.boxes import (
    bbox_iou,
    box_iou,
    box_iou_np,
    clip_boxes,
    non_max_suppression,
    polygon_to_box,
    scale_boxes,
    xywh2xyxy,
    xywhn2xyxy,
    xyn2xy,
    xyxy2xywh,
    xyxy2xywhn,
)

# two boxes, xyxy and the same in xywh: (10,20)-(50,80) -> centre (30,50) size 40x60; (0,0)-(4,2) -> (2,1) 4x2
XYXY = [[10.0, 20.0, 50.0, 80.0], [0.0, 0.0, 4.0, 2.0]]
XYWH = [[30.0, 50.0, 40.0, 60.0], [2.0, 1.0, 4.0, 2.0]]


@pytest.mark.parametrize("kind", ["torch", "numpy"])
def test_xyxy_xywh_exact_values_and_round_trip(kind):
    make = torch.tensor if kind == "torch" else np.array
    xyxy, xywh = make(XYXY), make(XYWH)
    converted = xyxy2xywh(xyxy)
    assert type(converted) is type(xyxy)
    np.testing.assert_allclose(np.asarray(converted), XYWH)
    np.testing.assert_allclose(np.asarray(xywh2xyxy(xywh)), XYXY)
    np.testing.assert_allclose(np.asarray(xywh2xyxy(xyxy2xywh(xyxy))), XYXY)
    np.testing.assert_allclose(np.asarray(xyxy), XYXY)  # input untouched


def test_integer_input_is_not_truncated():
    # centre of (0,0)-(3,3) is 1.5: an int copy would make it 1
    assert xyxy2xywh(np.array([[0, 0, 3, 3]]))[0, 0] == 1.5
    assert xyxy2xywh(torch.tensor([[0, 0, 3, 3]]))[0, 0].item() == 1.5


def test_normalised_conversions_with_padding():
    # w=100, h=200, pad (5, 7); (0.5, 0.25, 0.2, 0.1):
    # x1 = 100*(0.5-0.1)+5 = 45, y1 = 200*(0.25-0.05)+7 = 47, x2 = 100*0.6+5 = 65, y2 = 200*0.3+7 = 67
    box = np.array([[0.5, 0.25, 0.2, 0.1]])
    np.testing.assert_allclose(xywhn2xyxy(box, w=100, h=200, padw=5, padh=7), [[45, 47, 65, 67]])
    # (10,20,50,80) on 100x200: cx 30/100, cy 50/200, w 40/100, h 60/200
    np.testing.assert_allclose(xyxy2xywhn(np.array(XYXY[:1]), w=100, h=200), [[0.3, 0.25, 0.4, 0.3]])
    # points: (0.5, 0.25) -> (100*0.5+5, 200*0.25+7) = (55, 57)
    np.testing.assert_allclose(xyn2xy(np.array([[0.5, 0.25]]), w=100, h=200, padw=5, padh=7), [[55, 57]])


def test_xyxy2xywhn_clip_uses_a_copy():
    box = torch.tensor([[-10.0, 20.0, 120.0, 80.0]])
    # clipped to (0, 20, 100, 80) on 100x200 -> cx 0.5, cy 0.25, w 1.0, h 0.3
    np.testing.assert_allclose(xyxy2xywhn(box, w=100, h=200, clip=True).numpy(), [[0.5, 0.25, 1.0, 0.3]], rtol=1e-6)
    assert box[0, 0].item() == -10.0


def test_polygon_to_box_med_rectangle():
    coords = [0.389, 0.415, 0.522, 0.415, 0.522, 0.572, 0.389, 0.572]
    # x 0.389..0.522 -> cx 0.4555 w 0.133; y 0.415..0.572 -> cy 0.4935 h 0.157
    np.testing.assert_allclose(polygon_to_box(coords), [0.4555, 0.4935, 0.133, 0.157], atol=1e-12)
    # a non-rectangular polygon: triangle (0.1,0.2) (0.5,0.1) (0.3,0.6) -> x 0.1..0.5, y 0.1..0.6
    np.testing.assert_allclose(polygon_to_box([0.1, 0.2, 0.5, 0.1, 0.3, 0.6]), [0.3, 0.35, 0.4, 0.5], atol=1e-12)


# Hand-computed IoU family for A = (0,0)-(4,4) and B = (2,0)-(8,2) (w 6, h 2):
#   intersection x 2..4, y 0..2 -> 4; union 16 + 12 - 4 = 24; IoU = 1/6 = 0.1666667
#   enclosing box (0,0)-(8,4): area 32 -> GIoU = 1/6 - (32-24)/32 = -0.0833333
#   centres (2,2), (5,1): rho^2 = 9 + 1 = 10; diagonal^2 = 8^2 + 4^2 = 80 -> DIoU = 1/6 - 10/80 = 0.0416667
#   v = 4/pi^2 * (atan(6/2) - atan(4/4))^2 = 0.405285 * (1.2490458 - 0.7853982)^2 = 0.0871237
#   alpha = v / (v - IoU + 1) = 0.0871237 / 0.9204570 = 0.0946526
#   CIoU = DIoU - v*alpha = 0.0416667 - 0.0082465 = 0.0334202
A_XYXY, B_XYXY = [0.0, 0.0, 4.0, 4.0], [2.0, 0.0, 8.0, 2.0]
A_XYWH, B_XYWH = [2.0, 2.0, 4.0, 4.0], [5.0, 1.0, 6.0, 2.0]
EXPECTED = {"iou": 0.1666667, "giou": -0.0833333, "diou": 0.0416667, "ciou": 0.0334202}


@pytest.mark.parametrize("xywh", [False, True])
def test_iou_family_hand_values(xywh):
    a = torch.tensor(A_XYWH if xywh else A_XYXY, dtype=torch.float64)
    b = torch.tensor(B_XYWH if xywh else B_XYXY, dtype=torch.float64)
    got = {
        "iou": bbox_iou(a, b, xywh=xywh),
        "giou": bbox_iou(a, b, xywh=xywh, GIoU=True),
        "diou": bbox_iou(a, b, xywh=xywh, DIoU=True),
        "ciou": bbox_iou(a, b, xywh=xywh, CIoU=True),
    }
    for name, value in got.items():
        assert value.shape == ()  # [4] inputs -> scalar: the last dim is consumed
        assert value.item() == pytest.approx(EXPECTED[name], abs=1e-6), name


def test_iou_same_aspect_ratio_ciou_equals_diou():
    # (0,0)-(4,4) vs (2,2)-(6,6): IoU 4/28 = 1/7; centres 2 apart on both axes -> rho^2 8; diagonal^2 72
    # DIoU = 1/7 - 8/72 = 0.031746; same aspect ratio -> v = 0 -> CIoU = DIoU; GIoU = 1/7 - 8/36 = -0.079365
    a = torch.tensor([0.0, 0.0, 4.0, 4.0])
    b = torch.tensor([2.0, 2.0, 6.0, 6.0])
    assert bbox_iou(a, b, xywh=False).item() == pytest.approx(1 / 7, abs=1e-6)
    assert bbox_iou(a, b, xywh=False, GIoU=True).item() == pytest.approx(-0.079365, abs=1e-6)
    assert bbox_iou(a, b, xywh=False, CIoU=True).item() == pytest.approx(0.031746, abs=1e-6)


def test_identical_and_disjoint_boxes():
    box = torch.tensor([[10.0, 10.0, 20.0, 40.0]])
    for flags in ({}, {"GIoU": True}, {"DIoU": True}, {"CIoU": True}):
        assert bbox_iou(box, box, xywh=False, **flags).item() == pytest.approx(1.0, abs=1e-5)
    far = torch.tensor([[100.0, 100.0, 110.0, 130.0]])
    assert bbox_iou(box, far, xywh=False).item() == pytest.approx(0.0, abs=1e-9)
    assert bbox_iou(box, far, xywh=False, GIoU=True).item() < -0.5  # mostly empty enclosing box
    assert bbox_iou(box, far, xywh=False, CIoU=True).item() < 0


def test_bbox_iou_broadcasts_like_box_iou():
    gen = torch.Generator().manual_seed(0)
    corners = torch.rand(5, 2, generator=gen) * 50
    boxes1 = torch.cat((corners, corners + 10 + torch.rand(5, 2, generator=gen) * 30), 1)
    corners = torch.rand(4, 2, generator=gen) * 50
    boxes2 = torch.cat((corners, corners + 10 + torch.rand(4, 2, generator=gen) * 30), 1)
    pairwise = bbox_iou(boxes1[:, None], boxes2[None], xywh=False)
    assert pairwise.shape == (5, 4)
    torch.testing.assert_close(pairwise, box_iou(boxes1, boxes2), atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(box_iou_np(boxes1.numpy(), boxes2.numpy()), box_iou(boxes1, boxes2).numpy(), atol=1e-5)


def test_ciou_alpha_carries_no_gradient():
    # d CIoU / d w2 with alpha held constant: compare autograd to the same expression with alpha as a number
    a = torch.tensor(A_XYWH, dtype=torch.float64)
    b = torch.tensor(B_XYWH, dtype=torch.float64, requires_grad=True)
    bbox_iou(a, b, CIoU=True).backward()
    alpha = 0.09465264965491672  # from the hand computation above (eps-free)
    b_ref = torch.tensor(B_XYWH, dtype=torch.float64, requires_grad=True)
    iou = bbox_iou(a, b_ref)
    diou_penalty = iou - bbox_iou(a, b_ref, DIoU=True)
    v = (4 / math.pi**2) * (torch.atan(b_ref[2] / b_ref[3]) - math.atan(1.0)) ** 2
    (iou - diou_penalty - alpha * v).backward()
    torch.testing.assert_close(b.grad, b_ref.grad, atol=1e-6, rtol=1e-5)


def test_scale_boxes_inverts_letterbox_with_ratio_pad():
    # 430x320 (w x h) frame letterboxed to 320x320: gain 320/430, resized to 320 x round(238.14)=238,
    # pad (320-238)/2 = 41 above and below. Dataset records ((238/320, 320/430), (0, 41)).
    gain_h, gain_w, pad_w, pad_h = 238 / 320, 320 / 430, 0.0, 41.0
    original = np.array([[100.0, 50.0, 300.0, 250.0], [0.0, 0.0, 430.0, 320.0]])
    letterboxed = original * np.array([gain_w, gain_h, gain_w, gain_h]) + np.array([pad_w, pad_h, pad_w, pad_h])
    ratio_pad = ((gain_h, gain_w), (pad_w, pad_h))
    restored = scale_boxes((320, 320), torch.tensor(letterboxed), (320, 430), ratio_pad=ratio_pad)
    np.testing.assert_allclose(restored.numpy(), original, atol=1e-9)


def test_scale_boxes_from_shapes_and_clips():
    # without ratio_pad: gain = min(320/320, 320/430) = 0.744186, pad_h = (320 - 320*0.744186)/2 = 40.93
    gain = 320 / 430
    pad_h = (320 - 320 * gain) / 2
    original = np.array([[100.0, 50.0, 300.0, 250.0]])
    letterboxed = original * gain + np.array([0, pad_h, 0, pad_h])
    np.testing.assert_allclose(scale_boxes((320, 320), letterboxed.copy(), (320, 430)), original, atol=1e-9)
    outside = np.array([[-5.0, 0.0, 330.0, 330.0]])  # beyond the letterboxed image on every side
    np.testing.assert_allclose(scale_boxes((320, 320), outside, (320, 430)), [[0, 0, 430, 320]])


def test_clip_boxes_in_place_both_types():
    t = torch.tensor([[-1.0, -2.0, 50.0, 70.0]])
    assert clip_boxes(t, (60, 40)) is t
    assert t.tolist() == [[0.0, 0.0, 40.0, 60.0]]
    a = np.array([[-1.0, 5.0, 50.0, 70.0]])
    clip_boxes(a, (60, 40))
    assert a.tolist() == [[0.0, 5.0, 40.0, 60.0]]


def _prediction(rows: list[list[float]]) -> torch.Tensor:
    """One image of decoded predictions: cx, cy, w, h, obj, class scores..."""
    return torch.tensor([rows], dtype=torch.float32)


def test_nms_suppresses_same_class_keeps_other_class():
    # boxes 1 and 2 overlap: 18x20 intersection, IoU 360/440 = 0.82 > 0.45
    pred = _prediction(
        [
            [50, 50, 20, 20, 0.9, 1.0, 0.0],
            [52, 50, 20, 20, 0.8, 1.0, 0.0],  # same class -> suppressed
            [51, 50, 20, 20, 0.7, 0.0, 1.0],  # other class -> kept (class-aware)
            [150, 150, 20, 20, 0.6, 1.0, 0.0],  # far away -> kept
        ]
    )
    (out,) = non_max_suppression(pred, conf_thres=0.25, iou_thres=0.45)
    assert out.shape == (3, 6)
    torch.testing.assert_close(out[0], torch.tensor([40.0, 40.0, 60.0, 60.0, 0.9, 0.0]))
    assert out[:, 4].tolist() == pytest.approx([0.9, 0.7, 0.6])
    assert out[:, 5].tolist() == [0.0, 1.0, 0.0]
    (agnostic,) = non_max_suppression(pred, conf_thres=0.25, iou_thres=0.45, agnostic=True)
    assert agnostic[:, 4].tolist() == pytest.approx([0.9, 0.6])


def test_nms_conf_filter_on_objectness_and_score():
    pred = _prediction(
        [
            [50, 50, 20, 20, 0.20, 1.0, 0.0],  # objectness below 0.25
            [150, 50, 20, 20, 0.50, 0.40, 0.0],  # score 0.5*0.4 = 0.20 below 0.25
            [250, 50, 20, 20, 0.50, 0.60, 0.0],  # score 0.30 kept
        ]
    )
    (out,) = non_max_suppression(pred, conf_thres=0.25)
    assert out.shape == (1, 6)
    assert out[0, 4].item() == pytest.approx(0.30)


def test_nms_max_det_and_sorting():
    rows = [[20 + 40 * i, 20, 10, 10, 0.3 + 0.05 * i, 1.0] for i in range(10)]  # disjoint, nc = 1
    (out,) = non_max_suppression(_prediction(rows), conf_thres=0.25, max_det=3)
    assert out.shape == (3, 6)
    assert out[:, 4].tolist() == pytest.approx([0.75, 0.70, 0.65])


def test_nms_multi_label_and_class_filter():
    pred = _prediction([[50, 50, 20, 20, 1.0, 0.9, 0.6, 0.1]])
    (single,) = non_max_suppression(pred, conf_thres=0.5)
    assert single[:, 5].tolist() == [0.0]
    (multi,) = non_max_suppression(pred, conf_thres=0.5, multi_label=True)
    assert sorted(multi[:, 5].tolist()) == [0.0, 1.0]  # class 2 (0.1) under the threshold
    (filtered,) = non_max_suppression(pred, conf_thres=0.5, multi_label=True, classes=[1])
    assert filtered[:, 5].tolist() == [1.0]


def test_nms_batch_and_empty_images():
    pred = torch.zeros((3, 5, 7))
    pred[1, 0] = torch.tensor([50, 50, 20, 20, 0.9, 0.2, 0.8])  # nc = 2, one box in image 1 only
    out = non_max_suppression(pred)
    assert [o.shape[0] for o in out] == [0, 1, 0]
    assert out[1][0, 4].item() == pytest.approx(0.72)  # 0.9 * 0.8
    assert out[1][0, 5].item() == 1.0


@pytest.mark.parametrize("kwargs, bad", [({"conf_thres": 1.5}, "1.5"), ({"iou_thres": -0.1}, "-0.1")])
def test_nms_rejects_invalid_thresholds(kwargs, bad):
    with pytest.raises(ValueError, match=bad):
        non_max_suppression(torch.zeros((1, 3, 6)), **kwargs)
