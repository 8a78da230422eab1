"""Step time and peak memory of the training strategies, same model, batch and data, in one run.

Strategies: `fixed` (train.py, joint model, fixed task weights), `gradnorm`
(train_gradnorm.py) and `dual` (train_dual.py, two networks). One training step =
forward, detection + view losses, balancer.combine, backward, optimizer step(s),
balancer.step. Each measurement runs in a fresh child process (so its peak RSS is its
own) on the same pre-decoded batches; rounds alternate the strategies so machine noise
hits all of them alike, and ratios are taken within each round.

    python benchmarks/strategy_speed.py --img 320 --batch-size 16 --rounds 3 --steps 8
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

STRATEGIES = ("fixed", "gradnorm", "dual")


def measure(strategy: str, opt: argparse.Namespace, queue) -> None:
    """Child process: build the strategy, time `opt.steps` steps after 2 warm-up steps, report to the queue."""

    from models.yolo_cls import DualModel, JointModel, last_shared_weight
    from utils.data.dataset_yaml import check_dataset
    from utils.data.loaders import create_dataloader
    from utils.torch_utils import init_seeds, smart_optimizer
    from utils.training.balancers import FixedWeights
    from utils.training.run_setup import load_hyp, scale_hyp_for_model
    from utils.training.step import task_losses
    from utils.training.gradnorm import GradNorm
    from utils.training.loss import ComputeLoss

    init_seeds(0)
    data = check_dataset(opt.data)
    nc, n_views = int(data["nc"]), len(data["cls_names"])
    hyp = load_hyp("hyp.medical.yaml")
    loader, _ = create_dataloader(data["train"], opt.img, opt.batch_size, 32, hyp=hyp, augment=True, workers=0,
                                  shuffle=True, nc=nc, n_views=n_views, seed=0)
    batches = [b for _, b in zip(range(opt.steps + 2), loader)]
    if strategy == "dual":
        model = DualModel(opt.cfg, opt.cls_cfg, nc=nc, n_views=n_views)
        optimizers = [smart_optimizer(model.detector, "SGD", 0.001, 0.9, 0.0),
                      smart_optimizer(model.classifier, "SGD", 0.001, 0.9, 0.0)]
    else:
        model = JointModel(opt.cfg, nc=nc, n_views=n_views)
        optimizers = [smart_optimizer(model, "SGD", 0.001, 0.9, 0.0)]
    balancer = GradNorm(("det", "view"), last_shared_weight(model)) if strategy == "gradnorm" else FixedWeights(("det", "view"))
    compute_loss = ComputeLoss(model, scale_hyp_for_model(hyp, 3, nc, opt.img))
    model.train()
    times = []
    for i, (imgs, targets, views, *_) in enumerate(batches):
        t0 = time.perf_counter()
        losses, _ = task_losses(model(imgs.float() / 255), targets, views, compute_loss, imgs.shape[0])
        balancer.combine(losses).backward()
        for o in optimizers:
            o.step()
            o.zero_grad()
        balancer.step()
        if i >= 2:
            times.append(time.perf_counter() - t0)
    info = model.info(imgsz=opt.img)
    queue.put((strategy, statistics.median(times), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
               info["parameters"], info["gflops"]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="data/med.yaml")
    p.add_argument("--cfg", default="models/yolov5n.yaml")
    p.add_argument("--cls-cfg", default="models/yolov5n-cls-thin.yaml")
    p.add_argument("--img", type=int, default=320)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=8, help="timed steps per strategy per round")
    p.add_argument("--strategies", nargs="+", choices=STRATEGIES, default=list(STRATEGIES))
    opt = p.parse_args()

    ctx = mp.get_context("spawn")
    rows: dict[str, list[tuple]] = {s: [] for s in opt.strategies}
    for _ in range(opt.rounds):
        for strategy in opt.strategies:
            queue = ctx.Queue()
            child = ctx.Process(target=measure, args=(strategy, opt, queue))
            child.start()
            rows[strategy].append(queue.get())
            child.join()
    print(f"{opt.cfg} (+ {opt.cls_cfg} for dual), img {opt.img}, batch {opt.batch_size}, "
          f"{opt.rounds} rounds x {opt.steps} steps, CPU")
    print(f"{'strategy':>9} {'step ms (median)':>17} {'vs fixed':>9} {'per-round ratios':>24} {'peak RSS GB':>12} "
          f"{'params':>10} {'GFLOPs':>7}")
    base = [r[1] for r in rows.get("fixed", [])]
    for strategy, results in rows.items():
        step = statistics.median(r[1] for r in results)
        ratios = [r[1] / b for r, b in zip(results, base)] if base else []
        ratio = f"{statistics.median(ratios):.3f}" if ratios else "-"
        print(f"{strategy:>9} {step * 1e3:17.0f} {ratio:>9} {str([round(x, 3) for x in ratios]):>24} "
              f"{max(r[2] for r in results):12.2f} {results[0][3]:>10,} {results[0][4]:7.2f}")


if __name__ == "__main__":
    main()
