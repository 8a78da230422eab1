"""A checkpoint's predictions for chosen images: the view probabilities and the boxes after NMS.

The model is loaded with utils.model_loading (the loader val.py and detect.py use). Images are
read with cv2 and letterboxed to a square, so no loader cache is written beside the dataset.
Boxes come out in the image's own pixels, as cleanlab expects them.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import torch

from utils.boxes import non_max_suppression, scale_boxes
from utils.cli import check_img_size
from utils.data.augmentations import letterbox
from utils.model_loading import load_inference_model

PRED_CONF = 0.01  # boxes below this carry no evidence cleanlab uses (its own thresholds are 0.5 and 0.95)
PRED_IOU = 0.6  # val.py's NMS IoU
PRED_MAX_DET = 100


@dataclass
class ImagePrediction:
    """One image: boxes [M, 6] = x1, y1, x2, y2, conf, cls (pixels, class-aware NMS, one row per box
    and class above PRED_CONF), and the view probabilities [K] (None without a view head)."""

    boxes: np.ndarray
    view_probs: np.ndarray | None


@dataclass
class ModelInfo:
    """What the checkpoint knows about its classes and training data."""

    names: dict[int, str]
    view_names: list[str] | None
    trained_on: str | None  # the dataset YAML it was trained with, from its options
    imgsz: int | None  # the image size it was trained at


def checkpoint_info(weights: str | Path, trust: bool = False) -> ModelInfo:
    """Classes, views and training data of a checkpoint, without building the model."""
    from utils.checkpoints import load_checkpoint

    ckpt = load_checkpoint(weights, trust=trust)
    opt = ckpt.get("opt") or {}
    opt = opt if isinstance(opt, dict) else {}
    imgsz = opt.get("imgsz")
    return ModelInfo({int(k): str(v) for k, v in ckpt["names"].items()}, list(ckpt.get("view_names") or []) or None,
                     opt.get("data"), int(imgsz) if isinstance(imgsz, (int, float)) else None)


def _batch(paths: Sequence[str], size: int, stride: int) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """Square letterboxed RGB batch [B, 3, size, size] in [0, 1] and each image's (h, w)."""
    images, shapes = [], []
    for path in paths:
        im0 = cv2.imread(path)
        if im0 is None:
            raise FileNotFoundError(f"image {path} cannot be read")
        shapes.append(im0.shape[:2])
        img = letterbox(im0, size, stride=stride, auto=False)[0]
        images.append(np.ascontiguousarray(img.transpose(2, 0, 1)[::-1]))
    return torch.from_numpy(np.stack(images)).float() / 255, shapes


@torch.inference_mode()
def predict_images(
    weights: str | Path, paths: Sequence[str], imgsz: int = 640, batch_size: int = 16, device: str = "",
    trust: bool = False, conf_thres: float = PRED_CONF, iou_thres: float = PRED_IOU,
) -> list[ImagePrediction]:
    """Predictions for `paths`, in order. Unreadable images must have been left out by the caller."""
    from utils.torch_utils import select_device

    dev = select_device(device)
    model, _ = load_inference_model(weights, dev, trust=trust)
    stride = max(int(model.stride.max()), 32)
    size = check_img_size(imgsz, stride)
    out: list[ImagePrediction] = []
    for start in range(0, len(paths), batch_size):
        x, shapes = _batch(paths[start:start + batch_size], size, stride)
        outputs = model(x.to(dev))
        decoded = model.detect.decode(outputs.det)
        preds = non_max_suppression(decoded, conf_thres, iou_thres, multi_label=True, max_det=PRED_MAX_DET)
        probs = outputs.view_logits.float().softmax(1).cpu().numpy() if outputs.view_logits is not None else None
        for i, (pred, shape) in enumerate(zip(preds, shapes)):
            pred = pred.clone()
            pred[:, :4] = scale_boxes(x.shape[2:], pred[:, :4], shape)
            out.append(ImagePrediction(pred.cpu().numpy().astype(np.float64), None if probs is None else probs[i]))
    return out
