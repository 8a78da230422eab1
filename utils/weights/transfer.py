"""YOLOv5's transfer rule, the one way every training script moves checkpoint tensors into a new model.

A tensor is loaded when its name exists in both, its shape matches, and the name contains none of
the excluded substrings (YOLOv5 excludes 'anchor' when --cfg or the hyps set the anchors). The log
line is YOLOv5's, `Transferred X/Y items from FILE` with Y the new model's state-dict size; a second
line says which parts start fresh and why (a new view head, Detect outputs for another nc, ...).
"""
from __future__ import annotations

from collections import Counter

import torch
from torch import nn

from utils.logger import LOGGER

MAX_FRESH_GROUPS = 6  # parts named in the 'fresh' line before it says 'and N more'


def _part(key: str) -> str:
    """The part a state-dict key belongs to: the YAML layer (`model.24`) or the top-level module (`view_head`)."""
    parts = key.split(".")
    return ".".join(parts[:2]) if parts[0] == "model" and len(parts) > 2 else parts[0]


def _why_fresh(key: str, state: dict, exclude: tuple[str, ...]) -> str:
    if key not in state:
        return "not in the file"
    if any(x in key for x in exclude):
        return "excluded"
    return "other shape"


def transfer_weights(model: nn.Module, state: dict[str, torch.Tensor], source: str, *,
                     exclude: tuple[str, ...] = (), strip_prefix: str = "") -> int:
    """Load the tensors of `state` that fit `model` (YOLOv5's rule), log it, and return how many were loaded.

    strip_prefix: removed from the checkpoint's keys first (a dual checkpoint's `detector.`).
    """
    own = model.state_dict()
    picked = {k[len(strip_prefix):] if strip_prefix and k.startswith(strip_prefix) else k: v for k, v in state.items()}
    transferable = {k: v for k, v in picked.items()
                    if k in own and own[k].shape == v.shape and not any(x in k for x in exclude)}
    model.load_state_dict(transferable, strict=False)
    LOGGER.info(f"Transferred {len(transferable)}/{len(own)} items from {source}")
    fresh = Counter((_part(k), _why_fresh(k, picked, exclude)) for k in own if k not in transferable)
    if fresh:
        groups = [f"{part} ({count}, {why})" for (part, why), count in fresh.items()]
        more = f" and {len(groups) - MAX_FRESH_GROUPS} more" if len(groups) > MAX_FRESH_GROUPS else ""
        LOGGER.info(f"Fresh (not transferred): {', '.join(groups[:MAX_FRESH_GROUPS])}{more}")
    return len(transferable)
