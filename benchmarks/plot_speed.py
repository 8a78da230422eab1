"""Time of the label plots every training run draws at its start (labels.jpg and labels_correlogram.jpg).

    python benchmarks/plot_speed.py --labels 1000 10000 --rounds 5

plot_labels on random boxes of 4 classes, each size --rounds times in this process (the first call also pays
matplotlib's font and backend set-up, so it is timed apart); prints the median seconds per call. It runs once per
training, so it only matters when it stops being small next to an epoch.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from utils.plots import plot_labels  # noqa: E402

NAMES = ["AR", "MR", "PR", "TR"]


def random_labels(n: int, seed: int = 0) -> torch.Tensor:
    """n rows of cls, cx, cy, w, h (normalised), 4 classes."""
    rng = np.random.default_rng(seed)
    return torch.tensor(np.c_[rng.integers(0, 4, n), rng.uniform(0.1, 0.9, (n, 2)), rng.uniform(0.05, 0.4, (n, 2))])


def time_call(labels: torch.Tensor, folder: Path) -> float:
    start = time.perf_counter()
    plot_labels(labels, NAMES, folder)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--labels", type=int, nargs="+", default=[1000, 10000], help="label counts to time")
    p.add_argument("--rounds", type=int, default=5, help="timed calls per count (median reported)")
    opt = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="plot_speed_") as tmp:
        first = time_call(random_labels(10), Path(tmp))
        print(f"first call (set-up included, 10 labels): {first:.2f} s")
        for n in opt.labels:
            labels = random_labels(n)
            times = [time_call(labels, Path(tmp)) for _ in range(opt.rounds)]
            print(f"{n} labels: median {statistics.median(times):.2f} s over {opt.rounds} calls "
                  f"(min {min(times):.2f}, max {max(times):.2f})")


if __name__ == "__main__":
    main(sys.argv[1:])
