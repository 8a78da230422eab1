"""The one argument parser every train*.py shares: YOLOv5's flags, names and defaults."""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Callable, NamedTuple, TypeVar

from utils.checkpoints import CheckpointError
from utils.data.dataset_yaml import DatasetError
from utils.data.image_cache import cache_choice
from utils.logger import LOGGER
from utils.paths import ROOT

T = TypeVar("T")


class OptionError(ValueError):
    """A command-line flag with a value this project cannot use; the message names the flag and value."""


class Accepts(NamedTuple):
    """What one numeric flag accepts: a test and the words an error message shows."""

    ok: Callable[[float], bool]
    words: str


POSITIVE = Accepts(lambda v: v > 0, "a number > 0")
NON_NEGATIVE = Accepts(lambda v: v >= 0, "a number >= 0")
FRACTION = Accepts(lambda v: 0 <= v <= 1, "a number in [0, 1]")
OPEN_FRACTION = Accepts(lambda v: 0 <= v < 1, "a number in [0, 1)")
ANY_INTEGER = Accepts(lambda v: True, "an integer")


def at_least(low: float) -> Accepts:
    return Accepts(lambda v: v >= low, f"a number >= {low:g}")


IMAGE_SIZE = Accepts(lambda v: v >= 32, "an integer >= 32 (it is rounded up to a multiple of the model's stride)")
BATCH_SIZE = Accepts(lambda v: v >= 1, "an integer >= 1 (YOLOv5's AutoBatch, -1, is not supported)")
POSITIVE_INTEGER = Accepts(lambda v: v >= 1, "an integer >= 1")
MOMENTUM = Accepts(lambda v: 0 <= v < 1, "a number in [0, 1)")
# export.py: PyTorch's TorchScript-based ONNX exporter writes opsets up to 20; below 11 some layers have no op
ONNX_OPSET = Accepts(lambda v: 11 <= v <= 20 and v == int(v), "an ONNX opset from 11 to 20")

# Every numeric flag of train*.py, val.py, detect.py and export.py, by dest: one table, so the scripts agree on what
# a flag accepts and a test can check that no numeric flag is left out (tests/test_cli_flags.py).
NUMERIC_FLAGS: dict[str, Accepts] = {
    "epochs": POSITIVE_INTEGER, "batch_size": BATCH_SIZE, "imgsz": IMAGE_SIZE, "workers": NON_NEGATIVE,
    "patience": NON_NEGATIVE, "save_period": ANY_INTEGER, "seed": NON_NEGATIVE, "label_smoothing": OPEN_FRACTION,
    "freeze": NON_NEGATIVE, "val_period": POSITIVE_INTEGER, "interference_every": NON_NEGATIVE,
    "balancer_lr": POSITIVE, "local_rank": ANY_INTEGER, "view_levels": NON_NEGATIVE, "evolve": ANY_INTEGER,
    "gradnorm_alpha": NON_NEGATIVE, "gradnorm_lr": POSITIVE, "gradnorm_momentum": MOMENTUM,
    "gradnorm_update_every": POSITIVE_INTEGER, "gradnorm_init_steps": POSITIVE_INTEGER,
    "gradnorm_min_weight": NON_NEGATIVE, "gradnorm_max_weight": POSITIVE,
    "cls_lr0": POSITIVE, "cls_imgsz": IMAGE_SIZE,
    "conf_thres": FRACTION, "iou_thres": FRACTION, "max_det": POSITIVE_INTEGER, "line_thickness": POSITIVE_INTEGER,
    "vid_stride": POSITIVE_INTEGER, "classes": NON_NEGATIVE, "opset": ONNX_OPSET,
}


