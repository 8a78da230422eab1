"""The one training loop every train*.py drives.

`train(opt)` sets up a run folder, data, model, optimizer, EMA and loss the way YOLOv5
does, then runs epochs of warmup/accumulation/EMA updates, validates the EMA, writes
results.csv and checkpoints atomically, and finally validates best.pt with plots.
"""
from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import yaml
from torch.optim import lr_scheduler
from tqdm import tqdm

from models.yolo import DetectionModel, ModelOutputs
from models.yolo_cls import JointModel, build_model, shared_parameters, view_loss
from utils.training.autoanchor import check_anchors
from utils.checkpoints import build_checkpoint, inference_state, load_checkpoint, save_checkpoint, strip_optimizer
from utils.cli import check_unsupported, resolve_path
from utils.data.loaders import create_dataloader
from utils.data.dataset_yaml import check_dataset
from utils.training.distributed import (DistContext, all_reduce_mean, any_rank, broadcast_object,
                               check_ranks_agree, cleanup_distributed, context_from_env, parameter_checksum,
                               per_rank_batch_size, setup_distributed, sync_batchnorm, wrap_distributed)
from utils.training.balancers import Balancer, PCGrad, UncertaintyWeighting, fixed_weights_from_hyp
from utils.training.best_checkpoint import PerNetworkBest, improves_best
from utils.training.history import TrainingHistory
from utils.logger import LOGGER
from utils.training.loss import ComputeLoss
from utils.evaluation.metrics import fitness
from utils.model_loading import load_inference_model
from utils.paths import ROOT, increment_path
from utils.training.interference import InterferenceMonitor
from utils.plots import plot_images, plot_labels
from utils.training.plots import plot_gradnorm, plot_interference, plot_results
from utils.data.synthetic import ensure_synthetic
from utils.torch_utils import PARAM_GROUP_NAMES, ModelEMA, de_parallel, init_seeds, linear_lr, one_cycle, select_device, smart_optimizer
from utils.evaluation.validation import evaluate

NOMINAL_BATCH = 64  # YOLOv5 accumulates gradients up to this batch size
RESULTS_KEYS = (
    "train/box_loss", "train/obj_loss", "train/cls_loss",
    "metrics/precision", "metrics/recall", "metrics/mAP_0.5", "metrics/mAP_0.5:0.95",
    "val/box_loss", "val/obj_loss", "val/cls_loss",
    "x/lr0", "x/lr1", "x/lr2",
)
VIEW_RESULTS_KEYS = ("train/view_loss", "val/view_loss", "metrics/view_accuracy", "metrics/view_balanced_accuracy",
                     "x/w_det", "x/w_view")


@dataclass
class RunFolder:
    """Where one training run writes: YOLOv5's runs/train/exp*/ layout."""

    save_dir: Path

    @property
    def weights(self) -> Path:
        return self.save_dir / "weights"

    @property
    def last(self) -> Path:
        return self.weights / "last.pt"

    @property
    def best(self) -> Path:
        return self.weights / "best.pt"

    @property
    def results_csv(self) -> Path:
        return self.save_dir / "results.csv"


def append_results_row(csv: Path, epoch: int, values: list[float], keys: tuple[str, ...] = RESULTS_KEYS) -> None:
    """One results.csv line in YOLOv5's layout: 20-character right-aligned fields, header on first write.

    YOLOv5's 14 columns come first, in order; a view task appends its columns after them.
    """
    keys = ("epoch", *keys)
    header = "" if csv.exists() else ("%20s," * len(keys) % keys).rstrip(",") + "\n"
    with open(csv, "a") as f:
        f.write(header + ("%20.5g," * len(keys) % (epoch, *values)).rstrip(",") + "\n")


def load_hyp(hyp: str | dict) -> dict:
    """Hyperparameters from a YAML path (bare names are looked up under data/hyps) or a dict."""
    if isinstance(hyp, dict):
        return dict(hyp)
    path = Path(resolve_path(hyp))
    if not path.is_file():
        path = ROOT / "data" / "hyps" / Path(hyp).name
    if not path.is_file():
        raise SystemExit(f"--hyp {hyp}: file not found")
    loaded = yaml.safe_load(path.read_text())
    if not isinstance(loaded, dict):
        raise SystemExit(f"--hyp {hyp}: expected a mapping of hyperparameters")
    return loaded


