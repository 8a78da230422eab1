"""The one training loop every train*.py drives.

`train(opt)` sets up a run folder, data, model, optimizer, EMA and loss the way YOLOv5
does, then runs epochs of warmup/accumulation/EMA updates, validates the EMA, writes
results.csv and checkpoints atomically, and finally validates best.pt with plots.
"""
from __future__ import annotations

import argparse
import math
import time
from copy import deepcopy
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml
from torch.optim import lr_scheduler
from tqdm import tqdm

from models.yolo import DetectionModel
from utils.autoanchor import check_anchors
from utils.checkpoints import build_checkpoint, inference_state, load_checkpoint, save_checkpoint, strip_optimizer
from utils.cli import check_unsupported, resolve_path
from utils.dataloaders import create_dataloader
from utils.dataset_yaml import check_dataset
from utils.logger import LOGGER
from utils.loss import ComputeLoss
from utils.metrics import fitness
from utils.model_loading import load_inference_model
from utils.paths import ROOT, increment_path
from utils.plots import plot_images, plot_labels, plot_results
from utils.synthetic import ensure_synthetic
from utils.torch_utils import ModelEMA, de_parallel, init_seeds, linear_lr, one_cycle, select_device, smart_optimizer
from utils.validation import evaluate

NOMINAL_BATCH = 64  # YOLOv5 accumulates gradients up to this batch size
RESULTS_KEYS = (
    "train/box_loss", "train/obj_loss", "train/cls_loss",
    "metrics/precision", "metrics/recall", "metrics/mAP_0.5", "metrics/mAP_0.5:0.95",
    "val/box_loss", "val/obj_loss", "val/cls_loss",
    "x/lr0", "x/lr1", "x/lr2",
)


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


def append_results_row(csv: Path, epoch: int, values: list[float]) -> None:
    """One results.csv line in YOLOv5's layout: 20-character right-aligned fields, header on first write."""
    keys = ("epoch", *RESULTS_KEYS)
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


def build_model(opt: argparse.Namespace, nc: int, names: dict, device: torch.device) -> tuple[DetectionModel, dict | None]:
    """Model from --cfg, or from the checkpoint in --weights (its weights transferred), or yolov5s untrained."""
    ckpt = None
    if opt.weights:
        ckpt = load_checkpoint(resolve_path(opt.weights), trust=getattr(opt, "trust_weights", False))
        cfg = resolve_path(opt.cfg) if opt.cfg else ckpt["model_yaml"]
        model = DetectionModel(cfg, ch=3, nc=nc)
        state = inference_state(ckpt) if not opt.resume else ckpt["model"]
        own = model.state_dict()
        transferable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
        model.load_state_dict(transferable, strict=False)
        LOGGER.info(f"Transferred {len(transferable)}/{len(own)} items from {opt.weights}")
    elif opt.cfg:
        model = DetectionModel(resolve_path(opt.cfg), ch=3, nc=nc)
    else:
        LOGGER.info("No --cfg or --weights given: building yolov5s from models/yolov5s.yaml, untrained "
                    "(YOLOv5 would download pretrained weights; this project never downloads anything)")
        model = DetectionModel(ROOT / "models" / "yolov5s.yaml", ch=3, nc=nc)
    model.names = dict(names)
    return model.to(device), ckpt


def freeze_layers(model: torch.nn.Module, freeze: list[int]) -> None:
    """--freeze: stop gradients for layers model.0..N-1 (one number) or the listed layer indices."""
    indices = range(freeze[0]) if len(freeze) == 1 else freeze
    prefixes = tuple(f"model.{i}." for i in indices)
    for name, param in model.named_parameters():
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


def setup_run(opt: argparse.Namespace) -> tuple[argparse.Namespace, dict, RunFolder]:
    """Resolve --resume, hyps and the run folder; write hyp.yaml and opt.yaml."""
    check_unsupported(opt)
    if opt.resume:
        opt, hyp = restore_resume_options(opt)
    else:
        hyp = load_hyp(opt.hyp)
        opt.save_dir = str(increment_path(Path(opt.project) / opt.name, exist_ok=opt.exist_ok))
    run = RunFolder(Path(opt.save_dir))
    run.weights.mkdir(parents=True, exist_ok=True)
    if not opt.resume:
        (run.save_dir / "hyp.yaml").write_text(yaml.safe_dump(hyp, sort_keys=False))
        (run.save_dir / "opt.yaml").write_text(yaml.safe_dump(vars(opt), sort_keys=False))
    LOGGER.info("hyperparameters: " + ", ".join(f"{k}={v}" for k, v in hyp.items()))
    return opt, hyp, run


