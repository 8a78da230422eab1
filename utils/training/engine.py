"""The one training loop every train*.py drives.

`train(opt)` builds a `Trainer` (run folder, data, model, optimizers, EMA, balancer and loss, the way
YOLOv5 does) and calls `fit()`: epochs of batches through the shared step (utils/training/step.py),
then at each epoch's end validation of the EMA, results.csv, history and atomic checkpoints, and
after the last epoch the validation of best.pt with plots.
"""
from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import yaml
from torch.optim import lr_scheduler
from tqdm import tqdm

from utils.checkpoints import build_checkpoint, save_checkpoint
from utils.cli import check_img_size
from utils.data.loaders import create_dataloader
from utils.evaluation.validation import evaluate
from utils.logger import LOGGER
from utils.plots import plot_images, plot_labels
from utils.torch_utils import (ModelEMA, de_parallel, init_seeds, linear_lr, one_cycle, select_device,
                               set_cudnn_benchmark)
from utils.training.amp import amp_agrees, build_amp, resolve_precision
from utils.training.autoanchor import check_anchors
from utils.training.best_checkpoint import (best_ema_state, improves_best, part_fitness, per_network_best,
                                            per_network_checkpoint, training_fitness)
from utils.training.distributed import (DistContext, all_reduce_mean, broadcast_object, check_ranks_agree,
                                        cleanup_distributed, context_from_env, parameter_checksum,
                                        per_rank_batch_size, setup_distributed, sync_batchnorm, wrap_distributed)
from utils.training.history import TrainingHistory
from utils.training.loss import ComputeLoss
from utils.training.memory_format import MemoryFormatChoice, choose_memory_format
from utils.training.model_setup import (BalancerFactory, balancer_factory, build_training_model, freeze_layers,
                                        make_interference_monitor, make_optimizers)
from utils.training.optim import NOMINAL_BATCH, warmup, zero_grad
from utils.training.final_validation import validate_best
from utils.training.plots import plot_gradnorm, plot_interference
from utils.training.run_files import append_results_row, drop_epochs_from, epoch_record
from utils.training.run_time import RECIPE_MAX_IMGSZ, RECIPE_MAX_PARAMETERS, RunTimeEstimate
from utils.training.run_setup import (disable_mixing_augmentations, resume_state, scale_hyp_for_model, setup_run,
                                      write_opt_yaml)
from utils.training.step import StepParts, StepState, train_step
from utils.training.task import load_task
from utils.training.tensorboard_log import TensorBoardLog

VIEW_COLUMNS = ("view_loss", "view_accuracy", "view_balanced_accuracy")  # of the view summary, in results.csv


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
        return Trainer(opt, ctx, device, make_balancer, make_model, make_optims).fit()
    finally:
        cleanup_distributed()


@dataclass
class EpochLog:
    """What one epoch's batches leave for its end: the mean loss items and when it started."""

    mean_loss: torch.Tensor
    t_epoch: float
    train_s: float  # the batches alone; the history's time_s adds validation and saving