def find_last_checkpoint(search_dir: Path = ROOT / "runs") -> Path:
    """The most recently written last.pt under runs/ (what a bare --resume continues)."""
    candidates = sorted(search_dir.glob("**/last*.pt"), key=lambda p: p.stat().st_mtime)
    if not candidates:
        raise SystemExit(f"--resume: no last.pt found under {search_dir}")
    return candidates[-1]


def restore_resume_options(opt: argparse.Namespace) -> tuple[argparse.Namespace, dict]:
    """--resume [path]: reload opt.yaml two levels above last.pt and continue that run in place."""
    last = Path(opt.resume) if isinstance(opt.resume, str) else find_last_checkpoint(Path(opt.project).parent)
    if not last.is_file():
        raise SystemExit(f"--resume {last}: file not found")
    opt_yaml = last.parent.parent / "opt.yaml"
    if not opt_yaml.is_file():
        raise SystemExit(f"--resume {last}: {opt_yaml} not found, cannot restore the run's options")
    saved = yaml.safe_load(opt_yaml.read_text())
    restored = argparse.Namespace(**{**vars(opt), **saved})
    restored.weights, restored.resume, restored.cfg = str(last), True, ""
    restored.save_dir = str(last.parent.parent)
    LOGGER.info(f"Resuming training from {last}")
    return restored, load_hyp(restored.hyp)


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


def scale_hyp_for_model(hyp: dict, nl: int, nc: int, imgsz: int) -> dict:
    """YOLOv5's loss-gain scaling by detection levels, classes and image size."""
    hyp = dict(hyp)
    hyp["box"] *= 3 / nl
    hyp["cls"] *= nc / 80 * 3 / nl
    hyp["obj"] *= (imgsz / 640) ** 2 * 3 / nl
    return hyp


def check_img_size(imgsz: int, stride: int) -> int:
    """Round --imgsz up to a multiple of the model's largest stride, with a warning if it changed."""
    new = max(math.ceil(imgsz / stride) * stride, stride)
    if new != imgsz:
        LOGGER.warning(f"WARNING ⚠️ --imgsz {imgsz} must be a multiple of max stride {stride}, updating to {new}")
    return new


MIXING_AUGMENTATIONS = ("mosaic", "mixup", "copy_paste")
FITNESS_CHOICES = ("detection", "joint", "per-network")


def disable_mixing_augmentations(hyp: dict) -> dict:
    """With a view task, images stitched from several files have no view: switch mosaic/mixup/copy-paste off."""
    active = [k for k in MIXING_AUGMENTATIONS if hyp.get(k, 0) > 0]
    if not active:
        return hyp
    LOGGER.warning(f"WARNING ⚠️ {', '.join(f'{k}={hyp[k]}' for k in active)} switched off: an image mixed from "
                   f"several files has no image-level view label (the dataset declares cls_names)")
    return {**hyp, **{k: 0.0 for k in active}}


def training_fitness(results: tuple, view: dict | None, mode: str) -> float:
    """best.pt criterion: YOLOv5's 0.1·mAP50 + 0.9·mAP50-95, or with --fitness joint the mean of that and
    the view balanced accuracy (so neither task can win best.pt alone)."""
    detection = float(fitness(np.array(results[:4]).reshape(1, -1))[0])
    if mode == "joint" and view is not None:
        return 0.5 * detection + 0.5 * view["view_balanced_accuracy"]
    return detection


def per_network_best(opt: argparse.Namespace, model: torch.nn.Module) -> PerNetworkBest | None:
    """The --fitness per-network tracker, or None for the other criteria; refused for a model with shared parts."""
    if getattr(opt, "fitness", "detection") != "per-network":
        return None
    parts = getattr(de_parallel(model), "independent_parts", None)
    if not parts:
        raise SystemExit(f"--fitness per-network: {type(de_parallel(model)).__name__} has no independent networks")
    return PerNetworkBest(parts)


def part_fitness(detection_fit: float, view: dict | None) -> dict[str, float]:
    """Per-network fitness for --fitness per-network: the detector's YOLOv5 fitness, the classifier's view
    balanced accuracy (the view half of --fitness joint)."""
    return {"detector": float(detection_fit), "classifier": float((view or {}).get("view_balanced_accuracy", 0.0))}


