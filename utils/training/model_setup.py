"""What a trainer is made of: the model (from --cfg or --weights), frozen layers, optimizers, the balancer,
the interference monitor. The train*.py scripts replace some of these factories."""
from __future__ import annotations

import argparse
from typing import Callable

import torch

from models.yolo import DetectionModel
from models.yolo_cls import JointModel, build_model, shared_parameters
from utils.checkpoints import YOLOV5_SOURCE, inference_state, load_checkpoint
from utils.cli import resolve_path
from utils.logger import LOGGER
from utils.model_loading import build_from_checkpoint
from utils.paths import ROOT
from utils.torch_utils import de_parallel, smart_optimizer
from utils.training.balancers import Balancer, PCGrad, UncertaintyWeighting, fixed_weights_from_hyp
from utils.training.interference import InterferenceMonitor
from utils.training.run_setup import load_hyp
from utils.training.task import Task
from utils.weights.transfer import transfer_weights

def build_training_model(opt: argparse.Namespace, nc: int, names: dict, n_views: int | None,
                         device: torch.device) -> tuple[DetectionModel, dict | None]:
    """Model from --cfg, or from the checkpoint in --weights (its weights transferred), or yolov5s untrained.

    --weights may be one of ours or YOLOv5's own (converted by load_checkpoint). As in YOLOv5 the
    model is built from --cfg, else the checkpoint's YAML, with the data's nc and the hyps' anchors;
    with a view task (n_views) it is a JointModel whose view head starts fresh when the checkpoint
    has none.
    """
    ckpt = None
    kwargs: dict = {"view_levels": tuple(opt.view_levels)} if n_views and getattr(opt, "view_levels", None) else {}
    hyp_anchors = None if opt.resume else hyp_anchor_setting(opt)
    if hyp_anchors is not None:
        kwargs["anchors"] = hyp_anchors
    if opt.weights:
        weights = resolve_path(opt.weights)
        ckpt = load_checkpoint(weights, trust=getattr(opt, "trust_weights", False))
        if opt.resume and ckpt.get("source") == YOLOV5_SOURCE:
            raise SystemExit(f"--resume {opt.weights}: a YOLOv5 run cannot be continued here (its optimizer is "
                             f"YOLOv5's); start a new run with --weights {opt.weights}")
        model = build_from_checkpoint(ckpt, weights, resolve_path(opt.cfg) if opt.cfg else None, nc=nc,
                                      n_views=n_views, **kwargs)
        state = inference_state(ckpt) if not opt.resume else ckpt["model"]
        exclude = ("anchor",) if (opt.cfg or hyp_anchors is not None) and not opt.resume else ()
        note_new_classes(ckpt, nc, opt.weights)
        transfer_weights(model, state, opt.weights, exclude=exclude)
    elif opt.cfg:
        model = build_model(resolve_path(opt.cfg), nc=nc, n_views=n_views, **kwargs)
    else:
        LOGGER.info("No --cfg or --weights given: building yolov5s from models/yolov5s.yaml, untrained "
                    "(YOLOv5 would download pretrained weights; this project never downloads anything)")
        model = build_model(ROOT / "models" / "yolov5s.yaml", nc=nc, n_views=n_views, **kwargs)
    model.names = dict(names)
    return model.to(device), ckpt


def hyp_anchor_setting(opt: argparse.Namespace) -> int | list | None:
    """The hyps' `anchors` entry (YOLOv5: anchors per level, or the anchors themselves), or None."""
    hyp = getattr(opt, "hyp", None)
    if not hyp:
        return None
    return load_hyp(hyp).get("anchors")


def note_new_classes(ckpt: dict, nc: int, source: str) -> None:
    """Say so when the Detect output convolutions cannot be transferred because the class count differs."""
    old = len(ckpt.get("names") or {})
    if old and old != nc:
        LOGGER.info(f"{source} predicts {old} classes, this run {nc}: its Detect output convolutions start fresh")


def freeze_layers(model: torch.nn.Module, freeze: list[int]) -> None:
    """--freeze: stop gradients for layers model.0..N-1 (one number) or the listed layer indices.

    The indices are the detector's YAML layers (of the detector network in a DualModel).
    """
    indices = range(freeze[0]) if len(freeze) == 1 else freeze
    prefixes = tuple(f"model.{i}." for i in indices)
    for name, param in getattr(model, "detector", model).named_parameters():
        param.requires_grad = True
        if prefixes and name.startswith(prefixes):
            LOGGER.info(f"freezing {name}")
            param.requires_grad = False


def make_optimizers(model: torch.nn.Module, opt: argparse.Namespace, hyp: dict) -> dict[str, torch.optim.Optimizer]:
    """train.py's optimizer: YOLOv5's three parameter groups over the whole model (train_dual.py adds one per network)."""
    return {"model": smart_optimizer(model, opt.optimizer, hyp["lr0"], hyp["momentum"], hyp["weight_decay"])}


BalancerFactory = Callable[[dict, tuple[str, ...], torch.nn.Module], Balancer]


def default_balancer(hyp: dict, task_names: tuple[str, ...], model: torch.nn.Module) -> Balancer:
    """train.py's baseline: fixed task weights det_task / view_task from the hyps."""
    return fixed_weights_from_hyp(hyp, task_names)


def balancer_factory(opt: argparse.Namespace) -> BalancerFactory:
    """The balancer --balancer names: fixed (default), uncertainty or pcgrad (GradNorm: train_gradnorm.py)."""
    choice = getattr(opt, "balancer", "fixed") or "fixed"

    def make(hyp: dict, task_names: tuple[str, ...], model: torch.nn.Module) -> Balancer:
        if choice == "fixed" or "view" not in task_names:
            if choice != "fixed":
                LOGGER.warning(f"WARNING ⚠️ --balancer {choice} ignored: {opt.data} has one task (no cls_names)")
            return default_balancer(hyp, task_names, model)
        if choice == "uncertainty":
            return UncertaintyWeighting(task_names, lr=opt.balancer_lr)
        if choice == "pcgrad":
            core = de_parallel(model)
            if not isinstance(core, JointModel):
                raise SystemExit(f"--balancer pcgrad: {type(core).__name__} shares no parameter between the tasks")
            initial = fixed_weights_from_hyp(hyp, task_names).weight_dict()
            return PCGrad(task_names, shared_parameters(core), list(core.parameters()), initial, seed=opt.seed)
        raise SystemExit(f"--balancer {choice}: expected fixed, uncertainty or pcgrad")

    return make


def make_interference_monitor(opt: argparse.Namespace, model: torch.nn.Module, task: Task) -> InterferenceMonitor | None:
    """The --interference-every monitor, or None when off or when the model shares nothing between the tasks."""
    every = getattr(opt, "interference_every", 0) or 0
    if every <= 0:
        return None
    if not task.view_names:
        LOGGER.warning(f"WARNING ⚠️ --interference-every ignored: {opt.data} has one task (no cls_names)")
        return None
    if not isinstance(de_parallel(model), JointModel):
        LOGGER.info("--interference-every: the two networks share no parameter, nothing to measure")
        return None
    monitor = InterferenceMonitor(model, task.task_names, every)
    LOGGER.info(f"Gradient interference measured every {every} iterations on {len(monitor.params)} shared tensors")
    return monitor