def train(opt: argparse.Namespace) -> dict:
    """Train per `opt` (YOLOv5's train.py options); returns the final validation metrics."""
    opt, hyp, run = setup_run(opt)
    device = select_device(opt.device, batch_size=opt.batch_size)
    init_seeds(opt.seed, deterministic=getattr(opt, "deterministic", False))
    plots = not opt.noplots

    ensure_synthetic(opt.data)
    data = check_dataset(opt.data)
    nc = 1 if opt.single_cls else int(data["nc"])
    names = {0: "item"} if opt.single_cls and len(data["names"]) != 1 else data["names"]

    model, ckpt = build_model(opt, nc, names, device)
    model.info()
    freeze_layers(model, opt.freeze)
    head = model.detect
    grid_stride = max(int(head.stride.max()), 32)
    imgsz = check_img_size(opt.imgsz, grid_stride)

    batch_size = opt.batch_size
    accumulate = max(round(NOMINAL_BATCH / batch_size), 1)
    hyp["weight_decay"] *= batch_size * accumulate / NOMINAL_BATCH
    optimizer = smart_optimizer(model, opt.optimizer, hyp["lr0"], hyp["momentum"], hyp["weight_decay"])
    lf = one_cycle(1, hyp["lrf"], opt.epochs) if opt.cos_lr else linear_lr(hyp["lrf"], opt.epochs)
    scheduler = lr_scheduler.LambdaLR(optimizer, lr_lambda=lf)
    ema = ModelEMA(model)

    start_epoch, best_fitness = 0, 0.0
    if ckpt is not None and opt.resume:
        start_epoch, best_fitness = resume_state(ckpt, optimizer, ema, opt)

    train_loader, dataset = create_dataloader(
        data["train"], imgsz, batch_size, grid_stride, single_cls=opt.single_cls, hyp=hyp, augment=True,
        cache=opt.cache, rect=opt.rect, workers=opt.workers, shuffle=not opt.rect,
        prefix="train: ", seed=opt.seed, nc=nc,
    )
    max_label = max((int(lb[:, 0].max()) for lb in dataset.labels if len(lb)), default=-1)
    if max_label >= nc:
        raise SystemExit(f"Label class {max_label} exceeds nc={nc} in {opt.data}. Possible class labels are 0-{nc - 1}")
    val_loader, _ = create_dataloader(
        data["val"], imgsz, batch_size * 2, grid_stride, single_cls=opt.single_cls, hyp=hyp, cache=opt.cache,
        rect=True, pad=0.5, workers=opt.workers, prefix="val: ", nc=nc,
    )
    if not opt.resume:
        if plots:
            all_labels = np.concatenate([lb for lb in dataset.labels if len(lb)] or [np.zeros((0, 5))], 0)
            plot_labels(all_labels, names, run.save_dir)
        if not opt.noautoanchor:
            check_anchors(dataset, model=model, thr=hyp["anchor_t"], imgsz=imgsz)

    hyp = scale_hyp_for_model(hyp, head.nl, nc, imgsz)
    compute_loss = ComputeLoss(model, hyp, label_smoothing=opt.label_smoothing)
    model.hyp = hyp

    batches = len(train_loader)
    warmup_iters = max(round(hyp["warmup_epochs"] * batches), 100) if hyp["warmup_epochs"] > 0 else 0
    last_opt_step = -1
    scheduler.last_epoch = start_epoch - 1
    results = (0.0,) * 7
    maps = np.zeros(nc)
    stopper_best_epoch, patience = start_epoch, opt.patience or float("inf")
    skipped_steps = 0
    t_start = time.time()
    LOGGER.info(f"Image sizes {imgsz} train, {imgsz} val\nUsing {train_loader.num_workers} dataloader workers\n"
                f"Logging results to {run.save_dir}\nStarting training for {opt.epochs} epochs...")
    epoch = start_epoch
    for epoch in range(start_epoch, opt.epochs):
        model.train()
        mean_loss = torch.zeros(3, device=device)
        optimizer.zero_grad()
        LOGGER.info(("\n" + "%11s" * 7) % ("Epoch", "GPU_mem", "box_loss", "obj_loss", "cls_loss", "Instances", "Size"))
        bar = tqdm(enumerate(train_loader), total=batches, bar_format="{l_bar}{bar:10}{r_bar}")
        for i, (imgs, targets, _views, paths, _shapes) in bar:
            ni = i + batches * epoch
            imgs = imgs.to(device, non_blocking=True).float() / 255
            targets = targets.to(device)
            if ni <= warmup_iters:
                accumulate = warmup(optimizer, ni, warmup_iters, epoch, lf, hyp, batch_size)
            outputs = model(imgs)
            loss, loss_items = compute_loss(outputs.det, targets)
            if not torch.isfinite(loss):
                skipped_steps += 1
                LOGGER.warning(f"WARNING ⚠️ non-finite loss {loss.item()} at epoch {epoch} batch {i}, step skipped")
                optimizer.zero_grad()
                continue
            loss.backward()
            if ni - last_opt_step >= accumulate:
                torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=10.0)
                optimizer.step()
                optimizer.zero_grad()
                ema.update(model)
                last_opt_step = ni
            mean_loss = (mean_loss * i + loss_items) / (i + 1)
            mem = f"{torch.cuda.memory_reserved() / 1e9 if torch.cuda.is_available() else 0:.3g}G"
            bar.set_description(("%11s" * 2 + "%11.4g" * 5) % (f"{epoch}/{opt.epochs - 1}", mem, *mean_loss.tolist(), targets.shape[0], imgs.shape[-1]))
            if plots and ni < 3:
                plot_images(imgs, targets, paths, run.save_dir / f"train_batch{ni}.jpg", names)

        lrs = [g["lr"] for g in optimizer.param_groups]
        scheduler.step()
        ema.update_attr(model)
        final_epoch = epoch + 1 == opt.epochs
        if not opt.noval or final_epoch:
            val = evaluate(ema.ema, val_loader, names=names, device=device, single_cls=opt.single_cls,
                           compute_loss=compute_loss, save_dir=run.save_dir, plots=False, training=True)
            results, maps = val.as_tuple(), val.maps
        fit = float(fitness(np.array(results[:4]).reshape(1, -1))[0])
        if fit > best_fitness:
            best_fitness, stopper_best_epoch = fit, epoch
        append_results_row(run.results_csv, epoch, [*mean_loss.tolist(), *results, *lrs])
        stop = epoch - stopper_best_epoch >= patience
        if not opt.nosave or final_epoch or stop:
            ckpt_out = build_checkpoint(
                model_yaml=model.yaml, model_state=de_parallel(model).state_dict(), names=names, epoch=epoch,
                best_fitness=best_fitness, ema_state=ema.ema.state_dict(), ema_updates=ema.updates,
                optimizer_state=optimizer.state_dict(), opt=vars(opt), hyp=hyp,
                extra={"skipped_steps": skipped_steps, "results": list(results)},
            )
            save_checkpoint(ckpt_out, run.last)
            if best_fitness == fit:
                save_checkpoint(ckpt_out, run.best)
            if opt.save_period > 0 and epoch % opt.save_period == 0:
                save_checkpoint(ckpt_out, run.weights / f"epoch{epoch}.pt")
        if stop:
            LOGGER.info(f"Stopping training early as no improvement observed in last {opt.patience} epochs. "
                        f"Best results observed at epoch {stopper_best_epoch}, best model saved as best.pt.")
            break

    hours = (time.time() - t_start) / 3600
    LOGGER.info(f"\n{epoch - start_epoch + 1} epochs completed in {hours:.3f} hours.")
    final = finish(run, val_loader, names, device, opt, compute_loss, plots)
    return {"results": final, "save_dir": str(run.save_dir), "skipped_steps": skipped_steps}


