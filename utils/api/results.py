"""What the Python API returns for a batch of images: YOLOv5's Detections, plus each image's view."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch

from utils.backends.base import ViewPrediction
from utils.boxes import xyxy2xywh
from utils.logger import LOGGER
from utils.paths import increment_path
from utils.plots import colors, draw_box_label, draw_view_label

XYXY_COLUMNS = ["xmin", "ymin", "xmax", "ymax", "confidence", "class", "name"]  # YOLOv5's DataFrame columns
XYWH_COLUMNS = ["xcenter", "ycenter", "width", "height", "confidence", "class", "name"]


@dataclass
class PandasResults:
    """Detections as DataFrames, one per image (YOLOv5's `results.pandas().xyxy[i]`), and one row per image of views."""

    xyxy: list[pd.DataFrame]
    xyxyn: list[pd.DataFrame]
    xywh: list[pd.DataFrame]
    xywhn: list[pd.DataFrame]
    views: pd.DataFrame  # image, view, confidence, then one probability column per view; empty without views


class Detections:
    """Per-image boxes in original pixels (x1, y1, x2, y2, conf, cls rows), views, timings; print/save/render."""

    def __init__(self, ims: list[np.ndarray], pred: list[torch.Tensor], files: list[str], *, names: dict[int, str],
                 views: list[ViewPrediction | None], view_names: list[str] | None, times_ms: tuple[float, ...],
                 shape: tuple[int, ...]) -> None:
        self.ims = ims  # RGB uint8 arrays as given
        self.pred = [p.cpu() for p in pred]
        self.files = files
        self.names = names
        self.views = views
        self.view_names = view_names
        self.t = times_ms  # pre-process, inference, NMS per image
        self.s = shape  # the batch shape the model ran
        self.n = len(pred)
        gains = [torch.tensor([im.shape[1], im.shape[0]] * 2 + [1, 1], dtype=torch.float32) for im in ims]
        self.xyxy = self.pred
        self.xywh = [torch.cat((xyxy2xywh(p[:, :4]), p[:, 4:]), 1) for p in self.pred]
        self.xyxyn = [p / g for p, g in zip(self.xyxy, gains)]
        self.xywhn = [p / g for p, g in zip(self.xywh, gains)]

    def __len__(self) -> int:
        return self.n

    def pandas(self) -> PandasResults:
        """DataFrames as YOLOv5's: columns xmin..ymax (or xcenter..height), confidence, class, name."""
        def frames(boxes: list[torch.Tensor], columns: list[str]) -> list[pd.DataFrame]:
            out = []
            for p in boxes:
                rows = [[*r[:5], int(r[5]), self.names[int(r[5])]] for r in p.tolist()]
                out.append(pd.DataFrame(rows, columns=columns))
            return out

        view_rows = [[self.files[i], v.name, v.confidence, *v.probabilities] for i, v in enumerate(self.views) if v]
        view_columns = ["image", "view", "confidence", *(self.view_names or [])]
        return PandasResults(frames(self.xyxy, XYXY_COLUMNS), frames(self.xyxyn, XYXY_COLUMNS),
                             frames(self.xywh, XYWH_COLUMNS), frames(self.xywhn, XYWH_COLUMNS),
                             pd.DataFrame(view_rows, columns=view_columns))

    def tolist(self) -> list[Detections]:
        """One Detections per image."""
        return [Detections([self.ims[i]], [self.pred[i]], [self.files[i]], names=self.names, views=[self.views[i]],
                           view_names=self.view_names, times_ms=self.t, shape=self.s) for i in range(self.n)]

    def _summary(self, i: int) -> str:
        pred, im = self.pred[i], self.ims[i]
        line = f"image {i + 1}/{self.n}: {im.shape[0]}x{im.shape[1]} "
        if len(pred):
            counts = torch.bincount(pred[:, 5].long(), minlength=len(self.names)).tolist()
            line += "".join(f"{n} {self.names[c]}{'s' * (n > 1)}, " for c, n in enumerate(counts) if n)
        else:
            line += "(no detections), "
        view = self.views[i]
        return line + (f"view {view.name} {view.confidence:.2f}" if view else "").rstrip(", ")

    def __str__(self) -> str:
        lines = [self._summary(i) for i in range(self.n)]
        lines.append("Speed: %.1fms pre-process, %.1fms inference, %.1fms NMS per image at shape %s"
                     % (*self.t, tuple(self.s)))
        return "\n".join(lines)

    def print(self) -> None:
        """To stdout, whatever the logger's level (hub models made with _verbose=False log only warnings)."""
        print(str(self))

    def render(self, labels: bool = True) -> list[np.ndarray]:
        """Copies of the images (RGB) with boxes, labels and the view drawn, as detect.py draws them."""
        out = []
        for i, im in enumerate(self.ims):
            bgr = np.ascontiguousarray(im[..., ::-1])
            for *xyxy, conf, cls in reversed(self.pred[i].tolist()):
                label = f"{self.names[int(cls)]} {conf:.2f}" if labels else None
                draw_box_label(bgr, xyxy, label, colors(int(cls), True))
            if self.views[i] is not None and labels:
                draw_view_label(bgr, f"{self.views[i].name} {self.views[i].confidence:.2f}")
            out.append(np.ascontiguousarray(bgr[..., ::-1]))
        return out

    def save(self, labels: bool = True, save_dir: str | Path = "runs/detect/exp", exist_ok: bool = False) -> Path:
        """Write the rendered images to save_dir (incremented: exp2, exp3, ... unless exist_ok); returns the folder."""
        folder = increment_path(save_dir, exist_ok=exist_ok, mkdir=True)
        for file, im in zip(self.files, self.render(labels)):
            cv2.imwrite(str(folder / file), im[..., ::-1])
        LOGGER.info(f"Saved {self.n} image{'s' * (self.n > 1)} to {folder}")
        return folder

    def __repr__(self) -> str:
        return f"<Detections: {self.n} image{'s' * (self.n != 1)}>\n{self}"
