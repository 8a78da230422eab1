"""Box formats, the IoU family and non-maximum suppression.

Conventions: xyxy = (x1, y1, x2, y2) corners, xywh = (cx, cy, w, h) centre and size;
a trailing `n` means normalised to [0, 1]. Format converters accept a torch tensor or a
numpy array and return a new object of the same kind (the input is never modified).
"""
from __future__ import annotations

import math
from typing import Sequence, TypeVar

import numpy as np
import torch
import torchvision

from utils.logger import LOGGER

ArrayLike = TypeVar("ArrayLike", torch.Tensor, np.ndarray)

MAX_WH = 7680  # class offset for class-aware NMS: larger than any image side we expect


def _float_copy(x: ArrayLike) -> ArrayLike:
    """A floating-point copy, so converters never write into (or truncate) the caller's data."""
    if isinstance(x, torch.Tensor):
        return x.clone() if x.is_floating_point() else x.float()
    x = np.asarray(x)
    return x.astype(x.dtype if np.issubdtype(x.dtype, np.floating) else np.float64, copy=True)


def xyxy2xywh(x: ArrayLike) -> ArrayLike:
    """Corners -> centre and size."""
    y = _float_copy(x)
    y[..., 0] = (x[..., 0] + x[..., 2]) / 2
    y[..., 1] = (x[..., 1] + x[..., 3]) / 2
    y[..., 2] = x[..., 2] - x[..., 0]
    y[..., 3] = x[..., 3] - x[..., 1]
    return y


def xywh2xyxy(x: ArrayLike) -> ArrayLike:
    """Centre and size -> corners."""
    y = _float_copy(x)
    half_w = x[..., 2] / 2
    half_h = x[..., 3] / 2
    y[..., 0] = x[..., 0] - half_w
    y[..., 1] = x[..., 1] - half_h
    y[..., 2] = x[..., 0] + half_w
    y[..., 3] = x[..., 1] + half_h
    return y


def xywhn2xyxy(x: ArrayLike, w: float = 640, h: float = 640, padw: float = 0, padh: float = 0) -> ArrayLike:
    """Normalised centre/size (label files) -> pixel corners on a w x h image shifted by a pad."""
    y = _float_copy(x)
    y[..., 0] = w * (x[..., 0] - x[..., 2] / 2) + padw
    y[..., 1] = h * (x[..., 1] - x[..., 3] / 2) + padh
    y[..., 2] = w * (x[..., 0] + x[..., 2] / 2) + padw
    y[..., 3] = h * (x[..., 1] + x[..., 3] / 2) + padh
    return y


def xyxy2xywhn(x: ArrayLike, w: float = 640, h: float = 640, clip: bool = False, eps: float = 0.0) -> ArrayLike:
    """Pixel corners -> normalised centre/size; `clip` first clips a copy to the image (minus eps)."""
    if clip:
        x = clip_boxes(_float_copy(x), (h - eps, w - eps))
    y = _float_copy(x)
    y[..., 0] = ((x[..., 0] + x[..., 2]) / 2) / w
    y[..., 1] = ((x[..., 1] + x[..., 3]) / 2) / h
    y[..., 2] = (x[..., 2] - x[..., 0]) / w
    y[..., 3] = (x[..., 3] - x[..., 1]) / h
    return y


def xyn2xy(x: ArrayLike, w: float = 640, h: float = 640, padw: float = 0, padh: float = 0) -> ArrayLike:
    """Normalised points [n, 2] (polygon vertices) -> pixel points."""
    y = _float_copy(x)
    y[..., 0] = w * x[..., 0] + padw
    y[..., 1] = h * x[..., 1] + padh
    return y


def polygon_to_box(coords: Sequence[float] | np.ndarray) -> np.ndarray:
    """Enclosing box (cx, cy, w, h) of a flat polygon x1 y1 x2 y2 ...; how polygon label rows become boxes."""
    points = np.asarray(coords, dtype=np.float64).reshape(-1, 2)
    if len(points) == 0:
        raise ValueError("polygon_to_box needs at least one (x, y) point")
    x_min, y_min = points.min(0)
    x_max, y_max = points.max(0)
    return np.array([(x_min + x_max) / 2, (y_min + y_max) / 2, x_max - x_min, y_max - y_min])