def warmup(optimizer, ni: int, warmup_iters: int, epoch: int, lf, hyp: dict, batch_size: int) -> int:
    """YOLOv5 warmup: bias lr falls from warmup_bias_lr, other lrs rise from 0, momentum rises; returns accumulate."""
    xi = [0, warmup_iters]
    accumulate = max(1, int(np.interp(ni, xi, [1, NOMINAL_BATCH / batch_size]).round()))
    for j, group in enumerate(optimizer.param_groups):
        start = hyp["warmup_bias_lr"] if j == 0 else 0.0  # group 0 holds the biases
        group["lr"] = float(np.interp(ni, xi, [start, group["initial_lr"] * lf(epoch)]))
        if "momentum" in group:
            group["momentum"] = float(np.interp(ni, xi, [hyp["warmup_momentum"], hyp["momentum"]]))
    return accumulate


def resume_state(ckpt: dict, optimizer, ema: ModelEMA, opt: argparse.Namespace) -> tuple[int, float]:
    """Restore optimizer, EMA, epoch and best fitness from a last.pt; refuse a finished run."""
    start_epoch = int(ckpt["epoch"]) + 1
    if ckpt.get("optimizer") is None or start_epoch <= 0:
        raise SystemExit(f"--resume {opt.weights}: training to {opt.epochs} epochs is finished, nothing to resume")
    optimizer.load_state_dict(ckpt["optimizer"])
    if ckpt.get("ema") is not None:
        ema.ema.load_state_dict(ckpt["ema"])
        ema.updates = int(ckpt.get("ema_updates", 0))
    LOGGER.info(f"Resuming training from epoch {start_epoch} to {opt.epochs} total epochs")
    return start_epoch, float(ckpt.get("best_fitness", 0.0))


def finish(run: RunFolder, val_loader, names: dict, device, opt, compute_loss, plots: bool) -> tuple:
    """Strip optimizers, validate best.pt with plots, draw results.png (YOLOv5's end of training)."""
    final = ()
    for ckpt_path in (run.last, run.best):
        if ckpt_path.exists():
            strip_optimizer(ckpt_path)
    if run.best.exists():
        LOGGER.info(f"\nValidating {run.best}...")
        best_model, _ = load_inference_model(run.best, device)
        val = evaluate(best_model, val_loader, names=names, device=device, single_cls=opt.single_cls,
                       compute_loss=compute_loss, save_dir=run.save_dir, plots=plots, verbose=True, training=False)
        final = val.as_tuple()
    if plots and run.results_csv.exists():
        plot_results(run.results_csv)
    LOGGER.info(f"Results saved to {run.save_dir}")
    return final
