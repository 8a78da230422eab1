"""Step time of GradNorm over fixed task weights, same model, batch and data, in one run.

One training step = forward, detection + view losses, balancer.combine, backward,
optimizer step, balancer.step. Batches are decoded once up front so the loader does not
add noise; fixed and GradNorm steps alternate in rounds so machine noise hits both alike.

    python benchmarks/gradnorm_speed.py --img 320 --batch-size 16 --rounds 5 --steps 6
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.yolo_cls import JointModel, last_shared_weight  # noqa: E402
from utils.dataloaders import create_dataloader  # noqa: E402
from utils.dataset_yaml import check_dataset  # noqa: E402
from utils.engine import load_hyp, scale_hyp_for_model, task_losses  # noqa: E402
from utils.gradnorm import FixedWeights, GradNorm  # noqa: E402
from utils.loss import ComputeLoss  # noqa: E402
from utils.torch_utils import init_seeds, smart_optimizer  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="data/med.yaml")
    p.add_argument("--cfg", default="models/yolov5n.yaml")
    p.add_argument("--img", type=int, default=320)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=6, help="timed steps per strategy per round")
    opt = p.parse_args()

    init_seeds(0)
    data = check_dataset(opt.data)
    nc, n_views = int(data["nc"]), len(data["cls_names"])
    hyp = load_hyp("hyp.medical.yaml")
    loader, _ = create_dataloader(data["train"], opt.img, opt.batch_size, 32, hyp=hyp, augment=True, workers=2,
                                  shuffle=True, nc=nc, n_views=n_views)
    batches = [b for _, b in zip(range(opt.steps), loader)]
    model = JointModel(opt.cfg, nc=nc, n_views=n_views)
    compute_loss = ComputeLoss(model, scale_hyp_for_model(hyp, 3, nc, opt.img))
    optimizer = smart_optimizer(model, "SGD", 0.001, 0.9, 0.0)
    balancers = {
        "fixed": FixedWeights(("det", "view")),
        "gradnorm": GradNorm(("det", "view"), last_shared_weight(model)),
    }

    def step(balancer, imgs, targets, views) -> float:
        t0 = time.perf_counter()
        losses, _ = task_losses(model(imgs.float() / 255), targets, views, compute_loss, imgs.shape[0])
        balancer.combine(losses).backward()
        optimizer.step()
        optimizer.zero_grad()
        balancer.step()
        return time.perf_counter() - t0

    model.train()
    for imgs, targets, views, *_ in batches[:2]:  # warm-up, untimed
        for balancer in balancers.values():
            step(balancer, imgs, targets, views)
    times: dict[str, list[float]] = {name: [] for name in balancers}
    ratios = []
    for _ in range(opt.rounds):
        round_medians = {}
        for name, balancer in balancers.items():
            samples = [step(balancer, imgs, targets, views) for imgs, targets, views, *_ in batches]
            times[name] += samples
            round_medians[name] = statistics.median(samples)
        ratios.append(round_medians["gradnorm"] / round_medians["fixed"])
    fixed, gradnorm = statistics.median(times["fixed"]), statistics.median(times["gradnorm"])
    print(f"{opt.cfg}, img {opt.img}, batch {opt.batch_size}, {opt.rounds} rounds x {opt.steps} steps, "
          f"torch threads {torch.get_num_threads()}")
    print(f"median step time: fixed weights {fixed * 1e3:.0f} ms, GradNorm {gradnorm * 1e3:.0f} ms")
    print(f"GradNorm / fixed: {gradnorm / fixed:.3f} (median over all steps); per-round ratios "
          f"{[round(r, 3) for r in ratios]}, median {statistics.median(ratios):.3f}")


if __name__ == "__main__":
    main()
