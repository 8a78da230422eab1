"""What a trainer is made of: the model (from --cfg or --weights), frozen layers, optimizers, the balancer,
the interference monitor. The train*.py scripts replace some of these factories."""
from __future__ import annotations

import argparse
from typing import Callable

import torch

from models.yolo import DetectionModel
from models.yolo_cls import JointModel, build_model, shared_parameters
from utils.checkpoints import inference_state, load_checkpoint
from utils.cli import resolve_path
from utils.logger import LOGGER
from utils.paths import ROOT
from utils.torch_utils import de_parallel, smart_optimizer
from utils.training.balancers import Balancer, PCGrad, UncertaintyWeighting, fixed_weights_from_hyp
from utils.training.interference import InterferenceMonitor
from utils.training.task import Task

def build_training_model(opt: argparse.Namespace, nc: int, names: dict, n_views: int | None,
                         device: torch.device) -> tuple[DetectionModel, dict | None]:
    """Model from --cfg, or from the checkpoint in --weights (its weights transferred), or yolov5s untrained.

    With a view task (n_views) the model is a JointModel; a detection-only checkpoint still
    initialises its detector, since both share the same state-dict keys.
    """
    ckpt = None
    view_kwargs = {"view_levels": tuple(opt.view_levels)} if n_views and getattr(opt, "view_levels", None) else {}
    if opt.weights:
        ckpt = load_checkpoint(resolve_path(opt.weights), trust=getattr(opt, "trust_weights", False))
        cfg = resolve_path(opt.cfg) if opt.cfg else ckpt["model_yaml"]
        model = build_model(cfg, nc=nc, n_views=n_views, **view_kwargs)
        state = inference_state(ckpt) if not opt.resume else ckpt["model"]
        own = model.state_dict()
        transferable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
        model.load_state_dict(transferable, strict=False)
        LOGGER.info(f"Transferred {len(transferable)}/{len(own)} items from {opt.weights}")
    elif opt.cfg:
        model = build_model(resolve_path(opt.cfg), nc=nc, n_views=n_views, **view_kwargs)
    else:
        LOGGER.info("No --cfg or --weights given: building yolov5s from models/yolov5s.yaml, untrained "
                    "(YOLOv5 would download pretrained weights; this project never downloads anything)")
        model = build_model(ROOT / "models" / "yolov5s.yaml", nc=nc, n_views=n_views, **view_kwargs)
    model.names = dict(names)
    return model.to(device), ckpt


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
