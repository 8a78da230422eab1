"""Image augmentations that keep boxes consistent with pixels: letterbox, HSV jitter,
random affine/perspective warps, box filtering and mixup.

Images are OpenCV BGR uint8 arrays [H, W, 3]; boxes inside this module are pixel corners
(x1, y1, x2, y2). Randomness comes from numpy's and Python's global generators, which the
dataloader seeds per worker.
"""
from __future__ import annotations

import math
import random

import cv2
import numpy as np

PAD_COLOR = (114, 114, 114)  # YOLOv5's neutral grey for padding and warp borders


def letterbox(
    im: np.ndarray,
    new_shape: int | tuple[int, int] = (640, 640),
    color: tuple[int, int, int] = PAD_COLOR,
    auto: bool = True,
    scale_fill: bool = False,
    scaleup: bool = True,
    stride: int = 32,
) -> tuple[np.ndarray, tuple[float, float], tuple[float, float]]:
    """Resize keeping the aspect ratio, then pad to `new_shape` (h, w).

    auto=True pads only up to the next multiple of `stride` (the smallest valid input);
    scale_fill stretches without padding; scaleup=False never enlarges (better val mAP).
    Returns (image, (ratio_w, ratio_h), (dw, dh)) with dw, dh the padding on ONE side
    (floats; the odd pixel goes right/bottom).
    """
    height, width = im.shape[:2]
    target_h, target_w = (new_shape, new_shape) if isinstance(new_shape, int) else (int(s) for s in new_shape)
    scale = min(target_h / height, target_w / width)
    if not scaleup:
        scale = min(scale, 1.0)
    ratio = (scale, scale)
    resized_w, resized_h = int(round(width * scale)), int(round(height * scale))
    pad_w, pad_h = target_w - resized_w, target_h - resized_h
    if auto:
        pad_w, pad_h = pad_w % stride, pad_h % stride
    elif scale_fill:
        pad_w, pad_h = 0, 0
        resized_w, resized_h = target_w, target_h
        ratio = (target_w / width, target_h / height)
    dw, dh = pad_w / 2, pad_h / 2

    if (width, height) != (resized_w, resized_h):
        im = cv2.resize(im, (resized_w, resized_h), interpolation=cv2.INTER_LINEAR)
    top, bottom = int(round(dh - 0.1)), int(round(dh + 0.1))
    left, right = int(round(dw - 0.1)), int(round(dw + 0.1))
    im = cv2.copyMakeBorder(im, top, bottom, left, right, cv2.BORDER_CONSTANT, value=color)
    return im, ratio, (dw, dh)


def augment_hsv(im: np.ndarray, hgain: float = 0.5, sgain: float = 0.5, vgain: float = 0.5) -> None:
    """Random hue/saturation/value gains, applied IN PLACE to a BGR image through lookup tables."""
    if not (hgain or sgain or vgain):
        return
    gains = np.random.uniform(-1, 1, 3) * (hgain, sgain, vgain) + 1
    hue, sat, val = cv2.split(cv2.cvtColor(im, cv2.COLOR_BGR2HSV))
    levels = np.arange(256, dtype=np.float64)
    lut_hue = ((levels * gains[0]) % 180).astype(np.uint8)  # OpenCV hue lives in 0..179
    lut_sat = np.clip(levels * gains[1], 0, 255).astype(np.uint8)
    lut_val = np.clip(levels * gains[2], 0, 255).astype(np.uint8)
    jittered = cv2.merge((cv2.LUT(hue, lut_hue), cv2.LUT(sat, lut_sat), cv2.LUT(val, lut_val)))
    cv2.cvtColor(jittered, cv2.COLOR_HSV2BGR, dst=im)


def box_candidates(
    box1: np.ndarray,
    box2: np.ndarray,
    wh_thr: float = 2,
    ar_thr: float = 100,
    area_thr: float = 0.1,
    eps: float = 1e-16,
) -> np.ndarray:
    """Boolean mask of boxes worth keeping after a warp: box1 [4, n] before, box2 [4, n] after.

    A box survives if both sides exceed wh_thr pixels, it kept more than area_thr of its
    (scaled) area, and its aspect ratio stays below ar_thr.
    """
    w1, h1 = box1[2] - box1[0], box1[3] - box1[1]
    w2, h2 = box2[2] - box2[0], box2[3] - box2[1]
    aspect = np.maximum(w2 / (h2 + eps), h2 / (w2 + eps))
    return (w2 > wh_thr) & (h2 > wh_thr) & (w2 * h2 / (w1 * h1 + eps) > area_thr) & (aspect < ar_thr)


