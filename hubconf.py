"""torch.hub entry points, as YOLOv5's: a model from a local file, ready for images.

    import torch
    model = torch.hub.load('.', 'custom', path='runs/train/exp/weights/best.pt', source='local')  # or .onnx
    results = model('image.png', size=320)
    results.pandas().xyxy[0], results.views[0]

Only `source='local'` (a clone of this repository) and local files: nothing is downloaded, so
yolov5n ... yolov5x build untrained models and refuse pretrained=True. Without torch.hub:
`from utils.api import Model`.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

dependencies = ["torch", "torchvision", "numpy", "cv2", "yaml", "pandas"]  # checked by torch.hub before loading


def _quiet(verbose: bool) -> None:
    """_verbose=False: only warnings and errors from the project's logger, as YOLOv5's hub models."""
    from utils.logger import LOGGER

    LOGGER.setLevel(logging.INFO if verbose else logging.WARNING)


def custom(path: str | Path = "", autoshape: bool = True, _verbose: bool = True, device: str | None = None) -> Any:
    """A model from a file: ours (.pt detection, joint, dual), YOLOv5's own .pt, or an export (.onnx, .torchscript).

    autoshape=True: utils.api.Model (file paths, numpy arrays, PIL images in; Detections out).
    autoshape=False: the loaded backend (utils/backends/), which takes [B, 3, H, W] float tensors in [0, 1]
    and returns decoded boxes and view probabilities, like YOLOv5's DetectMultiBackend.
    """
    from utils.api import Model

    _quiet(_verbose)
    if not path:
        raise ValueError("custom() needs path=, a model file (.pt, .onnx or .torchscript)")
    model = Model(path, device=device)
    return model if autoshape else model.backend


def _untrained(name: str, pretrained: bool, channels: int, classes: int, autoshape: bool, _verbose: bool,
               device: str | None) -> Any:
    """yolov5n ... yolov5x: never downloaded; pretrained=False builds the untrained model from models/<name>.yaml."""
    from models.yolo import DetectionModel
    from utils.api import Model
    from utils.api.model import as_device
    from utils.backends import ModuleBackend

    _quiet(_verbose)
    if pretrained:
        raise ValueError(f"{name}(pretrained=True) would download YOLOv5's weights, which this project never "
                         f"does: use custom(path='{name}.pt') with a file you have, or pretrained=False (untrained)")
    if channels != 3:
        raise ValueError(f"{name}: channels={channels}; the Python API feeds 3-channel images")
    dev = as_device(device)
    model = DetectionModel(f"{name}.yaml", nc=classes).to(dev).eval()
    backend = ModuleBackend(model, dev, weights=f"{name}.yaml (untrained)")
    return Model(backend) if autoshape else model


def yolov5n(pretrained: bool = True, channels: int = 3, classes: int = 80, autoshape: bool = True,
            _verbose: bool = True, device: str | None = None) -> Any:
    return _untrained("yolov5n", pretrained, channels, classes, autoshape, _verbose, device)


def yolov5s(pretrained: bool = True, channels: int = 3, classes: int = 80, autoshape: bool = True,
            _verbose: bool = True, device: str | None = None) -> Any:
    return _untrained("yolov5s", pretrained, channels, classes, autoshape, _verbose, device)


def yolov5m(pretrained: bool = True, channels: int = 3, classes: int = 80, autoshape: bool = True,
            _verbose: bool = True, device: str | None = None) -> Any:
    return _untrained("yolov5m", pretrained, channels, classes, autoshape, _verbose, device)


def yolov5l(pretrained: bool = True, channels: int = 3, classes: int = 80, autoshape: bool = True,
            _verbose: bool = True, device: str | None = None) -> Any:
    return _untrained("yolov5l", pretrained, channels, classes, autoshape, _verbose, device)


def yolov5x(pretrained: bool = True, channels: int = 3, classes: int = 80, autoshape: bool = True,
            _verbose: bool = True, device: str | None = None) -> Any:
    return _untrained("yolov5x", pretrained, channels, classes, autoshape, _verbose, device)
