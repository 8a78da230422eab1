"""Rebuild a ready-to-run model from one of this project's checkpoints (val.py, detect.py, end of training)."""
from __future__ import annotations

from pathlib import Path

import torch

from models.yolo import DetectionModel
from models.yolo_cls import build_model
from utils.checkpoints import inference_state, load_checkpoint


def load_inference_model(weights: str | Path, device: torch.device, trust: bool = False, fuse: bool = True) -> tuple[DetectionModel, dict]:
    """Model in eval mode (EMA weights, Conv+BN fused, no parameter requiring grad) and its checkpoint dict.

    Detection-only and joint (detection + view) checkpoints alike: the model YAML stored in
    the checkpoint says which. `model.view_names` is the view class list, or None.
    """
    ckpt = load_checkpoint(weights, trust=trust)
    model = build_model(ckpt["model_yaml"], nc=len(ckpt["names"]))
    model.load_state_dict(inference_state(ckpt))
    model.names = {int(k): v for k, v in ckpt["names"].items()}
    model.view_names = ckpt.get("view_names") or None
    model.to(device).eval()
    model.requires_grad_(False)  # inference only: no autograd bookkeeping, and the summary says 0 gradients
    if fuse:
        model.fuse()
    return model, ckpt
