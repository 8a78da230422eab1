"""The Python API YOLOv5 users know (its AutoShape): images in, Detections out, for any model file.

    from utils.api import Model
    model = Model("runs/train/exp/weights/best.onnx")      # or best.pt, best.torchscript, YOLOv5's .pt
    results = model(["a.png", "b.png"], size=320)
    results.print(); results.pandas().xyxy[0]; results.views[0]; results.save()

hubconf.py returns the same class from torch.hub.load('.', 'custom', path=..., source='local').
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from utils.api.images import load_images
from utils.api.results import Detections
from utils.backends import Backend, load_backend
from utils.backends.base import predicted_view
from utils.boxes import non_max_suppression, scale_boxes
from utils.data.augmentations import letterbox
from utils.torch_utils import select_device, time_sync

DEFAULT_SIZE = 640  # YOLOv5's AutoShape default; an export without --dynamic runs at its own size instead


def as_device(device: str | torch.device | None) -> torch.device:
    """torch.hub's device argument: None picks as --device '' does (the first GPU, else the CPU)."""
    return device if isinstance(device, torch.device) else select_device("" if device is None else str(device))


class Model:
    """Run a model file on file paths, numpy arrays (RGB, HWC) or PIL images; returns Detections.

    Attributes as YOLOv5's AutoShape: conf, iou, classes, agnostic, multi_label, max_det. `backend` is the
    loaded file (utils/backends/); names, view_names and stride are its own.
    """

    conf = 0.25  # NMS confidence threshold
    iou = 0.45  # NMS IoU threshold
    agnostic = False  # class-agnostic NMS
    multi_label = False  # several labels per box
    classes: list[int] | None = None  # keep only these classes, e.g. [0, 2]
    max_det = 1000  # maximum detections per image

    def __init__(self, weights: str | Path | Backend, device: str | torch.device | None = None, *,
                 trust: bool = False, need_views: bool = False) -> None:
        """weights: a file (.pt ours or YOLOv5's, .onnx, .torchscript) or a loaded Backend.

        need_views: stop at once, naming the file, if it has no view output (a detection-only model).
        """
        self.backend = weights if isinstance(weights, Backend) else load_backend(weights, as_device(device), trust=trust)
        if need_views:
            self.backend.require_views("Model(need_views=True)")
        self.names = self.backend.names
        self.view_names = self.backend.view_names
        self.stride = self.backend.stride

    @property
    def device(self) -> torch.device:
        return self.backend.device

    def input_shape(self, arrays: list[np.ndarray], size: int | tuple[int, int] | None) -> tuple[int, int]:
        """(height, width) of the batch: the export's own size, else the largest image scaled to `size`, rounded
        up to the stride (one shape for the whole batch, as YOLOv5's AutoShape)."""
        if self.backend.imgsz is not None:
            if size is not None:
                height, width = (size, size) if isinstance(size, int) else size
                self.backend.check_imgsz(int(height), int(width))
            return self.backend.imgsz
        size = DEFAULT_SIZE if size is None else size
        target = max(size) if isinstance(size, (tuple, list)) else size
        gains = [target / max(a.shape[:2]) for a in arrays]
        height = max(a.shape[0] * g for a, g in zip(arrays, gains))
        width = max(a.shape[1] * g for a, g in zip(arrays, gains))
        return (math.ceil(height / self.stride) * self.stride, math.ceil(width / self.stride) * self.stride)

    @torch.inference_mode()
    def __call__(self, ims: Any, size: int | tuple[int, int] | None = None) -> Detections:
        """Detect on one image or a list; size is the longest side fed to the model (default 640, or the export's)."""
        t0 = time_sync()
        arrays, files = load_images(ims)
        shape = self.input_shape(arrays, size)
        batch = np.stack([letterbox(a, shape, stride=self.stride, auto=False)[0] for a in arrays])
        x = torch.from_numpy(batch).to(self.device).permute(0, 3, 1, 2).float() / 255
        t1 = time_sync()
        out = self.backend(x)
        t2 = time_sync()
        pred = non_max_suppression(out.decoded, self.conf, self.iou, self.classes, self.agnostic, self.multi_label,
                                   max_det=self.max_det)
        for p, a in zip(pred, arrays):
            p[:, :4] = scale_boxes(shape, p[:, :4], a.shape[:2])
        t3 = time_sync()
        views = [predicted_view(out.view_probs, self.view_names, i) for i in range(len(arrays))]
        per_image = tuple((b - a) * 1e3 / len(arrays) for a, b in ((t0, t1), (t1, t2), (t2, t3)))
        return Detections(arrays, pred, files, names=self.names, views=views, view_names=self.view_names,
                          times_ms=per_image, shape=tuple(x.shape))

    def __repr__(self) -> str:
        return f"Model({self.backend.describe()})"