def parse_checked(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> argparse.Namespace:
    """parser.parse_args, then every numeric flag checked against NUMERIC_FLAGS before any work starts."""
    opt = parser.parse_args(argv)
    check_numeric_flags(opt, NUMERIC_FLAGS)
    return opt


def check_numeric_flags(opt: argparse.Namespace, rules: dict[str, Accepts]) -> None:
    """Stop before any work with one `ERROR:` line naming the first flag whose value is not accepted.

    rules maps an option's dest (e.g. "batch_size") to what it accepts; None (flag not given, no
    default) is skipped, list values are checked one by one, and NaN or infinity is never accepted.
    """
    for dest, accepts in rules.items():
        value = getattr(opt, dest, None)
        for v in value if isinstance(value, (list, tuple)) else [value]:
            if v is None or isinstance(v, bool):
                continue
            if not (math.isfinite(v) and accepts.ok(v)):
                raise SystemExit(f"ERROR: --{dest.replace('_', '-')} {v}: expected {accepts.words}")


def cache_flag(value: str) -> str:
    """--cache's value checked while parsing: auto, ram, disk or off (none/false/no read as off)."""
    try:
        return cache_choice(value)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error).removeprefix(f"--cache {value}: ")) from None


def train_parser(description: str = "Train a YOLOv5-compatible detector") -> argparse.ArgumentParser:
    """Parser with YOLOv5 train.py flags; train_*.py scripts add their own flags to it."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--weights", type=str, default="", help="initial weights path ('' = from scratch; never downloads)")
    p.add_argument("--cfg", type=str, default="", help="model.yaml path (default models/yolov5s.yaml)")
    p.add_argument("--data", type=str, default=str(ROOT / "data" / "synthetic.yaml"),
                   help="dataset.yaml path (default: a small synthetic dataset generated offline)")
    p.add_argument("--hyp", type=str, default=str(ROOT / "data" / "hyps" / "hyp.scratch-low.yaml"), help="hyperparameters path")
    p.add_argument("--epochs", type=int, default=100, help="total training epochs")
    p.add_argument("--batch-size", type=int, default=16, help="total batch size")
    p.add_argument("--imgsz", "--img", "--img-size", type=int, default=640, help="train, val image size (pixels)")
    p.add_argument("--rect", action="store_true", help="rectangular training")
    p.add_argument("--rect-shuffle", action="store_true",
                   help="rectangular training that keeps shuffling: batches of images with the same letterbox shape, "
                        "shuffled every epoch (no square padding; 4:3 echo frames at 320 train at 256x320)")
    p.add_argument("--resume", nargs="?", const=True, default=False, help="resume most recent training")
    p.add_argument("--nosave", action="store_true", help="only save final checkpoint")
    p.add_argument("--noval", action="store_true", help="only validate final epoch")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="train in channels_last (NHWC) memory format, or not (--no-channels-last); default: time "
                        "both on the device in use at start and take NHWC if at least 5%% faster")
    p.add_argument("--val-period", type=int, default=1,
                   help="validate every N epochs (and the final one); results.csv repeats the last validation between")
    p.add_argument("--noautoanchor", action="store_true", help="disable AutoAnchor")
    p.add_argument("--noplots", action="store_true", help="save no plot files")
    p.add_argument("--evolve", type=int, nargs="?", const=300, help="not supported in this project")
    p.add_argument("--cache", type=cache_flag, nargs="?", const="ram", default="auto",
                   help="image --cache ram/disk; auto (default): ram when the resized images fit comfortably in free "
                        "memory, said in one log line; off: never")
    p.add_argument("--image-weights", action="store_true", help="not supported in this project")
    p.add_argument("--device", default="", help="cuda device, i.e. 0 or 0,1,2,3 or cpu")
    p.add_argument("--multi-scale", action="store_true", help="not supported in this project")
    p.add_argument("--single-cls", action="store_true", help="train multi-class data as single-class")
    p.add_argument("--optimizer", type=str, choices=["SGD", "Adam", "AdamW"], default="SGD", help="optimizer")
    p.add_argument("--sync-bn", action="store_true", help="use SyncBatchNorm, only available in DDP mode")
    p.add_argument("--workers", type=int, default=8, help="max dataloader workers (per RANK in DDP mode)")
    p.add_argument("--project", default=str(ROOT / "runs" / "train"), help="save to project/name")
    p.add_argument("--name", default="exp", help="save to project/name")
    p.add_argument("--exist-ok", action="store_true", help="existing project/name ok, do not increment")
    p.add_argument("--quad", action="store_true", help="not supported in this project")
    p.add_argument("--cos-lr", action="store_true", help="cosine LR scheduler")
    p.add_argument("--label-smoothing", type=float, default=0.0, help="Label smoothing epsilon")
    p.add_argument("--patience", type=int, default=100, help="EarlyStopping patience (epochs without improvement)")
    p.add_argument("--freeze", nargs="+", type=int, default=[0], help="Freeze layers: backbone=10, first3=0 1 2")
    p.add_argument("--save-period", type=int, default=-1, help="Save checkpoint every x epochs (disabled if < 1)")
    p.add_argument("--seed", type=int, default=0, help="Global training seed")
    p.add_argument("--deterministic", action="store_true", help="use deterministic algorithms (slower)")
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                   help="mixed precision: autocast and a gradient scaler, or not (--no-amp); default: on for CUDA "
                        "(checked first, as YOLOv5 does), off on the CPU; opt.yaml records the value used")
    p.add_argument("--amp-dtype", choices=["float16", "bfloat16"], default=None,
                   help="autocast dtype with --amp (default: float16 on CUDA, bfloat16 on the CPU)")
    p.add_argument("--local_rank", type=int, default=-1, help="set by torch.distributed.launch; torchrun passes LOCAL_RANK in the environment instead")
    p.add_argument("--view-levels", nargs="+", type=int, default=None,
                   help="neck levels the view head pools (0=P3/8, 1=P4/16, 2=P5/32); default models/yolo_cls.py's")
    p.add_argument("--fitness", choices=["detection", "joint", "per-network"], default="detection",
                   help="best.pt criterion: detection = YOLOv5's 0.1*mAP50 + 0.9*mAP50-95; joint = mean of that and "
                        "the view balanced accuracy (needs cls_names in the dataset YAML); per-network "
                        "(train_dual.py's default) = the detector at its best detection epoch, the classifier at "
                        "its best view balanced accuracy")
    p.add_argument("--balancer", choices=["fixed", "uncertainty", "pcgrad"], default="fixed",
                   help="joint task balancing: fixed weights det_task/view_task (hyps), uncertainty weighting "
                        "(Kendall 2018) or PCGrad (Yu 2020); GradNorm is train_gradnorm.py")
    p.add_argument("--balancer-lr", type=float, default=0.01, help="learning rate of uncertainty weighting's log-variances")
    p.add_argument("--interference-every", type=int, default=0,
                   help="every N iterations measure the cosine / norm ratio of the detection and view gradients on "
                        "the shared parameters (0 = off; costs one extra backward per measurement)")
    p.add_argument("--trust-weights", action="store_true",
                   help="kept for compatibility: no weights file runs code here, so it changes nothing")
    return p


def check_img_size(imgsz: int, stride: int) -> int:
    """Round --imgsz up to a multiple of the model's largest stride, with a warning if it changed."""
    new = max(math.ceil(imgsz / stride) * stride, stride)
    if new != imgsz:
        LOGGER.warning(f"WARNING ⚠️ --imgsz {imgsz} must be a multiple of max stride {stride}, updating to {new}")
    return new


UNSUPPORTED_FLAGS = {"evolve": None, "image_weights": False, "multi_scale": False, "quad": False}


def check_unsupported(opt: argparse.Namespace) -> None:
    """Refuse YOLOv5 flags this project accepts for compatibility but does not implement yet."""
    for name, default in UNSUPPORTED_FLAGS.items():
        if getattr(opt, name, default) not in (default, False, None):
            raise SystemExit(f"--{name.replace('_', '-')} is not supported by this project yet")


def resolve_path(path: str) -> str:
    """A path as given if it exists, else relative to the repository root (YOLOv5 resolves files there too)."""
    if not path or Path(path).exists():
        return path
    candidate = ROOT / path
    return str(candidate) if candidate.exists() else path


def run_or_exit(entry: Callable[..., T], *args) -> T:
    """Run a script's entry point; a user error (bad dataset, weights, source or flag) exits with one line, no traceback."""
    try:
        return entry(*args)
    except (DatasetError, CheckpointError, OptionError, FileNotFoundError) as e:
        sys.exit(f"ERROR: {e}")
