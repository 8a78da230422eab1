"""Training throughput (images/s) and validation latency (ms/image) on the med data.

Times the real pipeline (DataLoader with augmentation per the hyp file, forward, loss,
backward, optimizer step, EMA) for a given model / image size / batch, after a few
warm-up iterations, and prints the median over repeats:

    python benchmarks/train_speed.py --cfg models/yolov5n.yaml --img 320 --batch-size 16
"""
from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.yolo import DetectionModel  # noqa: E402
from utils.data.dataset_yaml import check_dataset  # noqa: E402
from utils.data.loaders import create_dataloader  # noqa: E402
from utils.evaluation.validation import evaluate  # noqa: E402
from utils.torch_utils import ModelEMA, init_seeds, smart_optimizer  # noqa: E402
from utils.training.optim import NOMINAL_BATCH  # noqa: E402
from utils.training.run_setup import load_hyp, scale_hyp_for_model  # noqa: E402
from utils.training.loss import ComputeLoss  # noqa: E402


def parse_opt() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="data/med.yaml")
    p.add_argument("--cfg", default="models/yolov5n.yaml")
    p.add_argument("--hyp", default="data/hyps/hyp.scratch-low.yaml")
    p.add_argument("--imgsz", "--img", type=int, default=320)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--iters", type=int, default=10, help="timed training iterations per repeat")
    p.add_argument("--warmup", type=int, default=3, help="untimed iterations before each repeat")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--val-batches", type=int, default=4, help="validation batches timed per repeat")
    p.add_argument("--cache", default=None, help="ram to cache decoded images")
    p.add_argument("--rect", action="store_true")
    p.add_argument("--rect-shuffle", action="store_true", help="shuffled batches of one letterbox shape (256x320 here)")
    return p.parse_args()


def time_training(opt: argparse.Namespace, model, loader, compute_loss, optimizer, ema) -> float:
    """Images per second over `opt.iters` iterations (data loading included), after warm-up."""
    accumulate = max(round(NOMINAL_BATCH / opt.batch_size), 1)
    it = iter(loader)
    n_images, t0 = 0, 0.0
    for i in range(opt.warmup + opt.iters):
        if i == opt.warmup:
            t0, n_images = time.perf_counter(), 0
        try:
            imgs, targets, *_ = next(it)
        except StopIteration:
            it = iter(loader)
            imgs, targets, *_ = next(it)
        loss, _ = compute_loss(model(imgs.float() / 255).det, targets)
        loss.backward()
        if (i + 1) % accumulate == 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
            optimizer.step()
            optimizer.zero_grad()
            ema.update(model)
        n_images += imgs.shape[0]
    return n_images / (time.perf_counter() - t0)


def main() -> None:
    opt = parse_opt()
    init_seeds(0)
    data = check_dataset(opt.data)
    hyp = load_hyp(opt.hyp)
    model = DetectionModel(opt.cfg, nc=int(data["nc"]))
    info = model.info()
    stride = max(int(model.stride.max()), 32)
    train_loader, _ = create_dataloader(data["train"], opt.imgsz, opt.batch_size, stride, hyp=hyp, augment=True,
                                        cache=opt.cache, rect=opt.rect, workers=opt.workers, shuffle=not opt.rect,
                                        nc=int(data["nc"]), rect_shuffle=opt.rect_shuffle)
    val_loader, _ = create_dataloader(data["val"], opt.imgsz, opt.batch_size * 2, stride, rect=True, pad=0.5,
                                      workers=opt.workers, nc=int(data["nc"]))
    hyp = scale_hyp_for_model(hyp, model.detect.nl, int(data["nc"]), opt.imgsz)
    compute_loss = ComputeLoss(model, hyp)
    optimizer = smart_optimizer(model, "SGD", hyp["lr0"], hyp["momentum"], hyp["weight_decay"])
    ema = ModelEMA(model)

    train_rates, val_ms = [], []
    for _ in range(opt.repeats):
        model.train()
        train_rates.append(time_training(opt, model, train_loader, compute_loss, optimizer, ema))
        subset = [b for _, b in zip(range(opt.val_batches), val_loader)]
        t0 = time.perf_counter()
        result = evaluate(ema.ema, subset, names=data["names"], device=torch.device("cpu"), training=True)
        val_ms.append((time.perf_counter() - t0) / max(result.n_images, 1) * 1e3)
    peak_rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    print(f"model {opt.cfg} ({info['parameters'] / 1e6:.2f}M params, {info['gflops']:.1f} GFLOPs at 640), "
          f"img {opt.imgsz}, batch {opt.batch_size}, workers {opt.workers}, torch threads {torch.get_num_threads()}, "
          f"hyp {Path(opt.hyp).name}, cache {opt.cache}, rect {opt.rect}, rect-shuffle {opt.rect_shuffle}")
    print(f"training:   median {statistics.median(train_rates):.2f} images/s "
          f"({statistics.median(train_rates) and opt.batch_size / statistics.median(train_rates):.2f} s/iteration), "
          f"runs {[round(r, 2) for r in train_rates]}")
    print(f"validation: median {statistics.median(val_ms):.1f} ms/image (model + NMS + metrics, pre-loaded batches), "
          f"runs {[round(v, 1) for v in val_ms]}")
    print(f"peak RSS (main process): {peak_rss_gb:.2f} GB")


if __name__ == "__main__":
    main()