class Trainer:
    """One training run. `fit()` is the loop; the constructor is its setup, in YOLOv5's order."""

    def __init__(self, opt: argparse.Namespace, ctx: DistContext, device: torch.device | None,
                 make_balancer: BalancerFactory | None = None, make_model: Callable | None = None,
                 make_optims: Callable | None = None) -> None:
        self.opt, self.hyp, self.run = setup_run(opt, ctx, device)
        opt = self.opt
        self.ctx, self.main = ctx, ctx.is_main  # only rank 0 writes files, validates and logs
        self.device = device or select_device(opt.device, batch_size=opt.batch_size)
        resolve_precision(opt, self.device)  # a resumed run keeps its opt.yaml's; one from before --amp: the default
        init_seeds(opt.seed + ctx.rank, deterministic=getattr(opt, "deterministic", False))  # DDP: rank 0's weights
        self.plots = not opt.noplots and self.main
        self.data, self.task = load_task(opt)
        if self.task.view_names:
            self.hyp = disable_mixing_augmentations(self.hyp)
        if not opt.resume and self.main:
            (self.run.save_dir / "hyp.yaml").write_text(yaml.safe_dump(self.hyp, sort_keys=False))
        LOGGER.info("hyperparameters: " + ", ".join(f"{k}={v}" for k, v in self.hyp.items()))
        ckpt = self._build_model(make_model)
        self._build_optimisation(make_optims, make_balancer, ckpt)
        self._build_data()
        self._build_loss_and_records(ckpt)

    # ------------------------------------------------------------------------------------------- setup

    def _build_model(self, make_model: Callable | None) -> dict | None:
        """The model (from the factory), SyncBatchNorm, NHWC, frozen layers and the image size; returns the
        checkpoint --weights named, if any."""
        opt, task = self.opt, self.task
        model, ckpt = (make_model or build_training_model)(opt, task.nc, task.names, task.n_views, self.device)
        model = sync_batchnorm(model, bool(getattr(opt, "sync_bn", False)), self.ctx, self.device)
        model.info()
        freeze_layers(model, opt.freeze)
        self.model = model
        self.grid_stride = max(int(model.detect.stride.max()), 32)
        self.imgsz = check_img_size(opt.imgsz, self.grid_stride)
        verdict = amp_agrees(model, self.device, opt.amp_dtype) if opt.amp and self.main else None  # YOLOv5's check
        self.amp = build_amp(opt, self.device, broadcast_object(verdict))  # a failed check: FP32, opt.amp False
        if verdict is not None and not opt.amp and not opt.resume:
            write_opt_yaml(self.run, opt)
        requested = getattr(opt, "channels_last", None)  # None: rank 0 times both formats, every rank follows
        choice = None
        if self.main or requested is not None:
            choice = choose_memory_format(requested, model, self.imgsz, self.device, self.amp,
                                          getattr(opt, "deterministic", False))
        self.memory_format = MemoryFormatChoice(*broadcast_object(choice))
        self.channels_last = self.memory_format.channels_last
        if self.channels_last:  # NHWC: same model and results up to float rounding, faster where timed so
            model.to(memory_format=torch.channels_last)
        return ckpt

    def _build_optimisation(self, make_optims: Callable | None, make_balancer: BalancerFactory | None,
                            ckpt: dict | None) -> None:
        """Optimizers, lr schedule, EMA, balancer and best.pt tracking; restored from last.pt on --resume."""
        opt, hyp = self.opt, self.hyp
        self.batch_size = opt.batch_size  # the total over all processes: accumulation and weight decay follow it
        accumulate = max(round(NOMINAL_BATCH / self.batch_size), 1)
        hyp["weight_decay"] *= self.batch_size * accumulate / NOMINAL_BATCH
        self.optimizers = (make_optims or make_optimizers)(self.model, opt, hyp)
        self.lf = one_cycle(1, hyp["lrf"], opt.epochs) if opt.cos_lr else linear_lr(hyp["lrf"], opt.epochs)
        self.schedulers = [lr_scheduler.LambdaLR(o, lr_lambda=self.lf) for o in self.optimizers.values()]
        self.ema = ModelEMA(self.model)
        self.balancer = (make_balancer or balancer_factory(opt))(hyp, self.task.task_names, self.model)
        self.best_parts = per_network_best(opt, self.model)
        self.start_epoch, self.best_fitness = 0, 0.0
        if ckpt is not None and opt.resume:
            self.start_epoch, self.best_fitness = resume_state(ckpt, self.optimizers, self.ema, self.balancer, opt)
            self.amp.load_state_dict(ckpt.get("amp_scaler"))  # the scale and its growth tracker continue
            if self.best_parts is not None:
                self.best_parts.load_state_dict(ckpt.get("best_parts") or {}, best_ema_state(self.run.best))
        resumed = ckpt if opt.resume else None
        self.state = StepState(accumulate=accumulate,  # accumulation and the skip counts continue after a resume
                               last_opt_step=int((resumed or {}).get("last_opt_step", -1)),
                               skipped_steps=int((resumed or {}).get("skipped_steps", 0)),
                               amp_skipped_steps=int((resumed or {}).get("amp_skipped_steps", 0)))

    def _build_data(self) -> None:
        """The training loader (sharded under DDP), rank 0's val loader, label plots and AutoAnchor."""
        opt, task, hyp, main = self.opt, self.task, self.hyp, self.main
        rank_batch_size = per_rank_batch_size(self.batch_size, self.ctx)
        pin = self.device.type == "cuda"  # page-locked batches: the copies to the GPU run asynchronously
        set_cudnn_benchmark(self.device, fixed_shapes=not (opt.rect or getattr(opt, "rect_shuffle", False)),
                            deterministic=getattr(opt, "deterministic", False))
        self.train_loader, dataset = create_dataloader(
            self.data["train"], self.imgsz, rank_batch_size, self.grid_stride, single_cls=opt.single_cls, hyp=hyp,
            augment=True, cache=opt.cache, rect=opt.rect, workers=opt.workers, shuffle=not opt.rect,
            prefix="train: ", seed=opt.seed, nc=task.nc, n_views=task.n_views,
            rect_shuffle=getattr(opt, "rect_shuffle", False), shard=True, pin_memory=pin,
        )
        self.val_loader = None
        if main:
            self.val_loader, _ = create_dataloader(
                self.data["val"], self.imgsz, rank_batch_size * 2, self.grid_stride, single_cls=opt.single_cls,
                hyp=hyp, cache=opt.cache, rect=True, pad=0.5, workers=opt.workers, prefix="val: ", nc=task.nc,
                n_views=task.n_views, pin_memory=pin,
            )
        if task.view_names:
            counts = np.bincount(dataset.views[dataset.views >= 0], minlength=task.n_views).tolist()
            LOGGER.info(f"train: view labels {counts} for {task.view_names}; {int((dataset.views < 0).sum())} "
                        f"images without a view label train detection only")
        if not opt.resume and main:
            if self.plots:
                all_labels = np.concatenate([lb for lb in dataset.labels if len(lb)] or [np.zeros((0, 5))], 0)
                plot_labels(all_labels, task.names, self.run.save_dir)
            if not opt.noautoanchor:  # DDP: wrapping copies rank 0's anchors
                check_anchors(dataset, model=self.model, thr=hyp["anchor_t"], imgsz=self.imgsz)

    def _build_loss_and_records(self, ckpt: dict | None) -> None:
        """Loss (gains scaled as YOLOv5), the step's parts, training_history.json, warmup and resume trims."""
        opt, task, main, ctx = self.opt, self.task, self.main, self.ctx
        forward = wrap_distributed(self.model, ctx, self.device)  # what the forward pass runs through
        self.hyp = scale_hyp_for_model(self.hyp, self.model.detect.nl, task.nc, self.imgsz)
        self.compute_loss = ComputeLoss(self.model, self.hyp, label_smoothing=opt.label_smoothing)
        self.model.hyp = self.hyp
        run_info = {"script": getattr(opt, "script", "train.py"), "tasks": list(task.task_names),
                    "names": task.names, "view_names": task.view_names, "balancer": type(self.balancer).__name__,
                    "world_size": ctx.world_size, "memory_format": self.memory_format._asdict(),
                    "amp": self.amp.describe(),
                    # results differ bitwise with the thread count (measured): record it to compare runs
                    "torch_threads": torch.get_num_threads(), "torch_version": torch.__version__}
        self.history = TrainingHistory(self.run.save_dir / "training_history.json", run_info) if main else None
        self.tensorboard = TensorBoardLog(self.run.save_dir) if main else None
        self.parts = StepParts(
            forward=forward, model=self.model, optimizers=self.optimizers, balancer=self.balancer,
            compute_loss=self.compute_loss, task_names=task.task_names,
            loss_scale=ctx.world_size if ctx.enabled else None, ema=self.ema if main else None,
            history=self.history,
            monitor=make_interference_monitor(opt, self.model, task) if main else None,  # rank 0's batches
            amp=self.amp,
        )
        batches = len(self.train_loader)
        self.warmup_iters = max(round(self.hyp["warmup_epochs"] * batches), 100) if self.hyp["warmup_epochs"] > 0 else 0
        for scheduler in self.schedulers:
            scheduler.last_epoch = self.start_epoch - 1
        self.results, self.view_val = (0.0,) * 7, None  # the last validation, repeated on epochs without one
        self.best_epoch, self.patience = self.start_epoch, opt.patience or float("inf")
        n_parameters = sum(p.numel() for p in self.model.parameters())
        small = self.imgsz <= RECIPE_MAX_IMGSZ and n_parameters <= RECIPE_MAX_PARAMETERS  # the CPU recipe already
        self.run_time = RunTimeEstimate(batches, opt.epochs - self.start_epoch, self.device.type == "cpu",
                                        small) if main else None
        if opt.resume and main:  # a crash after an epoch's log but before its checkpoint: that epoch is trained again
            drop_epochs_from(self.run.results_csv, self.history, self.start_epoch)

    # ------------------------------------------------------------------------------------------- the loop

    def fit(self) -> dict:
        """Every epoch: its batches, then its end (validation, records, checkpoints, early stop); then finish."""
        # a resumed run's elapsed_s runs on from the epochs it already recorded (time-to-accuracy curves stay whole)
        self.t_start = time.time() - (self.history.elapsed_before(self.start_epoch) if self.history else 0.0)
        LOGGER.info(f"Image sizes {self.imgsz} train, {self.imgsz} val\n"
                    f"Using {self.train_loader.num_workers} dataloader workers\n"
                    f"Logging results to {self.run.save_dir}\nStarting training for {self.opt.epochs} epochs...")
        epoch = self.start_epoch
        for epoch in range(self.start_epoch, self.opt.epochs):
            log = self.train_epoch(epoch)
            if self.end_epoch(epoch, log):
                break
        return self.finish(epoch)

    def train_epoch(self, epoch: int) -> EpochLog:
        """The epoch's batches through the shared step, with warmup, the progress bar and the first mosaics."""
        opt, task, device = self.opt, self.task, self.device
        t_epoch = time.time()
        self.model.train()
        mean_loss = torch.zeros(len(task.loss_names), device=device)
        zero_grad(self.optimizers)
        weight_names = [f"w_{t}" for t in task.task_names] if task.view_names else []
        LOGGER.info(("\n" + "%11s" * (4 + len(task.loss_names) + len(weight_names))) % (
            "Epoch", "GPU_mem", *task.loss_names, *weight_names, "Instances", "Size"))
        loader = self.train_loader
        for sampler in (loader.sampler, loader.batch_sampler):
            if hasattr(sampler, "set_epoch"):
                sampler.set_epoch(epoch)  # the epoch's own order: the same on every rank and after a resume
        batches = len(loader)
        bar = tqdm(enumerate(loader), total=batches, bar_format="{l_bar}{bar:10}{r_bar}", disable=not self.main)
        for i, (imgs, targets, views, paths, _shapes) in bar:
            ni = i + batches * epoch
            imgs = imgs.to(device, non_blocking=True).float() / 255
            if self.channels_last:
                imgs = imgs.contiguous(memory_format=torch.channels_last)
            targets, views = targets.to(device, non_blocking=True), views.to(device, non_blocking=True)
            if ni <= self.warmup_iters:
                self.state.accumulate = warmup(self.optimizers, ni, self.warmup_iters, epoch, self.lf, self.hyp,
                                               self.batch_size)
            loss_items = train_step(self.parts, self.state, imgs, targets, views, ni, epoch, i)
            if self.run_time is not None:
                self.run_time.observe()  # one line after the first iterations: the whole run's time
            if loss_items is None:  # non-finite loss: skipped and counted
                continue
            mean_loss = (mean_loss * i + loss_items) / (i + 1)
            mem = f"{torch.cuda.memory_reserved() / 1e9 if torch.cuda.is_available() else 0:.3g}G"
            weights = self.balancer.weights.tolist() if task.view_names else []
            bar.set_description(("%11s" * 2 + "%11.4g" * (len(task.loss_names) + len(weights) + 2)) % (
                f"{epoch}/{opt.epochs - 1}", mem, *mean_loss.tolist(), *weights, targets.shape[0], imgs.shape[-1]))
            if self.plots and ni < 3:
                plot_images(imgs, targets, paths, self.run.save_dir / f"train_batch{ni}.jpg", task.names,
                            captions=view_captions(views, task.view_names))
        return EpochLog(mean_loss, t_epoch, time.time() - t_epoch)

    def end_epoch(self, epoch: int, log: EpochLog) -> bool:
        """Schedulers, EMA attributes, DDP agreement; on rank 0 validation, records and checkpoints. True = stop."""
        lrs = {name: [g["lr"] for g in o.param_groups] for name, o in self.optimizers.items()}
        for scheduler in self.schedulers:
            scheduler.step()
        if self.main:
            self.ema.update_attr(self.model)
        log.mean_loss = all_reduce_mean(log.mean_loss)  # DDP: the epoch's mean over every rank's batches
        if self.ctx.enabled:  # a rank that drifted would make rank 0's checkpoint describe a model nobody trains
            check_ranks_agree(parameter_checksum(self.model), "model parameters")
            check_ranks_agree(self.balancer.weights, "task weights")
        stop = False
        if self.main:  # validation, results.csv, history and checkpoints: rank 0 only
            final_epoch = epoch + 1 == self.opt.epochs
            validated = self.validate(epoch, final_epoch)
            improved = self.update_best(epoch, validated)
            self.record_epoch(epoch, log, lrs, validated)
            stop = epoch - self.best_epoch >= self.patience
            if not self.opt.nosave or final_epoch or stop:
                self.save_checkpoints(epoch, improved)
        stop = broadcast_object(stop)  # every rank leaves the loop together
        if stop:
            LOGGER.info(f"Stopping training early as no improvement observed in last {self.opt.patience} epochs. "
                        f"Best results observed at epoch {self.best_epoch}, best model saved as best.pt.")
        return stop

    def validate(self, epoch: int, final_epoch: bool) -> bool:
        """Validate the EMA when due (every --val-period epochs and the last); False when this epoch is not."""
        opt = self.opt
        val_period = max(int(getattr(opt, "val_period", 1) or 1), 1)
        if not (final_epoch or (not opt.noval and (epoch + 1) % val_period == 0)):
            return False
        val = evaluate(self.ema.ema, self.val_loader, names=self.task.names, device=self.device,
                       single_cls=opt.single_cls, compute_loss=self.compute_loss, save_dir=self.run.save_dir,
                       plots=False, training=True, view_names=self.task.view_names,
                       amp_dtype=self.amp.dtype if self.amp.enabled else None)  # YOLOv5 validates in half too
        self.results, self.view_val = val.as_tuple(), val.view_summary()
        return True

    def update_best(self, epoch: int, validated: bool) -> bool:
        """This epoch's fitness against the best so far (per network for --fitness per-network); True = best.pt."""
        self.fit_value = training_fitness(self.results, self.view_val, getattr(self.opt, "fitness", "detection"))
        improved = improves_best(self.fit_value, self.best_fitness, validated)
        if validated and self.fit_value > self.best_fitness:
            self.best_fitness, self.best_epoch = self.fit_value, epoch
        self.parts_fit = None
        if self.best_parts is not None:  # best.pt: each network at its own best epoch
            self.parts_fit = part_fitness(self.fit_value, self.view_val)
            improved = self.best_parts.update(epoch, self.parts_fit, self.ema.ema.state_dict(), validated)
            self.best_epoch = max(self.best_epoch, self.best_parts.last_improved_epoch)
        return improved

    def record_epoch(self, epoch: int, log: EpochLog, lrs: dict, validated: bool) -> None:
        """One results.csv row (YOLOv5's columns, then the view task's) and one training_history.json record."""
        task, results, view_val = self.task, self.results, self.view_val
        train_losses = log.mean_loss.tolist()
        row = [*train_losses[:3], *results, *next(iter(lrs.values()))]  # x/lr0-2: the (detection) model's groups
        if task.view_names:
            row += [train_losses[3], *((view_val or {}).get(k, 0.0) for k in VIEW_COLUMNS),
                    *self.balancer.weights.tolist()]
        append_results_row(self.run.results_csv, epoch, row, task.results_keys)
        extra_lrs = {f"x/{name}/lr{k}": lr  # a second optimizer's groups (train_dual.py's classifier)
                     for name, group_lrs in list(lrs.items())[1:] for k, lr in enumerate(group_lrs)}
        self.tensorboard.log_epoch(epoch, {**dict(zip(task.results_keys, row)), **extra_lrs})
        record = epoch_record(epoch, task, train_losses, self.balancer, lrs, results, view_val, log.t_epoch,
                              self.fit_value)
        if self.parts_fit is not None:
            record["part_fitness"] = self.parts_fit
        record.update(elapsed_s=round(time.time() - self.t_start, 3), train_s=round(log.train_s, 3),
                      validated=validated,  # time-to-accuracy curves
                      skipped_steps=self.state.skipped_steps,  # non-finite losses so far (skipped, run continued)
                      amp_skipped_steps=self.state.amp_skipped_steps)  # overflowed float16 gradients (AMP)
        self.history.log_epoch(record)

    def save_checkpoints(self, epoch: int, improved: bool) -> None:
        """last.pt always, best.pt when improved, epoch{N}.pt every --save-period; each written atomically."""
        opt, run, ema = self.opt, self.run, self.ema
        ckpt = build_checkpoint(
            model_yaml=self.model.yaml, model_state=de_parallel(self.model).state_dict(), names=self.task.names,
            epoch=epoch, best_fitness=self.best_fitness, ema_state=ema.ema.state_dict(), ema_updates=ema.updates,
            optimizer_state={name: o.state_dict() for name, o in self.optimizers.items()}, opt=vars(opt),
            hyp=self.hyp,
            extra={"skipped_steps": self.state.skipped_steps, "last_opt_step": self.state.last_opt_step,
                   "amp_skipped_steps": self.state.amp_skipped_steps, "amp_scaler": self.amp.state_dict(),
                   "results": list(self.results), "view_names": self.task.view_names,
                   "balancer": self.balancer.state_dict(),
                   **({"best_parts": self.best_parts.state_dict()} if self.best_parts is not None else {})},
        )
        save_checkpoint(ckpt, run.last)
        if improved:
            save_checkpoint(ckpt if self.best_parts is None else per_network_checkpoint(ckpt, self.best_parts),
                            run.best)
        if opt.save_period > 0 and epoch % opt.save_period == 0:
            save_checkpoint(ckpt, run.weights / f"epoch{epoch}.pt")

    def finish(self, epoch: int) -> dict:
        """YOLOv5's end of training on rank 0: strip optimizers, validate best.pt with plots, draw the curves."""
        hours = (time.time() - self.t_start) / 3600
        LOGGER.info(f"\n{epoch - self.start_epoch + 1} epochs completed in {hours:.3f} hours.")
        summary = {"results": (), "save_dir": str(self.run.save_dir), "skipped_steps": self.state.skipped_steps,
                   "amp_skipped_steps": self.state.amp_skipped_steps}
        if not self.main:
            return summary
        self.tensorboard.close()
        summary["results"] = validate_best(self.run, self.val_loader, self.task.names, self.task.view_names,
                                           self.device, self.opt.single_cls, self.compute_loss, self.plots)
        if self.plots and self.balancer.adaptive:
            plot_gradnorm(self.history.path)
        if self.plots and self.history.data["interference"]:
            plot_interference(self.history.path)
        return summary


def view_captions(views: torch.Tensor, view_names: list | None) -> list[str] | None:
    """Per-image view names for train_batch*.jpg ('no view' for unlabelled images)."""
    if not view_names:
        return None
    return [view_names[v] if v >= 0 else "no view" for v in views.tolist()]
