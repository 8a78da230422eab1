"""Training-step throughput with and without AMP (images/s), as benchmarks/gpu_check.py reports it.

    python benchmarks/amp_speed.py --cfg models/yolov5s.yaml --img 640 --batch-size 32 --device 0

Times the project's own shared step (utils/training/step.py: forward, loss, backward, every second
iteration the optimizer step with clipping and EMA, as a batch of 32 accumulates to YOLOv5's nominal 64)
on one fixed synthetic batch that stays on the device, so data loading is left out: the figure is what
the GPU does, and FP32 and AMP see identical work. cudnn.benchmark is on (the shape is fixed). Each
configuration reports images/s and the peak memory it allocated.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from models.yolo_cls import build_model  # noqa: E402
from utils.logger import LOGGER  # noqa: E402
from utils.torch_utils import ModelEMA, select_device, smart_optimizer  # noqa: E402
from utils.training.amp import Amp  # noqa: E402
from utils.training.balancers import FixedWeights  # noqa: E402
from utils.training.loss import ComputeLoss  # noqa: E402
from utils.training.run_setup import load_hyp, scale_hyp_for_model  # noqa: E402
from utils.training.step import StepParts, StepState, train_step  # noqa: E402

CONFIGS = {  # name: (AMP on, channels_last)
    "fp32": (False, False),
    "amp": (True, False),
    "amp_nhwc": (True, True),
}


def synthetic_batch(batch_size: int, imgsz: int, nc: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    """A fixed batch on the device: random images and four random boxes per image (image, cls, cx, cy, w, h)."""
    generator = torch.Generator().manual_seed(0)
    imgs = torch.rand(batch_size, 3, imgsz, imgsz, generator=generator)
    n = batch_size * 4
    boxes = torch.rand(n, 4, generator=generator) * torch.tensor([0.6, 0.6, 0.3, 0.3])  # cx, cy, w, h
    boxes += torch.tensor([0.2, 0.2, 0.05, 0.05])
    targets = torch.cat((torch.arange(batch_size).repeat_interleave(4)[:, None].float(),
                         torch.randint(0, nc, (n, 1), generator=generator).float(), boxes), 1)
    views = torch.full((batch_size,), -1, dtype=torch.long)
    return imgs.to(device), targets.to(device), views.to(device)


def images_per_second(cfg: str, imgsz: int, batch_size: int, device: torch.device, amp_on: bool,
                      channels_last: bool, iters: int = 30, warmup: int = 8) -> tuple[float, float]:
    """(images/s, peak GiB allocated) of `iters` timed steps after `warmup` untimed ones."""
    torch.manual_seed(0)
    model = build_model(ROOT / cfg, nc=80).to(device).train()
    hyp = scale_hyp_for_model(load_hyp("hyp.scratch-low.yaml"), model.detect.nl, 80, imgsz)
    imgs, targets, views = synthetic_batch(batch_size, imgsz, 80, device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
        imgs = imgs.contiguous(memory_format=torch.channels_last)
    optimizers = {"model": smart_optimizer(model, "SGD", hyp["lr0"], hyp["momentum"], hyp["weight_decay"])}
    parts = StepParts(forward=model, model=model, optimizers=optimizers, balancer=FixedWeights(("det",)),
                      compute_loss=ComputeLoss(model, hyp), task_names=("det",), ema=ModelEMA(model),
                      amp=Amp(amp_on, device.type, "float16" if device.type == "cuda" else "bfloat16"))
    state = StepState(accumulate=2)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = 0.0
    for ni in range(warmup + iters):
        if ni == warmup:
            sync()
            start = time.perf_counter()
        if train_step(parts, state, imgs, targets, views, ni, 0, ni) is None:
            raise RuntimeError(f"non-finite loss at iteration {ni}")
    sync()
    rate = batch_size * iters / (time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else 0.0
    return rate, peak


def measure(cfg: str, imgsz: int, batch_size: int, device: torch.device, iters: int = 30) -> dict[str, tuple]:
    """Every configuration of CONFIGS: name -> (images/s, peak GiB)."""
    torch.backends.cudnn.benchmark = True
    results, level = {}, LOGGER.level
    LOGGER.setLevel(logging.WARNING)  # one model and optimizer per configuration: their info lines are noise here
    try:
        for name, (amp_on, channels_last) in CONFIGS.items():
            results[name] = images_per_second(cfg, imgsz, batch_size, device, amp_on, channels_last, iters=iters)
            if device.type == "cuda":
                torch.cuda.empty_cache()
    finally:
        LOGGER.setLevel(level)
    return results


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cfg", default="models/yolov5s.yaml")
    p.add_argument("--imgsz", "--img", type=int, default=640)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--iters", type=int, default=30)
    p.add_argument("--device", default="")
    opt = p.parse_args()
    dev = select_device(opt.device)
    for config, (ips, gib) in measure(opt.cfg, opt.imgsz, opt.batch_size, dev, opt.iters).items():
        print(f"{config:9s} {ips:8.1f} images/s  peak {gib:.1f} GiB")