def per_network_checkpoint(ckpt: dict, best_parts: PerNetworkBest) -> dict:
    """best.pt of a per-network run: the EMA with each network from its best epoch, no optimizer (the
    networks come from different steps; --resume reads last.pt)."""
    weights = best_parts.merged(ckpt["ema"] if ckpt.get("ema") is not None else ckpt["model"])
    return {**ckpt, "model": weights, "ema": weights, "optimizer": None, "best_parts": best_parts.state_dict()}


def best_ema_state(path: Path) -> dict | None:
    """The inference weights of an existing best.pt (a resumed per-network run keeps its networks' bests)."""
    return inference_state(load_checkpoint(path)) if path.is_file() else None


def setup_run(opt: argparse.Namespace, ctx: DistContext = DistContext()) -> tuple[argparse.Namespace, dict, RunFolder]:
    """Resolve --resume, hyps and the run folder; write opt.yaml (hyp.yaml follows once the data is known).

    Under DDP rank 0 picks (and creates) the folder and the other ranks are told its name.
    """
    check_unsupported(opt)
    if getattr(opt, "fitness", "detection") not in FITNESS_CHOICES:
        raise SystemExit(f"--fitness {opt.fitness}: expected one of {', '.join(FITNESS_CHOICES)}")
    if opt.fitness == "per-network" and getattr(opt, "script", "train.py") != "train_dual.py":
        raise SystemExit(f"--fitness per-network: keeps each independent network at its own best epoch, which "
                         f"needs train_dual.py ({getattr(opt, 'script', 'train.py')} trains one shared network); "
                         f"use --fitness detection or joint")
    if opt.resume:
        opt, hyp = restore_resume_options(opt)
    else:
        hyp = load_hyp(opt.hyp)
        if ctx.is_main:
            opt.save_dir = str(increment_path(Path(opt.project) / opt.name, exist_ok=opt.exist_ok))
        opt.save_dir = broadcast_object(getattr(opt, "save_dir", None))
    run = RunFolder(Path(opt.save_dir))
    if ctx.is_main:
        run.weights.mkdir(parents=True, exist_ok=True)
        if not opt.resume:
            (run.save_dir / "opt.yaml").write_text(yaml.safe_dump(vars(opt), sort_keys=False))
    return opt, hyp, run


@dataclass
class Task:
    """What the run learns: detection classes and, when the YAML has cls_names, image views."""

    nc: int
    names: dict
    view_names: list | None

    @property
    def n_views(self) -> int | None:
        return len(self.view_names) if self.view_names else None

    @property
    def task_names(self) -> tuple[str, ...]:
        return ("det", "view") if self.view_names else ("det",)

    @property
    def loss_names(self) -> tuple[str, ...]:
        return ("box_loss", "obj_loss", "cls_loss", "view_loss")[: 4 if self.view_names else 3]

    @property
    def results_keys(self) -> tuple[str, ...]:
        return RESULTS_KEYS + VIEW_RESULTS_KEYS if self.view_names else RESULTS_KEYS


def load_task(opt: argparse.Namespace) -> tuple[dict, Task]:
    """The dataset dict and the task it declares (single-cls folds every class into one)."""
    ensure_synthetic(opt.data)
    data = check_dataset(opt.data)
    nc = 1 if opt.single_cls else int(data["nc"])
    names = {0: "item"} if opt.single_cls and len(data["names"]) != 1 else data["names"]
    return data, Task(nc=nc, names=names, view_names=data.get("cls_names") or None)


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


def train(opt: argparse.Namespace, make_balancer: BalancerFactory | None = None,
          make_model: Callable | None = None, make_optims: Callable | None = None) -> dict:
    """Train per `opt` (YOLOv5's train.py options); returns the final validation metrics.

    The train_*.py scripts customise three things and nothing else: `make_balancer(hyp,
    task_names, model)` (how task losses combine; default fixed weights from the hyps),
    `make_model(opt, nc, names, n_views, device)` (the model; default detection or joint) and
    `make_optims(model, opt, hyp)` (a dict of optimizers; default YOLOv5's single one).
    """
    ctx = context_from_env()  # torchrun sets it; one process otherwise
    if ctx.enabled:
        device = setup_distributed(ctx, opt.device, opt.batch_size)
    else:  # a bad --device fails before a run folder exists; a resumed run uses its own saved --device
        device = None if opt.resume else select_device(opt.device, batch_size=opt.batch_size)
    try:
        return _train(opt, ctx, device, make_balancer, make_model, make_optims)
    finally:
        cleanup_distributed()


