"""Before the first step: options checked, --resume restored, hyps loaded and adapted, the run folder and the task."""
from __future__ import annotations

import argparse
from pathlib import Path

import torch
import yaml

from utils.cli import check_unsupported, resolve_path
from utils.logger import LOGGER
from utils.paths import ROOT, increment_path
from utils.torch_utils import ModelEMA
from utils.training.amp import resolve_precision
from utils.training.balancers import Balancer
from utils.training.distributed import DistContext, broadcast_object
from utils.training.run_files import RunFolder

MIXING_AUGMENTATIONS = ("mosaic", "mixup", "copy_paste")


FITNESS_CHOICES = ("detection", "joint", "per-network")


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


def setup_run(opt: argparse.Namespace, ctx: DistContext = DistContext(),
              device: torch.device | None = None) -> tuple[argparse.Namespace, dict, RunFolder]:
    """Resolve --resume, hyps and the run folder; write opt.yaml (hyp.yaml follows once the data is known).

    Under DDP rank 0 picks (and creates) the folder and the other ranks are told its name. With the
    device known, opt.yaml records the resolved --amp / --amp-dtype (a resumed run keeps its own).
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
        if device is not None:
            resolve_precision(opt, device)
        if ctx.is_main:
            opt.save_dir = str(increment_path(Path(opt.project) / opt.name, exist_ok=opt.exist_ok))
        opt.save_dir = broadcast_object(getattr(opt, "save_dir", None))
    run = RunFolder(Path(opt.save_dir))
    if ctx.is_main:
        run.weights.mkdir(parents=True, exist_ok=True)
        if not opt.resume:
            write_opt_yaml(run, opt)
    return opt, hyp, run


def write_opt_yaml(run: RunFolder, opt: argparse.Namespace) -> None:
    """The run's options as YOLOv5 records them (rewritten once more if the AMP check turns AMP off)."""
    (run.save_dir / "opt.yaml").write_text(yaml.safe_dump(vars(opt), sort_keys=False))


def disable_mixing_augmentations(hyp: dict) -> dict:
    """With a view task, images stitched from several files have no view: switch mosaic/mixup/copy-paste off,
    unless the hyps set `mask_mixed_views: true`, which keeps them and masks mixed images out of the view loss
    (they train detection only, like a label file without a view line)."""
    active = [k for k in MIXING_AUGMENTATIONS if hyp.get(k, 0) > 0]
    if not active:
        return hyp
    listed = ", ".join(f"{k}={hyp[k]}" for k in active)
    if hyp.get("mask_mixed_views", False):
        LOGGER.info(f"{listed} kept with a view task (mask_mixed_views): mixed images train detection only")
        return hyp
    LOGGER.warning(f"WARNING ⚠️ {listed} switched off: an image mixed from several files has no image-level view "
                   f"label (the dataset declares cls_names; mask_mixed_views: true keeps them for detection only)")
    return {**hyp, **{k: 0.0 for k in active}}


def scale_hyp_for_model(hyp: dict, nl: int, nc: int, imgsz: int) -> dict:
    """YOLOv5's loss-gain scaling by detection levels, classes and image size."""
    hyp = dict(hyp)
    hyp["box"] *= 3 / nl
    hyp["cls"] *= nc / 80 * 3 / nl
    hyp["obj"] *= (imgsz / 640) ** 2 * 3 / nl
    return hyp


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