def _random_warp_matrix(
    in_h: int, in_w: int, out_h: int, out_w: int,
    degrees: float, translate: float, scale: float, shear: float, perspective: float,
) -> tuple[np.ndarray, float]:
    """3x3 matrix: centre the input, perspective, rotate+scale, shear, translate into the output."""
    centre = np.eye(3)
    centre[0, 2], centre[1, 2] = -in_w / 2, -in_h / 2

    persp = np.eye(3)
    persp[2, 0], persp[2, 1] = random.uniform(-perspective, perspective), random.uniform(-perspective, perspective)

    rotate = np.eye(3)
    angle = random.uniform(-degrees, degrees)
    zoom = random.uniform(1 - scale, 1 + scale)
    rotate[:2] = cv2.getRotationMatrix2D(center=(0, 0), angle=angle, scale=zoom)

    shear_m = np.eye(3)
    shear_m[0, 1] = math.tan(math.radians(random.uniform(-shear, shear)))
    shear_m[1, 0] = math.tan(math.radians(random.uniform(-shear, shear)))

    move = np.eye(3)
    move[0, 2] = random.uniform(0.5 - translate, 0.5 + translate) * out_w
    move[1, 2] = random.uniform(0.5 - translate, 0.5 + translate) * out_h
    return move @ shear_m @ rotate @ persp @ centre, zoom


def _warp_boxes(boxes: np.ndarray, matrix: np.ndarray, perspective: bool, out_w: int, out_h: int) -> np.ndarray:
    """Warp xyxy boxes [n, 4] by transforming their 4 corners and taking the enclosing box."""
    n = len(boxes)
    corners = np.ones((n * 4, 3))
    corners[:, :2] = boxes[:, [0, 1, 2, 3, 0, 3, 2, 1]].reshape(n * 4, 2)  # x1y1, x2y2, x1y2, x2y1
    corners = corners @ matrix.T
    xy = corners[:, :2] / corners[:, 2:3] if perspective else corners[:, :2]
    xy = xy.reshape(n, 8)
    xs, ys = xy[:, 0::2], xy[:, 1::2]
    warped = np.stack((xs.min(1), ys.min(1), xs.max(1), ys.max(1)), axis=1)
    warped[:, [0, 2]] = warped[:, [0, 2]].clip(0, out_w)
    warped[:, [1, 3]] = warped[:, [1, 3]].clip(0, out_h)
    return warped


def random_perspective(
    im: np.ndarray,
    targets: np.ndarray | None = None,
    degrees: float = 10,
    translate: float = 0.1,
    scale: float = 0.1,
    shear: float = 10,
    perspective: float = 0.0,
    border: tuple[int, int] = (0, 0),
) -> tuple[np.ndarray, np.ndarray]:
    """Random rotation/scale/shear/translation (and perspective) of an image and its boxes.

    targets [n, 5] = cls, x1, y1, x2, y2 in pixels. `border` (y, x) grows (positive) or crops
    (negative) the output: a 2s mosaic with border -s/2 comes back as s x s. Boxes that
    the warp shrinks too much or pushes out of view are dropped (see box_candidates).
    """
    out_h, out_w = im.shape[0] + border[0] * 2, im.shape[1] + border[1] * 2
    matrix, zoom = _random_warp_matrix(
        im.shape[0], im.shape[1], out_h, out_w, degrees, translate, scale, shear, perspective
    )
    if border[0] != 0 or border[1] != 0 or not np.allclose(matrix, np.eye(3)):
        if perspective:
            im = cv2.warpPerspective(im, matrix, dsize=(out_w, out_h), borderValue=PAD_COLOR)
        else:
            im = cv2.warpAffine(im, matrix[:2], dsize=(out_w, out_h), borderValue=PAD_COLOR)

    targets = np.zeros((0, 5)) if targets is None else np.array(targets, dtype=np.float64).reshape(-1, 5)
    if len(targets):
        warped = _warp_boxes(targets[:, 1:5], matrix, bool(perspective), out_w, out_h)
        keep = box_candidates(targets[:, 1:5].T * zoom, warped.T, area_thr=0.10)
        targets = targets[keep]
        targets[:, 1:5] = warped[keep]
    return im, targets


def mixup(im: np.ndarray, labels: np.ndarray, im2: np.ndarray, labels2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Blend two same-size images with a Beta(32, 32) weight (about 0.5); keep both label sets."""
    weight = np.random.beta(32.0, 32.0)
    blended = (im.astype(np.float32) * weight + im2.astype(np.float32) * (1 - weight)).astype(np.uint8)
    return blended, np.concatenate((labels, labels2), 0)