def _train(opt: argparse.Namespace, ctx: DistContext, device: torch.device | None,
           make_balancer: BalancerFactory | None, make_model: Callable | None, make_optims: Callable | None) -> dict:
    opt, hyp, run = setup_run(opt, ctx)
    device = device or select_device(opt.device, batch_size=opt.batch_size)
    main = ctx.is_main  # only rank 0 writes files, validates and logs
    init_seeds(opt.seed + ctx.rank, deterministic=getattr(opt, "deterministic", False))  # DDP: weights come from rank 0
    plots = not opt.noplots and main
    data, task = load_task(opt)
    if task.view_names:
        hyp = disable_mixing_augmentations(hyp)
    if not opt.resume and main:
        (run.save_dir / "hyp.yaml").write_text(yaml.safe_dump(hyp, sort_keys=False))
    LOGGER.info("hyperparameters: " + ", ".join(f"{k}={v}" for k, v in hyp.items()))

    model, ckpt = (make_model or build_training_model)(opt, task.nc, task.names, task.n_views, device)
    model = sync_batchnorm(model, bool(getattr(opt, "sync_bn", False)), ctx, device)
    model.info()
    channels_last = bool(getattr(opt, "channels_last", False))
    if channels_last:  # NHWC: about 20 % faster forward+backward on this CPU (oneDNN); same model, float rounding may differ
        model.to(memory_format=torch.channels_last)
    freeze_layers(model, opt.freeze)
    head = model.detect
    grid_stride = max(int(head.stride.max()), 32)
    imgsz = check_img_size(opt.imgsz, grid_stride)

    batch_size = opt.batch_size  # the total over all processes: accumulation and weight decay follow it
    rank_batch_size = per_rank_batch_size(batch_size, ctx)
    accumulate = max(round(NOMINAL_BATCH / batch_size), 1)
    hyp["weight_decay"] *= batch_size * accumulate / NOMINAL_BATCH
    optimizers = (make_optims or make_optimizers)(model, opt, hyp)
    lf = one_cycle(1, hyp["lrf"], opt.epochs) if opt.cos_lr else linear_lr(hyp["lrf"], opt.epochs)
    schedulers = [lr_scheduler.LambdaLR(o, lr_lambda=lf) for o in optimizers.values()]
    ema = ModelEMA(model)
    balancer = (make_balancer or balancer_factory(opt))(hyp, task.task_names, model)

    best_parts = per_network_best(opt, model)
    start_epoch, best_fitness = 0, 0.0
    if ckpt is not None and opt.resume:
        start_epoch, best_fitness = resume_state(ckpt, optimizers, ema, balancer, opt)
        if best_parts is not None:
            best_parts.load_state_dict(ckpt.get("best_parts") or {}, best_ema_state(run.best))

    train_loader, dataset = create_dataloader(
        data["train"], imgsz, rank_batch_size, grid_stride, single_cls=opt.single_cls, hyp=hyp, augment=True,
        cache=opt.cache, rect=opt.rect, workers=opt.workers, shuffle=not opt.rect,
        prefix="train: ", seed=opt.seed, nc=task.nc, n_views=task.n_views,
        rect_shuffle=getattr(opt, "rect_shuffle", False), shard=True,
    )
    val_loader = None
    if main:
        val_loader, _ = create_dataloader(
            data["val"], imgsz, rank_batch_size * 2, grid_stride, single_cls=opt.single_cls, hyp=hyp,
            cache=opt.cache, rect=True, pad=0.5, workers=opt.workers, prefix="val: ", nc=task.nc,
            n_views=task.n_views,
        )
    if task.view_names:
        n_missing = int((dataset.views < 0).sum())
        LOGGER.info(f"train: view labels {np.bincount(dataset.views[dataset.views >= 0], minlength=task.n_views).tolist()} "
                    f"for {task.view_names}; {n_missing} images without a view label train detection only")
    if not opt.resume and main:
        if plots:
            all_labels = np.concatenate([lb for lb in dataset.labels if len(lb)] or [np.zeros((0, 5))], 0)
            plot_labels(all_labels, task.names, run.save_dir)
        if not opt.noautoanchor:
            check_anchors(dataset, model=model, thr=hyp["anchor_t"], imgsz=imgsz)  # DDP: wrapping copies rank 0's
    train_model = wrap_distributed(model, ctx, device)  # what the forward pass runs through

    hyp = scale_hyp_for_model(hyp, head.nl, task.nc, imgsz)
    compute_loss = ComputeLoss(model, hyp, label_smoothing=opt.label_smoothing)
    model.hyp = hyp
    run_info = {"script": getattr(opt, "script", "train.py"), "tasks": list(task.task_names), "names": task.names,
                "view_names": task.view_names, "balancer": type(balancer).__name__, "world_size": ctx.world_size,
                # results differ bitwise with the thread count (measured): record it to compare runs
                "torch_threads": torch.get_num_threads(), "torch_version": torch.__version__}
    history = TrainingHistory(run.save_dir / "training_history.json", run_info) if main else None
    monitor = make_interference_monitor(opt, model, task) if main else None  # rank 0 measures its own batches

    batches = len(train_loader)
    warmup_iters = max(round(hyp["warmup_epochs"] * batches), 100) if hyp["warmup_epochs"] > 0 else 0
    last_opt_step = int((ckpt or {}).get("last_opt_step", -1)) if opt.resume else -1  # accumulation continues
    for scheduler in schedulers:
        scheduler.last_epoch = start_epoch - 1
    results, view_val = (0.0,) * 7, None
    best_epoch, patience = start_epoch, opt.patience or float("inf")
    skipped_steps = int((ckpt or {}).get("skipped_steps", 0)) if opt.resume else 0
    if opt.resume and main:  # a crash after an epoch's log but before its checkpoint: that epoch is trained again
        drop_epochs_from(run.results_csv, history, start_epoch)
    t_start = time.time()
    LOGGER.info(f"Image sizes {imgsz} train, {imgsz} val\nUsing {train_loader.num_workers} dataloader workers\n"
                f"Logging results to {run.save_dir}\nStarting training for {opt.epochs} epochs...")
    epoch = start_epoch
    for epoch in range(start_epoch, opt.epochs):
        t_epoch = time.time()
        model.train()
        mean_loss = torch.zeros(len(task.loss_names), device=device)
        zero_grad(optimizers)
        weight_names = [f"w_{t}" for t in task.task_names] if task.view_names else []
        LOGGER.info(("\n" + "%11s" * (4 + len(task.loss_names) + len(weight_names))) % (
            "Epoch", "GPU_mem", *task.loss_names, *weight_names, "Instances", "Size"))
        for sampler in (train_loader.sampler, train_loader.batch_sampler):
            if hasattr(sampler, "set_epoch"):
                sampler.set_epoch(epoch)  # the epoch's own order: the same on every rank and after a resume
        bar = tqdm(enumerate(train_loader), total=batches, bar_format="{l_bar}{bar:10}{r_bar}", disable=not main)
        for i, (imgs, targets, views, paths, _shapes) in bar:
            ni = i + batches * epoch
            imgs = imgs.to(device, non_blocking=True).float() / 255
            if channels_last:
                imgs = imgs.contiguous(memory_format=torch.channels_last)
            targets, views = targets.to(device), views.to(device)
            if ni <= warmup_iters:
                accumulate = warmup(optimizers, ni, warmup_iters, epoch, lf, hyp, batch_size)
            losses, loss_items = task_losses(train_model(imgs), targets, views, compute_loss, imgs.shape[0])
            if ctx.enabled:  # DDP averages gradients over ranks; YOLOv5 scales by the world size to keep the sum
                losses = {name: value * ctx.world_size for name, value in losses.items()}
            loss = balancer.combine(losses)
            if any_rank(not bool(torch.isfinite(loss))):  # all ranks skip together, or the others would hang
                skipped_steps += 1
                LOGGER.warning(f"WARNING ⚠️ non-finite loss at epoch {epoch} batch {i} (this process: {loss.item()}), "
                               "step skipped")
                zero_grad(optimizers)
                continue
            if monitor is not None and monitor.due(ni):
                weights = balancer.weights.to(loss.device)
                history.log_interference(monitor.measure(
                    {name: weights[k] * losses[name] for k, name in enumerate(task.task_names)}, ni, epoch))
            balancer.backward(loss, losses)
            if ni - last_opt_step >= accumulate:
                clip_gradients(optimizers)
                for o in optimizers.values():
                    o.step()
                zero_grad(optimizers)
                if main:  # only rank 0 validates and saves the EMA
                    ema.update(model)
                balancer.step()
                if main and balancer.adaptive and balancer.last_stats is not None:
                    history.log_step({"step": ni, "epoch": epoch, **balancer.last_stats})
                last_opt_step = ni
            mean_loss = (mean_loss * i + loss_items) / (i + 1)
            mem = f"{torch.cuda.memory_reserved() / 1e9 if torch.cuda.is_available() else 0:.3g}G"
            weights = balancer.weights.tolist() if task.view_names else []
            bar.set_description(("%11s" * 2 + "%11.4g" * (len(task.loss_names) + len(weights) + 2)) % (
                f"{epoch}/{opt.epochs - 1}", mem, *mean_loss.tolist(), *weights, targets.shape[0], imgs.shape[-1]))
            if plots and ni < 3:
                plot_images(imgs, targets, paths, run.save_dir / f"train_batch{ni}.jpg", task.names,
                            captions=view_captions(views, task.view_names))

        train_s = time.time() - t_epoch  # the batches alone; time_s adds validation and saving
        lrs = {name: [g["lr"] for g in o.param_groups] for name, o in optimizers.items()}
        for scheduler in schedulers:
            scheduler.step()
        if main:
            ema.update_attr(model)
        mean_loss = all_reduce_mean(mean_loss)  # DDP: the epoch's mean over every rank's batches
        if ctx.enabled:  # a rank that drifted would make rank 0's checkpoint describe a model nobody trains
            check_ranks_agree(parameter_checksum(model), "model parameters")
            check_ranks_agree(balancer.weights, "task weights")
        stop = False
        if main:  # validation, results.csv, history and checkpoints: rank 0 only
            final_epoch = epoch + 1 == opt.epochs
            val_period = max(int(getattr(opt, "val_period", 1) or 1), 1)
            validated = final_epoch or (not opt.noval and (epoch + 1) % val_period == 0)
            if validated:
                val = evaluate(ema.ema, val_loader, names=task.names, device=device, single_cls=opt.single_cls,
                               compute_loss=compute_loss, save_dir=run.save_dir, plots=False, training=True,
                               view_names=task.view_names)
                results, view_val = val.as_tuple(), val.view_summary()
            fit = training_fitness(results, view_val, getattr(opt, "fitness", "detection"))
            improved = improves_best(fit, best_fitness, validated)
            if validated and fit > best_fitness:
                best_fitness, best_epoch = fit, epoch
            parts_fit = None
            if best_parts is not None:  # best.pt: each network at its own best epoch
                parts_fit = part_fitness(fit, view_val)
                improved = best_parts.update(epoch, parts_fit, ema.ema.state_dict(), validated)
                best_epoch = max(best_epoch, best_parts.last_improved_epoch)
            train_losses = mean_loss.tolist()
            row = [*train_losses[:3], *results, *next(iter(lrs.values()))]  # x/lr0-2: the (detection) model's groups
            if task.view_names:
                view_cols = ("view_loss", "view_accuracy", "view_balanced_accuracy")
                row += [train_losses[3], *((view_val or {}).get(k, 0.0) for k in view_cols), *balancer.weights.tolist()]
            append_results_row(run.results_csv, epoch, row, task.results_keys)
            record = epoch_record(epoch, task, train_losses, balancer, lrs, results, view_val, t_epoch, fit)
            if parts_fit is not None:
                record["part_fitness"] = parts_fit
            record.update(elapsed_s=round(time.time() - t_start, 3), train_s=round(train_s, 3),
                          validated=validated,  # time-to-accuracy curves
                          skipped_steps=skipped_steps)  # non-finite losses so far (steps skipped, run continued)
            history.log_epoch(record)
            stop = epoch - best_epoch >= patience
            if not opt.nosave or final_epoch or stop:
                ckpt_out = build_checkpoint(
                    model_yaml=model.yaml, model_state=de_parallel(model).state_dict(), names=task.names, epoch=epoch,
                    best_fitness=best_fitness, ema_state=ema.ema.state_dict(), ema_updates=ema.updates,
                    optimizer_state={name: o.state_dict() for name, o in optimizers.items()}, opt=vars(opt), hyp=hyp,
                    extra={"skipped_steps": skipped_steps, "last_opt_step": last_opt_step, "results": list(results),
                           "view_names": task.view_names,
                           "balancer": balancer.state_dict(),
                           **({"best_parts": best_parts.state_dict()} if best_parts is not None else {})},
                )
                save_checkpoint(ckpt_out, run.last)
                if improved:
                    save_checkpoint(ckpt_out if best_parts is None else per_network_checkpoint(ckpt_out, best_parts),
                                    run.best)
                if opt.save_period > 0 and epoch % opt.save_period == 0:
                    save_checkpoint(ckpt_out, run.weights / f"epoch{epoch}.pt")
        stop = broadcast_object(stop)  # every rank leaves the loop together
        if stop:
            LOGGER.info(f"Stopping training early as no improvement observed in last {opt.patience} epochs. "
                        f"Best results observed at epoch {best_epoch}, best model saved as best.pt.")
            break

    hours = (time.time() - t_start) / 3600
    LOGGER.info(f"\n{epoch - start_epoch + 1} epochs completed in {hours:.3f} hours.")
    if not main:
        return {"results": (), "save_dir": str(run.save_dir), "skipped_steps": skipped_steps}
    final = finish(run, val_loader, task, device, opt, compute_loss, plots)
    if plots and balancer.adaptive:
        plot_gradnorm(history.path)
    if plots and history.data["interference"]:
        plot_interference(history.path)
    return {"results": final, "save_dir": str(run.save_dir), "skipped_steps": skipped_steps}


