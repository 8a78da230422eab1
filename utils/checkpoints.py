"""Checkpoints as plain data: written atomically, read without running pickled code.

A checkpoint is a dict of tensors, numbers, strings, lists and dicts only, so that
`torch.load(path, weights_only=True)` opens it. Opening a weights file must not be
able to run code. YOLOv5's own checkpoints (pickled modules) are read by the restricted
reader in utils/weights/ and converted to the same plain-data shape, whatever --trust-weights
says; any other file that needs arbitrary unpickling is refused unless the user trusts it.
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
from utils.weights.restricted import UnsafeWeightsError, WeightsFormatError, globals_in_file
from utils.weights.yolov5 import names_yolov5_classes, read_yolov5_weights

CHECKPOINT_FORMAT = "yolomed-checkpoint-v1"
YOLOV5_SOURCE = "yolov5"  # the `source` of a checkpoint converted from a YOLOv5 file


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

    A YOLOv5 checkpoint is recognised by the classes its pickle names and converted by the
    restricted reader. Any other file that needs code to unpickle is refused: no weights file runs
    code here. `trust` (the `--trust-weights` flag) is accepted for compatibility and changes nothing.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"--weights {path}: file not found (this project never downloads weights)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        global_names = _pickle_globals_or_none(path)
        if global_names is not None and names_yolov5_classes(global_names):
            return load_yolov5_checkpoint(path, global_names)
        raise CheckpointError(
            f"--weights {path}: refused, the file needs arbitrary code to load (not a plain-data checkpoint) "
            f"and no weights file runs code here, with or without --trust-weights; re-save its state_dict with "
            f"torch.save where it was made. ({str(e).splitlines()[0]})"
        ) from e
    except (RuntimeError, EOFError, OSError) as e:
        raise CheckpointError(f"--weights {path}: not a readable checkpoint ({e})") from e
    if not isinstance(ckpt, dict) or "model" not in ckpt or "model_yaml" not in ckpt:
        raise CheckpointError(
            f"--weights {path}: not a checkpoint of this project or of YOLOv5 (expected a dict with 'model' "
            f"and 'model_yaml', or YOLOv5's pickled DetectionModel)"
        )
    return ckpt


def _pickle_globals_or_none(path: Path) -> list[str] | None:
    """The globals the file's pickle names, or None when it cannot be listed (not a zip-format file)."""
    try:
        return globals_in_file(path)
    except WeightsFormatError:
        return None


def load_yolov5_checkpoint(path: Path, global_names: list[str] | None = None) -> dict:
    """A YOLOv5 checkpoint read without running code from it, as this project's plain-data checkpoint.

    EMA weights are kept beside the model's (inference_state prefers them); the optimizer is dropped,
    since it is YOLOv5's and cannot continue here.
    """
    try:
        weights = read_yolov5_weights(path, global_names)
    except UnsafeWeightsError as e:
        raise CheckpointError(
            f"--weights {path}: refused, the file names {', '.join(e.refused)}, which a YOLOv5 checkpoint never "
            f"needs (only tensors, plain containers and module records are read; nothing from the file was run)"
        ) from e
    except (WeightsFormatError, pickle.UnpicklingError, RuntimeError, EOFError, OSError, RecursionError) as e:
        raise CheckpointError(f"--weights {path}: not a usable YOLOv5 checkpoint ({str(e).splitlines()[0]})") from e
    ckpt = build_checkpoint(model_yaml=weights.model_yaml, model_state=weights.model_state, names=weights.names,
                            epoch=weights.epoch, best_fitness=0.0, ema_state=weights.ema_state,
                            ema_updates=weights.ema_updates,
                            extra={"source": YOLOV5_SOURCE, "source_class": weights.model_class})
    if weights.date:
        ckpt["date"] = weights.date
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
