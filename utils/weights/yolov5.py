"""YOLOv5's own checkpoints (yolov5s.pt, a best.pt/last.pt of its train.py): recognise, read safely, flatten.

YOLOv5 pickles whole `DetectionModel` modules in half precision. utils/weights/restricted.py reads
them as inert records; this module walks those records into what the rest of the project uses: a
float32 state dict with YOLOv5's positional key names (`model.0.conv.weight` ... `model.24.anchors`),
the model YAML dict the model was built from, and the class names. Files from YOLOv5's repository
name `models.yolo.*` / `models.common.*`; files from the `yolov5` pip package name `yolov5.models.*`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import torch

from utils.weights.restricted import InertRecord, WeightsFormatError, load_restricted

YOLOV5_MODULES = ("models.yolo", "models.common")  # where YOLOv5's model classes live in its repository
YOLOV5_PIP_PREFIX = "yolov5.models."  # the same classes in the pip package
DETECTION_CLASSES = ("DetectionModel", "Model")  # v7.0 and master; releases before v7.0 name it Model
SUPPORTED_ACTIVATIONS = (None, "nn.SiLU()")
DERIVED_BUFFERS = {"Detect": {"anchor_grid"}}  # caches some releases registered as buffers; rebuilt from anchors


def names_yolov5_classes(global_names: Iterable[str]) -> bool:
    """Whether a pickle's globals include YOLOv5's model classes (the mark of a YOLOv5 checkpoint)."""
    return any(n.rpartition(".")[0] in YOLOV5_MODULES or n.startswith(YOLOV5_PIP_PREFIX) for n in global_names)


@dataclass
class YOLOv5Weights:
    """What a YOLOv5 checkpoint holds that this project can use, as plain data."""

    model_yaml: dict
    names: dict[int, str]
    model_state: dict[str, torch.Tensor]  # float32 (integer buffers kept as they are)
    ema_state: dict[str, torch.Tensor] | None
    ema_updates: int
    epoch: int
    date: str | None
    model_class: str  # the pickled class, e.g. models.yolo.DetectionModel


def _float32(tensor: torch.Tensor) -> torch.Tensor:
    tensor = tensor.detach()
    return tensor.to(torch.float32).clone() if tensor.is_floating_point() else tensor.clone()


def module_state(record: InertRecord, prefix: str = "") -> dict[str, torch.Tensor]:
    """The state dict nn.Module.state_dict() would give for the module the record describes.

    Parameters, then persistent buffers, then each child under `name.`. YOLOv5's Detect keeps its
    strides as a plain attribute where ours registers a buffer, so it is added as `<detect>.stride`;
    an `anchor_grid` buffer (anchors x stride, cached by some releases) is left out.
    """
    state: dict[str, torch.Tensor] = {}
    skip = set(record.get("_non_persistent_buffers_set") or ()) | DERIVED_BUFFERS.get(record.class_name, set())
    for group in ("_parameters", "_buffers"):
        for name, tensor in (record.get(group) or {}).items():
            if tensor is None or (group == "_buffers" and name in skip):
                continue
            if not isinstance(tensor, torch.Tensor):
                raise WeightsFormatError(f"{prefix}{name} is a {type(tensor).__name__}, not a tensor")
            state[prefix + name] = _float32(tensor)
    stride = record.get("stride")
    if record.class_name == "Detect" and isinstance(stride, torch.Tensor) and f"{prefix}stride" not in state:
        state[prefix + "stride"] = _float32(stride)
    for name, child in (record.get("_modules") or {}).items():
        if child is None:
            continue
        if not isinstance(child, InertRecord):
            raise WeightsFormatError(f"submodule {prefix}{name} is a {type(child).__name__}, not a module")
        state.update(module_state(child, f"{prefix}{name}."))
    return state


def _plain(value: Any, where: str) -> Any:
    """Check that the model YAML is plain data (dicts, lists, strings, numbers) and copy it."""
    if isinstance(value, dict):
        return {k: _plain(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, where) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise WeightsFormatError(f"the model YAML holds a {type(value).__name__} at {where}, expected plain data")


def model_yaml_of(record: InertRecord) -> dict:
    """The YAML dict stored on the model, checked to be plain data (its layers are checked when the model is built)."""
    raw = record.get("yaml")
    if not isinstance(raw, dict) or not {"backbone", "head", "nc"} <= set(raw):
        raise WeightsFormatError("the model carries no YOLOv5 model YAML (yaml with nc, backbone, head)")
    cfg = _plain(raw, "yaml")
    if cfg.get("activation") not in SUPPORTED_ACTIVATIONS:
        raise WeightsFormatError(f"its model YAML sets activation {cfg['activation']!r}; only SiLU (the default) is "
                                 f"supported")
    return cfg


def class_names(record: InertRecord, nc: int) -> dict[int, str]:
    """The model's `names` (a list or a dict in YOLOv5) as {index: name}; class0.. when absent."""
    raw = record.get("names")
    if isinstance(raw, dict):
        return {int(k): str(v) for k, v in raw.items()}
    if isinstance(raw, (list, tuple)):
        return {i: str(v) for i, v in enumerate(raw)}
    return {i: f"class{i}" for i in range(nc)}


def read_yolov5_weights(path: Path, global_names: list[str] | None = None) -> YOLOv5Weights:
    """Read a YOLOv5 detection checkpoint without running code from it (see utils/weights/restricted.py)."""
    top = load_restricted(path, global_names)
    if not isinstance(top, dict) or not isinstance(top.get("model"), InertRecord):
        raise WeightsFormatError("expected YOLOv5's checkpoint dict with a pickled model under 'model'")
    model = top["model"]
    if model.class_name not in DETECTION_CLASSES:
        raise WeightsFormatError(f"its model is YOLOv5's {model.class_name}; only detection models "
                                 f"({' or '.join(DETECTION_CLASSES)}) can be loaded")
    ema = top.get("ema")
    cfg = model_yaml_of(model)
    names = class_names(model, int(cfg["nc"]))
    cfg["nc"] = len(names)
    return YOLOv5Weights(
        model_yaml=cfg,
        names=names,
        model_state=module_state(model),
        ema_state=module_state(ema) if isinstance(ema, InertRecord) else None,
        ema_updates=int(top.get("updates") or 0),
        epoch=int(top["epoch"]) if isinstance(top.get("epoch"), int) else -1,
        date=top["date"] if isinstance(top.get("date"), str) else None,
        model_class=model.qualified_name,
    )

