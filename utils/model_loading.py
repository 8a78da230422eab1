"""Rebuild a ready-to-run model from a checkpoint, ours or YOLOv5's (val.py, detect.py, end of training)."""
from __future__ import annotations

from pathlib import Path

import torch

from models.yolo import DetectionModel
from models.yolo_cls import DualModel, build_model
from utils.checkpoints import CheckpointError, inference_state, load_checkpoint


def build_from_checkpoint(ckpt: dict, weights: str | Path, cfg: str | Path | dict | None = None,
                          **kwargs) -> DetectionModel | DualModel:
    """build_model from `cfg`, else the checkpoint's YAML; a YAML that cannot be built names the weights file."""
    try:
        return build_model(cfg or ckpt["model_yaml"], **kwargs)
    except (ValueError, KeyError, TypeError, IndexError) as e:
        if cfg:
            raise
        raise CheckpointError(f"--weights {weights}: its model YAML cannot be built here ({e})") from e


def load_inference_model(weights: str | Path, device: torch.device, trust: bool = False,
                         fuse: bool = True) -> tuple[DetectionModel, dict]:
    """Model in eval mode (EMA weights, Conv+BN fused, no parameter requiring grad) and its checkpoint dict.

    Detection-only and joint (detection + view) checkpoints alike: the model YAML stored in
    the checkpoint says which. `model.view_names` is the view class list, or None.
    """
    ckpt = load_checkpoint(weights, trust=trust)
    model = build_from_checkpoint(ckpt, weights, nc=len(ckpt["names"]))
    model.load_state_dict(inference_state(ckpt))
    model.names = {int(k): v for k, v in ckpt["names"].items()}
    model.view_names = ckpt.get("view_names") or None
    model.to(device).eval()
    model.requires_grad_(False)  # inference only: no autograd bookkeeping, and the summary says 0 gradients
    if fuse:
        model.fuse()
    return model, ckpt
