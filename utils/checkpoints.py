"""Checkpoints as plain data: written atomically, read without running pickled code.

A checkpoint is a dict of tensors, numbers, strings, lists and dicts only, so that
`torch.load(path, weights_only=True)` opens it. Opening a weights file must not be
able to run code; a file that needs arbitrary unpickling is refused unless the user
explicitly trusts it.
"""
from __future__ import annotations

import os
import pickle
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from utils.logger import LOGGER

CHECKPOINT_FORMAT = "yolomed-checkpoint-v1"


class CheckpointError(RuntimeError):
    """A weights file that cannot be read safely or is not one of ours."""


def to_plain(value: Any) -> Any:
    """Convert options/hyps to types `weights_only` loading accepts (Paths, numpy scalars, tuples)."""
    if isinstance(value, dict):
        return {str(k) if not isinstance(k, int) else k: to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, torch.Tensor):
        return value
    if hasattr(value, "item"):  # numpy scalar
        return value.item()
    return str(value)


FAULT_SAVE_DELAY_ENV = "YOLOMED_FAULT_SAVE_DELAY"  # seconds; set only by the SIGKILL tests


def save_checkpoint(ckpt: dict, path: str | Path) -> None:
    """Write `ckpt` to a temp file in the same folder, fsync, then rename over `path`.

    A crash at any moment leaves either the old file or the new one, never half of one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(ckpt, f)
            f.flush()
            os.fsync(f.fileno())
        if FAULT_SAVE_DELAY_ENV in os.environ:  # crash tests: widen the window between write and rename
            time.sleep(float(os.environ[FAULT_SAVE_DELAY_ENV]))
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def load_checkpoint(path: str | Path, trust: bool = False) -> dict:
    """Load a checkpoint with `weights_only=True`; refuse anything that needs code to unpickle.

    `trust=True` (the `--trust-weights` flag) lifts the restriction for files the user vouches for.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"--weights {path}: file not found (this project never downloads weights)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=not trust)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"--weights {path}: refused, the file needs arbitrary code to load (not a plain-data "
            f"checkpoint). Pass --trust-weights only if you trust its origin. ({str(e).splitlines()[0]})"
        ) from e
    except (RuntimeError, EOFError, OSError) as e:
        raise CheckpointError(f"--weights {path}: not a readable checkpoint ({e})") from e
    if not isinstance(ckpt, dict) or "model" not in ckpt or "model_yaml" not in ckpt:
        raise CheckpointError(
            f"--weights {path}: not a checkpoint of this project (expected a dict with 'model' and "
            f"'model_yaml'; YOLOv5's own .pt files pickle whole modules and cannot be loaded safely)"
        )
    return ckpt


def build_checkpoint(
    *,
    model_yaml: dict,
    model_state: dict,
    names: dict,
    epoch: int,
    best_fitness: float,
    ema_state: dict | None = None,
    ema_updates: int = 0,
    optimizer_state: dict | None = None,
    opt: dict | None = None,
    hyp: dict | None = None,
    extra: dict | None = None,
) -> dict:
    """Assemble the plain-data checkpoint dict (state dicts, YAML dict, names, training state)."""
    ckpt = {
        "format": CHECKPOINT_FORMAT,
        "epoch": int(epoch),
        "best_fitness": float(best_fitness),
        "model_yaml": to_plain(model_yaml),
        "model": {k: v.detach().cpu() for k, v in model_state.items()},
        "ema": None if ema_state is None else {k: v.detach().cpu() for k, v in ema_state.items()},
        "ema_updates": int(ema_updates),
        "optimizer": optimizer_state,
        "names": {int(k): str(v) for k, v in names.items()},
        "opt": to_plain(opt or {}),
        "hyp": to_plain(hyp or {}),
        "date": datetime.now(timezone.utc).isoformat(),
    }
    if extra:
        ckpt.update(to_plain(extra))
    return ckpt


def strip_optimizer(path: str | Path) -> None:
    """Drop optimizer state and keep only the EMA weights, as YOLOv5 does once training ends."""
    ckpt = load_checkpoint(path)
    if ckpt.get("ema") is not None:
        ckpt["model"] = ckpt["ema"]
    ckpt.update(ema=None, optimizer=None, epoch=-1)
    save_checkpoint(ckpt, path)
    LOGGER.info(f"Optimizer stripped from {path}, {Path(path).stat().st_size / 1e6:.1f}MB")


def inference_state(ckpt: dict) -> dict:
    """The weights to run: the EMA if the checkpoint has one, else the raw model."""
    return ckpt["ema"] if ckpt.get("ema") is not None else ckpt["model"]
