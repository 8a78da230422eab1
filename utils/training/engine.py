"""The one training loop every train*.py drives.

`train(opt)` sets up a run folder, data, model, optimizer, EMA and loss the way YOLOv5
does, then runs epochs of warmup/accumulation/EMA updates, validates the EMA, writes
results.csv and checkpoints atomically, and finally validates best.pt with plots.
"""
from __future__ import annotations

import argparse
import time
from typing import Callable

import numpy as np
import torch
import yaml
from torch.optim import lr_scheduler
from tqdm import tqdm

from utils.training.autoanchor import check_anchors
from utils.checkpoints import build_checkpoint, save_checkpoint, strip_optimizer
from utils.data.loaders import create_dataloader
from utils.training.distributed import (DistContext, all_reduce_mean, any_rank, broadcast_object,
                               check_ranks_agree, cleanup_distributed, context_from_env, parameter_checksum,
                               per_rank_batch_size, setup_distributed, sync_batchnorm, wrap_distributed)
from utils.cli import check_img_size
from utils.training.best_checkpoint import (best_ema_state, improves_best, part_fitness, per_network_best,
                                           per_network_checkpoint, training_fitness)
from utils.training.model_setup import (BalancerFactory, balancer_factory, build_training_model, freeze_layers,
                                        make_interference_monitor, make_optimizers)
from utils.training.optim import NOMINAL_BATCH, clip_gradients, warmup, zero_grad
from utils.training.run_files import RunFolder, append_results_row, drop_epochs_from, epoch_record
from utils.training.run_setup import disable_mixing_augmentations, resume_state, scale_hyp_for_model, setup_run
from utils.training.step import task_losses
from utils.training.task import Task, load_task
from utils.training.history import TrainingHistory
from utils.logger import LOGGER
from utils.training.loss import ComputeLoss
from utils.model_loading import load_inference_model
from utils.plots import plot_images, plot_labels
from utils.training.plots import plot_gradnorm, plot_interference, plot_results
from utils.torch_utils import ModelEMA, de_parallel, init_seeds, linear_lr, one_cycle, select_device
from utils.evaluation.validation import evaluate


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


def view_captions(views: torch.Tensor, view_names: list | None) -> list[str] | None:
    """Per-image view names for train_batch*.jpg ('no view' for unlabelled images)."""
    if not view_names:
        return None
    return [view_names[v] if v >= 0 else "no view" for v in views.tolist()]


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
