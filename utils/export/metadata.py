"""What an exported file says about itself: class and view names, stride, input size, and how it was exported.

One definition serves the writers (utils/export/) and the readers (utils/backends/), so the two cannot
drift. ONNX keeps it in the model's metadata_props (string values, YOLOv5's `stride` and `names` among
them); TorchScript in the extra file config.txt as JSON (YOLOv5's `shape`, `stride` and `names` among
them). Files exported by YOLOv5 itself carry only those keys and are read too.
"""
from __future__ import annotations

import ast
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from utils.checkpoints import CheckpointError

EXPORT_FORMAT = "yolomed-export-v1"  # bumped when the layout of an exported file changes
DETECTION_OUTPUT = "output0"  # YOLOv5's name: [B, N, 5 + nc] decoded boxes
VIEW_OUTPUT = "view_probs"  # ours: [B, K] view probabilities (joint and dual models)
INPUT_NAME = "images"  # YOLOv5's name: [B, 3, H, W] float in [0, 1]


class ExportedFileError(CheckpointError):
    """An exported model file that cannot be used as asked; the message names the file and the problem."""


@dataclass(frozen=True)
class ExportMetadata:
    """Everything val.py, detect.py and the Python API need to run an exported file."""

    names: dict[int, str]
    stride: int
    imgsz: tuple[int, int]  # (height, width) it was exported at
    batch: int  # batch size it was exported at
    dynamic: bool  # True: any batch and image size run
    half: bool = False  # float16 input and outputs
    task: str = "detect"  # detect, joint or dual
    view_names: list[str] | None = None
    format: str = EXPORT_FORMAT

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (self.batch, 3, *self.imgsz)

    def onnx_props(self) -> dict[str, str]:
        """metadata_props entries: YOLOv5's `stride` and `names` (str of a dict), then ours."""
        props = {"stride": str(self.stride), "names": str(self.names), "format": self.format, "task": self.task,
                 "imgsz": str(list(self.imgsz)), "batch": str(self.batch), "dynamic": str(self.dynamic),
                 "half": str(self.half)}
        if self.view_names:
            props["view_names"] = str(list(self.view_names))
        return props

    def config_json(self) -> str:
        """TorchScript's config.txt: YOLOv5's `shape`, `stride`, `names`, then ours."""
        config = {"shape": list(self.shape), "stride": self.stride, "names": self.names, "format": self.format,
                  "task": self.task, "imgsz": list(self.imgsz), "batch": self.batch, "dynamic": self.dynamic,
                  "half": self.half}
        if self.view_names:
            config["view_names"] = list(self.view_names)
        return json.dumps(config)

    @classmethod
    def from_onnx_props(cls, props: dict[str, str], file: Path, input_shape: list) -> ExportMetadata:
        """Parse metadata_props; input_shape (ints, or names for dynamic axes) fills in what YOLOv5 files lack."""
        values = {key: _literal(props[key], key, file) for key in props
                  if key in ("stride", "names", "imgsz", "batch", "dynamic", "half", "view_names")}
        values.update({key: props[key] for key in ("format", "task") if key in props})
        return cls._build(values, file, input_shape)

    @classmethod
    def from_config_json(cls, text: str, file: Path) -> ExportMetadata:
        """Parse config.txt (JSON); a YOLOv5 file gives only shape, stride and names."""
        try:
            values = json.loads(text)
        except json.JSONDecodeError as e:
            raise ExportedFileError(f"--weights {file}: its config.txt is not JSON ({e})") from e
        if not isinstance(values, dict):
            raise ExportedFileError(f"--weights {file}: its config.txt is not a JSON object")
        return cls._build(values, file, values.get("shape"))

    @classmethod
    def _build(cls, values: dict[str, Any], file: Path, shape: list | None) -> ExportMetadata:
        missing = [key for key in ("stride", "names") if key not in values]
        if missing:
            raise ExportedFileError(f"--weights {file}: its metadata lacks {' and '.join(missing)} "
                                    f"(not exported by export.py or YOLOv5's export.py)")
        fixed = isinstance(shape, (list, tuple)) and len(shape) == 4 and all(isinstance(d, int) for d in shape)
        imgsz = values.get("imgsz") or (shape[2:] if fixed else [640, 640])
        try:
            return cls(names={int(k): str(v) for k, v in dict(values["names"]).items()},
                       stride=int(values["stride"]), imgsz=(int(imgsz[0]), int(imgsz[1])),
                       batch=int(values.get("batch") or (shape[0] if fixed else 1)),
                       dynamic=bool(values["dynamic"]) if "dynamic" in values else not fixed,
                       half=bool(values.get("half", False)), task=str(values.get("task", "detect")),
                       view_names=[str(v) for v in values["view_names"]] if values.get("view_names") else None,
                       format=str(values.get("format", "yolov5")))
        except (TypeError, ValueError, IndexError) as e:
            raise ExportedFileError(f"--weights {file}: its metadata cannot be read ({e})") from e


def _literal(text: str, key: str, file: Path) -> Any:
    """A metadata value written as a Python literal (YOLOv5 writes names as str(dict)); never evaluated as code."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError) as e:
        raise ExportedFileError(f"--weights {file}: its metadata '{key}' is not a literal ({text[:60]!r})") from e
