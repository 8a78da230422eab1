"""Checkpoints for the export tests, made without training: YOLOv5's trained med detector, alone and with views.

- detect: yolov5n-med-e20.pt itself (YOLOv5's own file, 20 epochs on the med train split), so boxes are
  a trained detector's and the comparisons after NMS mean something.
- joint: a JointModel whose detector is that file's (transferred whole) and whose view head is random
  (seeded), its last layer scaled up so that view probabilities are far from uniform and their arg-max
  is not a near-tie.
- dual: a DualModel with that detector and a random (seeded) yolov5n-cls-thin classifier, its BatchNorm
  statistics and last layer made non-trivial in the same way.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import torch

from models.yolo_cls import DualModel, JointModel
from tests.helpers import MED_NAMES, MED_VIEWS
from tests.yolov5_files import MED_E20, fixture
from utils.checkpoints import build_checkpoint, inference_state, load_checkpoint, save_checkpoint

LOGIT_SCALE = 20.0  # the random view layer's weights times this: probabilities up to ~0.9 instead of ~0.34


def _sharpen(layer: torch.nn.Linear) -> None:
    with torch.no_grad():
        layer.weight.mul_(LOGIT_SCALE)


def _save(model: torch.nn.Module, path: Path) -> Path:
    ckpt = build_checkpoint(model_yaml=model.yaml, model_state=model.state_dict(), names=dict(enumerate(MED_NAMES)),
                            epoch=-1, best_fitness=0.0, extra={"view_names": MED_VIEWS})
    save_checkpoint(ckpt, path)
    return path


def make_checkpoints(folder: Path) -> dict[str, Path]:
    """detect.pt (a copy of YOLOv5's file), joint.pt and dual.pt in folder (writable, so exports land beside them)."""
    folder.mkdir(parents=True, exist_ok=True)
    detect = folder / "detect.pt"
    shutil.copyfile(fixture(MED_E20), detect)
    ckpt = load_checkpoint(detect)
    state = inference_state(ckpt)
    torch.manual_seed(0)
    joint = JointModel(ckpt["model_yaml"], nc=len(MED_NAMES), n_views=len(MED_VIEWS))
    joint.load_state_dict(state, strict=False)
    _sharpen(joint.view_head.classifier)
    dual = DualModel(ckpt["model_yaml"], nc=len(MED_NAMES), n_views=len(MED_VIEWS))
    dual.detector.load_state_dict(state)
    _sharpen(dual.classifier.classify.linear)
    with torch.no_grad():
        for module in dual.classifier.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 2.0)
    return {"detect": detect, "joint": _save(joint, folder / "joint.pt"), "dual": _save(dual, folder / "dual.pt")}
