"""One way to run a model file, whatever its format: load_backend picks the backend from the file suffix.

val.py, detect.py, the Python API (utils/api/) and the benchmarks share it. A new format is one
Backend subclass (utils/backends/base.py) and one entry in EXPORTED.
"""
from __future__ import annotations

from pathlib import Path

import torch

from utils.backends.base import Backend, Predictions
from utils.backends.onnx_runtime import OnnxRuntimeBackend, SessionSettings
from utils.backends.pytorch import ModuleBackend, PyTorchBackend
from utils.backends.torchscript import TorchScriptBackend
from utils.logger import LOGGER

EXPORTED: dict[str, type[Backend]] = {".onnx": OnnxRuntimeBackend, ".torchscript": TorchScriptBackend}

__all__ = ["Backend", "Predictions", "ModuleBackend", "PyTorchBackend", "TorchScriptBackend", "OnnxRuntimeBackend",
           "SessionSettings", "EXPORTED", "load_backend"]


def load_backend(weights: str | Path, device: torch.device, *, trust: bool = False, half: bool = False,
                 settings: SessionSettings | None = None) -> Backend:
    """The backend for `weights`: .onnx and .torchscript by suffix, anything else read as a checkpoint (.pt).

    half applies to checkpoints (an exported file carries its own precision); settings to ONNX Runtime.
    """
    suffix = Path(weights).suffix.lower()
    if half and suffix in EXPORTED:
        LOGGER.info(f"--half: not applied to {Path(weights).name}, an exported file keeps the precision it was "
                    f"exported in (export.py --half on a GPU)")
    if suffix == ".onnx":
        return OnnxRuntimeBackend(weights, device, settings)
    if suffix in EXPORTED:
        return EXPORTED[suffix](weights, device)
    return PyTorchBackend(weights, device, trust=trust, half=half)