def task_losses(outputs: ModelOutputs, targets: torch.Tensor, views: torch.Tensor, compute_loss: ComputeLoss,
                batch_size: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Per-task losses to balance, and the detached items for logging (box, obj, cls[, view]).

    YOLOv5's detection loss is a per-image mean multiplied by the batch size; the view
    cross-entropy is put on the same scale so fixed weights of 1.0 mean equal footing.
    """
    det_loss, det_items = compute_loss(outputs.det, targets)
    if outputs.view_logits is None:
        return {"det": det_loss}, det_items
    view = view_loss(outputs.view_logits, views)
    return {"det": det_loss, "view": view * batch_size}, torch.cat((det_items, view.detach().view(1)))


def view_captions(views: torch.Tensor, view_names: list | None) -> list[str] | None:
    """Per-image view names for train_batch*.jpg ('no view' for unlabelled images)."""
    if not view_names:
        return None
    return [view_names[v] if v >= 0 else "no view" for v in views.tolist()]


def epoch_record(epoch: int, task: Task, train_losses: list, balancer: Balancer, lrs: dict, results: tuple,
                 view_val: dict | None, t_epoch: float, fit: float) -> dict:
    """One training_history.json entry: losses, task weights, lrs, metrics, time."""
    record = {
        "epoch": epoch,
        "time_s": round(time.time() - t_epoch, 3),
        "train_loss": dict(zip(task.loss_names, train_losses)),
        "task_weights": balancer.weight_dict(),
        "lr": {name: dict(zip(PARAM_GROUP_NAMES, group_lrs)) for name, group_lrs in lrs.items()},
        "val": dict(zip(("precision", "recall", "mAP_0.5", "mAP_0.5:0.95", "box_loss", "obj_loss", "cls_loss"), results)),
        "fitness": fit,
    }
    if view_val is not None:
        record["val"].update(view_val)
    return record


def make_optimizers(model: torch.nn.Module, opt: argparse.Namespace, hyp: dict) -> dict[str, torch.optim.Optimizer]:
    """train.py's optimizer: YOLOv5's three parameter groups over the whole model (train_dual.py adds one per network)."""
    return {"model": smart_optimizer(model, opt.optimizer, hyp["lr0"], hyp["momentum"], hyp["weight_decay"])}


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


def clip_gradients(optimizers: dict[str, torch.optim.Optimizer], max_norm: float = 10.0) -> list[torch.Tensor]:
    """Clip the gradient norm at max_norm (YOLOv5's rule) separately over each optimizer's parameters.

    With one optimizer this is YOLOv5's global clip. With two networks (dual backbones) one global
    norm would let the classifier's large gradient shrink the detector's step, coupling two networks
    that share nothing; clipping each network on its own keeps them independent. Returns the norms
    before clipping, one per optimizer.
    """
    norms = []
    for o in optimizers.values():
        params = [p for g in o.param_groups for p in g["params"]]
        norms.append(torch.nn.utils.clip_grad_norm_(params, max_norm=max_norm))
    return norms


def zero_grad(optimizers: dict[str, torch.optim.Optimizer]) -> None:
    for o in optimizers.values():
        o.zero_grad()


def warmup(optimizers: dict[str, torch.optim.Optimizer], ni: int, warmup_iters: int, epoch: int, lf, hyp: dict,
           batch_size: int) -> int:
    """YOLOv5 warmup: bias lr falls from warmup_bias_lr, other lrs rise from 0, momentum rises; returns accumulate.

    A group may carry its own 'warmup_bias_lr' (an optimizer with another base lr scales it).
    """
    xi = [0, warmup_iters]
    accumulate = max(1, int(np.interp(ni, xi, [1, NOMINAL_BATCH / batch_size]).round()))
    for o in optimizers.values():
        for j, group in enumerate(o.param_groups):
            start = group.get("warmup_bias_lr", hyp["warmup_bias_lr"]) if j == 0 else 0.0  # group 0 holds the biases
            group["lr"] = float(np.interp(ni, xi, [start, group["initial_lr"] * lf(epoch)]))
            if "momentum" in group:
                group["momentum"] = float(np.interp(ni, xi, [hyp["warmup_momentum"], hyp["momentum"]]))
    return accumulate


def drop_epochs_from(results_csv: Path, history: TrainingHistory, start_epoch: int) -> None:
    """Forget results.csv rows and history records of epochs >= start_epoch (they are re-run after a resume)."""
    if results_csv.exists():
        lines = results_csv.read_text().splitlines(keepends=True)
        kept = lines[:1] + [ln for ln in lines[1:] if ln.strip() and int(float(ln.split(",")[0])) < start_epoch]
        if len(kept) != len(lines):
            results_csv.write_text("".join(kept))
    history.data["epochs"] = [r for r in history.data["epochs"] if r.get("epoch", -1) < start_epoch]
    for key in ("steps", "interference"):
        history.data[key] = [r for r in history.data.get(key, []) if r.get("epoch", -1) < start_epoch]


def resume_state(ckpt: dict, optimizers: dict, ema: ModelEMA, balancer: Balancer, opt: argparse.Namespace) -> tuple[int, float]:
    """Restore optimizers, EMA, balancer, epoch and best fitness from a last.pt; refuse a finished run."""
    start_epoch = int(ckpt["epoch"]) + 1
    if ckpt.get("optimizer") is None or start_epoch <= 0:
        raise SystemExit(f"--resume {opt.weights}: training to {opt.epochs} epochs is finished, nothing to resume")
    for name, o in optimizers.items():
        o.load_state_dict(ckpt["optimizer"][name])
    if ckpt.get("ema") is not None:
        ema.ema.load_state_dict(ckpt["ema"])
        ema.updates = int(ckpt.get("ema_updates", 0))
    if ckpt.get("balancer"):
        balancer.load_state_dict(ckpt["balancer"])
    LOGGER.info(f"Resuming training from epoch {start_epoch} to {opt.epochs} total epochs")
    return start_epoch, float(ckpt.get("best_fitness", 0.0))


def finish(run: RunFolder, val_loader, task: Task, device, opt, compute_loss, plots: bool) -> tuple:
    """Strip optimizers, validate best.pt with plots, draw results.png (YOLOv5's end of training)."""
    final = ()
    for ckpt_path in (run.last, run.best):
        if ckpt_path.exists():
            strip_optimizer(ckpt_path)
    if run.best.exists():
        LOGGER.info(f"\nValidating {run.best}...")
        best_model, _ = load_inference_model(run.best, device)
        val = evaluate(best_model, val_loader, names=task.names, device=device, single_cls=opt.single_cls,
                       compute_loss=compute_loss, save_dir=run.save_dir, plots=plots, verbose=True, training=False,
                       view_names=task.view_names)
        final = val.as_tuple()
    if plots and run.results_csv.exists():
        plot_results(run.results_csv)
    LOGGER.info(f"Results saved to {run.save_dir}")
    return final
