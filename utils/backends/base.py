"""What val.py, detect.py and the Python API run a model through, whatever the file format.

A backend takes a float image batch [B, 3, H, W] in [0, 1] and returns Predictions: decoded boxes as
YOLOv5's output0 ([B, N, 5 + nc], float32) and the view probabilities ([B, K]) or None. A file exported
without --dynamic runs only at its batch and image size: the image size is checked with an error that
names it, and any batch is run in chunks of the exported batch (the last one padded), so callers never
care about the batch. A new format is one subclass with a `_run`, registered in utils/backends/__init__.py.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch

from models.yolo import ModelOutputs
from utils.export.metadata import ExportedFileError


@dataclass(frozen=True)
class Predictions:
    """One batch's outputs; `raw` only from in-memory PyTorch models (the maps training takes its loss on)."""

    decoded: torch.Tensor  # [B, N, 5 + nc] float32: cx, cy, w, h (input pixels), objectness, class scores
    view_probs: torch.Tensor | None = None  # [B, K] float32
    raw: ModelOutputs | None = None

    def view_scores(self) -> torch.Tensor | None:
        """Logits when known, else log-probabilities: the same softmax, argmax and cross-entropy."""
        if self.raw is not None and self.raw.view_logits is not None:
            return self.raw.view_logits.float()
        if self.view_probs is None:
            return None
        return self.view_probs.clamp_min(torch.finfo(self.view_probs.dtype).tiny).log()


class ViewPrediction(NamedTuple):
    """One image's view: the most probable one and all K probabilities."""

    index: int
    name: str
    confidence: float
    probabilities: list[float]


def predicted_view(view_probs: torch.Tensor | None, view_names: list | None, image: int) -> ViewPrediction | None:
    """The most probable view of one image of the batch, from the view probabilities [B, K]; None without views."""
    if view_probs is None or not view_names:
        return None
    probs = view_probs[image].float()
    index = int(probs.argmax())
    return ViewPrediction(index, str(view_names[index]), float(probs[index]), probs.tolist())


class Backend:
    """A loaded model of any format: names, view names, stride, fixed input or dynamic, and a call."""

    format = "base"

    def __init__(self, weights: str | Path, device: torch.device, *, names: dict[int, str],
                 view_names: list[str] | None, stride: int, fixed_shape: tuple[int, int, int, int] | None = None,
                 half: bool = False) -> None:
        self.weights = Path(weights)
        self.device = device
        self.names = {int(k): str(v) for k, v in names.items()}
        self.view_names = list(view_names) if view_names else None
        self.stride = int(stride)
        self.fixed_shape = fixed_shape  # (batch, 3, height, width) of a fixed-size export; None = any
        self.half = half  # the model computes in float16 (inputs are cast here)

    @property
    def dynamic(self) -> bool:
        return self.fixed_shape is None

    @property
    def imgsz(self) -> tuple[int, int] | None:
        """(height, width) the file runs at, or None when any size runs."""
        return None if self.fixed_shape is None else (self.fixed_shape[2], self.fixed_shape[3])

    @property
    def batch_size(self) -> int | None:
        """The batch the file was exported at (inputs are chunked and padded to it), or None."""
        return None if self.fixed_shape is None else self.fixed_shape[0]

    def check_imgsz(self, height: int, width: int) -> None:
        """Stop with one sentence naming the file and its size when a fixed-size export cannot run height x width."""
        if self.imgsz is not None and (height, width) != self.imgsz:
            h, w = self.imgsz
            raise ExportedFileError(
                f"--weights {self.weights} was exported for {h}x{w} images (batch {self.fixed_shape[0]}) and cannot "
                f"run {height}x{width}: use --imgsz {h}{'' if h == w else f' {w}'}, or export again with --dynamic")

    def require_views(self, purpose: str) -> None:
        """Stop with one sentence when something needs view probabilities from a detection-only model."""
        if not self.view_names:
            raise ExportedFileError(f"--weights {self.weights} is a detection-only model (no view output), but "
                                    f"{purpose} needs a joint or dual model's view probabilities")

    def __call__(self, images: torch.Tensor) -> Predictions:
        """images [B, 3, H, W] float in [0, 1] -> Predictions (float32, on self.device)."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images [B, 3, H, W], got {tuple(images.shape)}")
        self.check_imgsz(int(images.shape[2]), int(images.shape[3]))
        if self.fixed_shape is None or images.shape[0] == self.fixed_shape[0]:
            return self._run(images)
        size = self.fixed_shape[0]
        parts = []
        for start in range(0, images.shape[0], size):
            chunk = images[start:start + size]
            short = size - chunk.shape[0]
            if short:
                chunk = torch.cat((chunk, chunk.new_zeros((short, *chunk.shape[1:]))))
            parts.append(self._run(chunk))
        n = images.shape[0]
        decoded = torch.cat([p.decoded for p in parts])[:n]
        views = None if parts[0].view_probs is None else torch.cat([p.view_probs for p in parts])[:n]
        return Predictions(decoded, views)

    def _run(self, images: torch.Tensor) -> Predictions:
        """One forward at a shape the model accepts."""
        raise NotImplementedError

    def warmup(self, height: int = 640, width: int = 640) -> None:
        """One forward on zeros, so the first real image is not timed with the runtime's start-up."""
        h, w = self.imgsz or (height, width)
        self(torch.zeros(self.batch_size or 1, 3, h, w, device=self.device))

    def describe(self) -> str:
        """One log line: format, task, size."""
        size = "dynamic shapes" if self.dynamic else f"fixed input {tuple(self.fixed_shape)}"
        views = f", views {self.view_names}" if self.view_names else ""
        return f"{self.format}: {self.weights.name}, {len(self.names)} classes{views}, stride {self.stride}, {size}"