def box_iou(box1: torch.Tensor, box2: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU of xyxy boxes: [N, 4] x [M, 4] -> [N, M]."""
    return torchvision.ops.box_iou(box1, box2)


def box_iou_np(box1: np.ndarray, box2: np.ndarray, eps: float = 1e-7) -> np.ndarray:
    """Numpy twin of `box_iou` for code that stays in numpy (label statistics, plots)."""
    box1 = np.asarray(box1, dtype=np.float64)
    box2 = np.asarray(box2, dtype=np.float64)
    top_left = np.maximum(box1[:, None, :2], box2[None, :, :2])
    bottom_right = np.minimum(box1[:, None, 2:], box2[None, :, 2:])
    inter = np.clip(bottom_right - top_left, 0, None).prod(2)
    area1 = (box1[:, 2] - box1[:, 0]) * (box1[:, 3] - box1[:, 1])
    area2 = (box2[:, 2] - box2[:, 0]) * (box2[:, 3] - box2[:, 1])
    return inter / (area1[:, None] + area2[None, :] - inter + eps)


def bbox_iou(
    box1: torch.Tensor,
    box2: torch.Tensor,
    xywh: bool = True,
    GIoU: bool = False,
    DIoU: bool = False,
    CIoU: bool = False,
    eps: float = 1e-7,
) -> torch.Tensor:
    """Element-wise IoU (or GIoU / DIoU / CIoU) of boxes [..., 4] that broadcast against each other.

    Returns shape [...] (the last dimension is consumed, NOT kept as size 1), e.g. [n, 4] and [n, 4]
    -> [n]. CIoU's trade-off factor alpha is computed without gradient, as in the YOLOv5 loss.
    """
    if xywh:
        (x1, y1, w1, h1) = box1.unbind(-1)
        (x2, y2, w2, h2) = box2.unbind(-1)
        b1_x1, b1_x2, b1_y1, b1_y2 = x1 - w1 / 2, x1 + w1 / 2, y1 - h1 / 2, y1 + h1 / 2
        b2_x1, b2_x2, b2_y1, b2_y2 = x2 - w2 / 2, x2 + w2 / 2, y2 - h2 / 2, y2 + h2 / 2
        h1 = h1 + eps
        h2 = h2 + eps
    else:
        (b1_x1, b1_y1, b1_x2, b1_y2) = box1.unbind(-1)
        (b2_x1, b2_y1, b2_x2, b2_y2) = box2.unbind(-1)
        w1, h1 = b1_x2 - b1_x1, b1_y2 - b1_y1 + eps
        w2, h2 = b2_x2 - b2_x1, b2_y2 - b2_y1 + eps

    inter = (torch.minimum(b1_x2, b2_x2) - torch.maximum(b1_x1, b2_x1)).clamp(min=0) * (
        torch.minimum(b1_y2, b2_y2) - torch.maximum(b1_y1, b2_y1)
    ).clamp(min=0)
    union = w1 * h1 + w2 * h2 - inter + eps
    iou = inter / union
    if not (GIoU or DIoU or CIoU):
        return iou

    # smallest box enclosing both
    enclose_w = torch.maximum(b1_x2, b2_x2) - torch.minimum(b1_x1, b2_x1)
    enclose_h = torch.maximum(b1_y2, b2_y2) - torch.minimum(b1_y1, b2_y1)
    if GIoU and not (DIoU or CIoU):
        enclose_area = enclose_w * enclose_h + eps
        return iou - (enclose_area - union) / enclose_area

    diagonal_sq = enclose_w**2 + enclose_h**2 + eps
    centre_dist_sq = ((b2_x1 + b2_x2 - b1_x1 - b1_x2) ** 2 + (b2_y1 + b2_y2 - b1_y1 - b1_y2) ** 2) / 4
    if not CIoU:
        return iou - centre_dist_sq / diagonal_sq
    aspect_term = (4 / math.pi**2) * (torch.atan(w2 / h2) - torch.atan(w1 / h1)).pow(2)
    with torch.no_grad():
        alpha = aspect_term / (aspect_term - iou + (1 + eps))
    return iou - (centre_dist_sq / diagonal_sq + aspect_term * alpha)


def clip_boxes(boxes: ArrayLike, shape: Sequence[float]) -> ArrayLike:
    """Clip xyxy boxes to an image of shape (h, w, ...) in place; returns the same object."""
    height, width = shape[0], shape[1]
    if isinstance(boxes, torch.Tensor):
        boxes[..., 0].clamp_(0, width)
        boxes[..., 1].clamp_(0, height)
        boxes[..., 2].clamp_(0, width)
        boxes[..., 3].clamp_(0, height)
    else:
        boxes[..., [0, 2]] = boxes[..., [0, 2]].clip(0, width)
        boxes[..., [1, 3]] = boxes[..., [1, 3]].clip(0, height)
    return boxes


def scale_boxes(
    img1_shape: Sequence[int],
    boxes: ArrayLike,
    img0_shape: Sequence[int],
    ratio_pad: tuple | None = None,
) -> ArrayLike:
    """Map xyxy boxes from a letterboxed image (h1, w1) back onto the original (h0, w0), in place.

    ratio_pad = ((gain_h, gain_w), (pad_w, pad_h)) as the dataset records it; x is divided by gain_w
    and y by gain_h (equal up to rounding of the resized size). Without it the gain and centred pad
    are derived from the two shapes. Returns the same object, clipped to the original image.
    """
    if ratio_pad is None:
        gain = min(img1_shape[0] / img0_shape[0], img1_shape[1] / img0_shape[1])
        gain_h = gain_w = gain
        pad_w = (img1_shape[1] - img0_shape[1] * gain) / 2
        pad_h = (img1_shape[0] - img0_shape[0] * gain) / 2
    else:
        ratio, (pad_w, pad_h) = ratio_pad
        gain_h, gain_w = (ratio, ratio) if np.isscalar(ratio) else (ratio[0], ratio[1])
    boxes[..., [0, 2]] = (boxes[..., [0, 2]] - pad_w) / gain_w
    boxes[..., [1, 3]] = (boxes[..., [1, 3]] - pad_h) / gain_h
    return clip_boxes(boxes, img0_shape)


def _check_fraction(name: str, value: float) -> None:
    if not 0 <= value <= 1:
        raise ValueError(f"{name}={value} is invalid: it must be between 0.0 and 1.0")


def non_max_suppression(
    prediction: torch.Tensor,
    conf_thres: float = 0.25,
    iou_thres: float = 0.45,
    classes: Sequence[int] | None = None,
    agnostic: bool = False,
    multi_label: bool = False,
    max_det: int = 300,
    max_nms: int = 30000,
) -> list[torch.Tensor]:
    """Per-image NMS on decoded predictions [B, N, 5 + nc] (xywh pixels, sigmoided obj and class scores).

    Score = objectness x class score. Boxes with objectness <= conf_thres are dropped first; then either
    every (box, class) pair scoring > conf_thres (multi_label, used by val) or the best class per box.
    Class-aware unless `agnostic`. Returns per image a tensor [n, 6] = x1, y1, x2, y2, conf, cls,
    sorted by conf, n <= max_det.
    """
    if isinstance(prediction, (list, tuple)):  # eval-mode models may return (decoded, raw maps)
        prediction = prediction[0]
    _check_fraction("conf_thres", conf_thres)
    _check_fraction("iou_thres", iou_thres)
    if prediction.ndim != 3 or prediction.shape[-1] < 6:
        raise ValueError(f"prediction must be [batch, boxes, 5 + nc] with nc >= 1, got {tuple(prediction.shape)}")

    multi_label = multi_label and prediction.shape[-1] > 6  # one class: nothing to split
    output = [torch.zeros((0, 6), device=prediction.device)] * prediction.shape[0]
    class_filter = None if classes is None else torch.tensor(list(classes), device=prediction.device)
    for image_index, candidates in enumerate(prediction):
        candidates = candidates[candidates[:, 4] > conf_thres]
        if not candidates.shape[0]:
            continue
        scores = candidates[:, 5:] * candidates[:, 4:5]
        corners = xywh2xyxy(candidates[:, :4])
        if multi_label:
            box_index, class_index = (scores > conf_thres).nonzero(as_tuple=True)
            detections = torch.cat(
                (corners[box_index], scores[box_index, class_index, None], class_index[:, None].float()), 1
            )
        else:
            best_score, best_class = scores.max(1, keepdim=True)
            detections = torch.cat((corners, best_score, best_class.float()), 1)[best_score.view(-1) > conf_thres]
        if class_filter is not None:
            detections = detections[(detections[:, 5:6] == class_filter).any(1)]
        if not detections.shape[0]:
            continue
        if detections.shape[0] > max_nms:
            LOGGER.warning(f"WARNING ⚠️ NMS: {detections.shape[0]} candidates, keeping the {max_nms} best")
        detections = detections[detections[:, 4].argsort(descending=True)[:max_nms]]
        offsets = detections[:, 5:6] * (0 if agnostic else MAX_WH)
        keep = torchvision.ops.nms(detections[:, :4] + offsets, detections[:, 4], iou_thres)[:max_det]
        output[image_index] = detections[keep]
    return output
