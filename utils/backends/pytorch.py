"""PyTorch models as backends: an in-memory model (training's EMA) and a checkpoint file (ours or YOLOv5's .pt)."""
from __future__ import annotations

import contextlib
from pathlib import Path

import torch
from torch import nn

from models.yolo import ModelOutputs
from utils.backends.base import Backend, Predictions
from utils.model_loading import load_inference_model
from utils.torch_utils import de_parallel


class ModuleBackend(Backend):
    """Adapter for a model already in memory: runs it as it is (no fusing, no mode change) and keeps the raw maps.

    Training validates its EMA model through this adapter; amp_dtype runs the forward under autocast.
    """

    format = "pytorch"

    def __init__(self, model: nn.Module, device: torch.device, *, view_names: list[str] | None = None,
                 half: bool = False, amp_dtype: torch.dtype | None = None, weights: str | Path = "model") -> None:
        core = de_parallel(model)
        super().__init__(weights, device, names=dict(getattr(core, "names", {})), view_names=view_names,
                         stride=max(int(core.stride.max()), 32), half=half)
        self.model = model
        self.detect = core.detect
        self.amp_dtype = amp_dtype

    def _run(self, images: torch.Tensor) -> Predictions:
        if self.half:
            images = images.half()
        autocast = (torch.autocast(self.device.type, dtype=self.amp_dtype) if self.amp_dtype is not None
                    else contextlib.nullcontext())
        with autocast:
            outputs = self.model(images)
        det = [m.float() for m in outputs.det]  # pixel coordinates up to 640+ need more than float16's 11 bits
        logits = None if outputs.view_logits is None else outputs.view_logits.float()
        probs = logits.softmax(1) if logits is not None and self.view_names else None
        return Predictions(self.detect.decode(det), probs, ModelOutputs(det=det, view_logits=logits))


class PyTorchBackend(ModuleBackend):
    """A checkpoint file: ours (detection, joint, dual) or YOLOv5's own .pt, in eval mode with Conv+BN fused."""

    def __init__(self, weights: str | Path, device: torch.device, *, trust: bool = False, half: bool = False,
                 fuse: bool = True) -> None:
        model, _ = load_inference_model(weights, device, trust=trust, fuse=fuse)
        if half:
            model.half()
        super().__init__(model, device, view_names=model.view_names, half=half, weights=weights)
