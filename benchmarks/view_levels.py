"""Which neck levels should the view head pool? Measured with linear probes, not guessed.

Takes a DETECTION-ONLY checkpoint (its features never saw a view label), pools each neck
level (P3/8, P4/16, P5/32) over the image, and fits a linear softmax classifier of the
view on every level set, using the med TRAIN split minus a patient-grouped hold-out; it
reports accuracy and balanced accuracy on the hold-out (no hold-out patient is used to
fit the probe). The shipped valid split is not used, so the default is not tuned to it.

    python benchmarks/view_levels.py --weights runs/records/detection_only/weights/best.pt
"""
from __future__ import annotations

import argparse
import random
import sys
from collections import defaultdict
from itertools import combinations
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from utils.data.dataset_yaml import check_dataset  # noqa: E402
from utils.data.loaders import create_dataloader  # noqa: E402
from utils.data.sources import find_images  # noqa: E402
from utils.evaluation.view_metrics import compute_view_metrics  # noqa: E402
from utils.model_loading import load_inference_model  # noqa: E402


def patient_holdout(images: list[str], fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Split image paths so that no patient (file-name prefix before the first '-') is on both sides."""
    by_patient: dict[str, list[str]] = defaultdict(list)
    for path in images:
        by_patient[Path(path).name.split("-")[0]].append(path)
    patients = sorted(by_patient)
    random.Random(seed).shuffle(patients)
    held: list[str] = []
    for patient in patients:
        if len(held) >= fraction * len(images):
            break
        held += by_patient[patient]
    held_set = set(held)
    return [p for p in images if p not in held_set], held


@torch.inference_mode()
def pooled_features(model, images: list[str], imgsz: int, n_views: int, nc: int,
                    grid: int = 0) -> tuple[list[np.ndarray], np.ndarray, list[str]]:
    """Per level, the pooled neck map of every image; the view labels; the image order (rect batches sort images).

    grid 0: global average [N, C_level]; grid g: average over a g x g grid of cells, flattened
    [N, C_level * g * g], which keeps where in the frame a structure is (GAP discards it)."""
    loader, dataset = create_dataloader(images, imgsz, 32, 32, rect=True, pad=0.5, workers=2, nc=nc, n_views=n_views)
    per_level: list[list[np.ndarray]] = [[], [], []]
    views = []
    for imgs, _, batch_views, *_ in loader:
        for level, fmap in enumerate(model.forward_features(imgs.float() / 255)):
            pooled = fmap.mean((2, 3)) if grid == 0 else torch.nn.functional.adaptive_avg_pool2d(fmap, grid).flatten(1)
            per_level[level].append(pooled.numpy())
        views.append(batch_views.numpy())
    return [np.concatenate(f) for f in per_level], np.concatenate(views), dataset.img_files


def fit_probe(x: np.ndarray, y: np.ndarray, n_views: int, epochs: int = 300) -> torch.nn.Linear:
    """Multinomial logistic regression (full batch, L2-regularised, standardised inputs)."""
    torch.manual_seed(0)
    probe = torch.nn.Linear(x.shape[1], n_views)
    optimizer = torch.optim.LBFGS(probe.parameters(), lr=0.5, max_iter=epochs)
    xt, yt = torch.from_numpy(x).float(), torch.from_numpy(y).long()

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(probe(xt), yt) + 1e-3 * probe.weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return probe


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", required=True, help="a detection-only checkpoint of this project")
    p.add_argument("--data", default="data/med.yaml")
    p.add_argument("--img", type=int, default=320)
    p.add_argument("--holdout", type=float, default=0.2)
    p.add_argument("--seeds", type=int, default=3, help="number of patient-grouped hold-outs")
    p.add_argument("--grid", type=int, default=0, help="0: global average pooling; g: g x g cells, flattened")
    args = p.parse_args()

    data = check_dataset(args.data)
    n_views, nc = len(data["cls_names"]), int(data["nc"])
    model, _ = load_inference_model(args.weights, torch.device("cpu"))
    images = find_images(data["train"])
    feats, views, order = pooled_features(model, images, args.img, n_views, nc, args.grid)
    position = {path: i for i, path in enumerate(order)}
    level_sets = [c for r in (1, 2, 3) for c in combinations(range(3), r)]
    scores: dict[tuple, list[tuple[float, float]]] = defaultdict(list)
    for seed in range(args.seeds):
        train_imgs, held = patient_holdout(images, args.holdout, seed)
        tr = np.array([position[p] for p in train_imgs if views[position[p]] >= 0])
        te = np.array([position[p] for p in held if views[position[p]] >= 0])
        for levels in level_sets:
            x = np.concatenate([feats[level] for level in levels], 1)
            mean, std = x[tr].mean(0), x[tr].std(0) + 1e-6
            probe = fit_probe((x[tr] - mean) / std, views[tr], n_views)
            pred = probe(torch.from_numpy((x[te] - mean) / std).float()).argmax(1).numpy()
            m = compute_view_metrics(views[te], pred, n_views)
            scores[levels].append((m.accuracy, m.balanced_accuracy))
    pooling = "global average" if args.grid == 0 else f"{args.grid}x{args.grid} grid"
    print(f"linear probes on {pooling}-pooled neck features of {args.weights}; {args.seeds} patient-grouped hold-outs "
          f"of {args.holdout:.0%} of the train split")
    print(f"{'levels':>10} {'channels':>9} {'accuracy':>16} {'balanced acc':>16}")
    for levels, values in scores.items():
        acc, bal = np.array(values).T
        channels = sum(feats[level].shape[1] for level in levels)
        print(f"{str(levels):>10} {channels:>9} {acc.mean():9.3f} ± {acc.std():.3f} {bal.mean():9.3f} ± {bal.std():.3f}")


if __name__ == "__main__":
    main()
