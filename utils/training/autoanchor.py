"""AutoAnchor: check that the model's anchors fit the dataset's box sizes; re-fit them (k-means + evolution) if not."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn as nn
from tqdm import tqdm

from models.yolo import check_anchor_order
from utils.logger import LOGGER

PREFIX = "AutoAnchor: "
GOOD_BPR = 0.98  # below this best possible recall, anchors are re-fitted


def _as_float_array(values: Any) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    return np.asarray(values, dtype=np.float64).reshape(-1, 2)


def _best_ratio_per_anchor(anchors: np.ndarray, wh: np.ndarray) -> np.ndarray:
    """[n, k] worst-side size agreement min(r, 1/r) between every box and every anchor (1 = same size)."""
    ratio = wh[:, None, :] / anchors[None, :, :]
    return np.minimum(ratio, 1.0 / ratio).min(2)


def best_possible_recall(anchors_px: Any, wh: Any, thr: float = 4.0) -> tuple[float, float]:
    """(BPR, anchors above threshold per box): the share of boxes that some anchor can match under anchor_t=thr."""
    anchors, boxes = _as_float_array(anchors_px), _as_float_array(wh)
    if len(boxes) == 0:
        return 0.0, 0.0
    agreement = _best_ratio_per_anchor(anchors, boxes)
    best = agreement.max(1)
    return float((best > 1.0 / thr).mean()), float((agreement > 1.0 / thr).sum(1).mean())


anchor_fitness = best_possible_recall  # the name used in the project brief


def _evolution_fitness(anchors: np.ndarray, wh: np.ndarray, thr: float) -> float:
    """Mean best agreement, counting only boxes that some anchor matches: the quantity the evolution maximises."""
    best = _best_ratio_per_anchor(anchors, wh).max(1)
    return float((best * (best > 1.0 / thr)).mean())


def label_wh_pixels(dataset: Any, img_size: int, jitter_seed: int | None = None) -> np.ndarray:
    """Box sizes [n, 2] in pixels once each image is resized so its long side is img_size (optional 0.9-1.1 jitter)."""
    shapes = np.asarray(dataset.shapes, dtype=np.float64).reshape(-1, 2)
    shapes = img_size * shapes / shapes.max(1, keepdims=True)
    if jitter_seed is not None:
        shapes = shapes * np.random.default_rng(jitter_seed).uniform(0.9, 1.1, size=(len(shapes), 1))
    sizes = [np.asarray(lab, dtype=np.float64).reshape(-1, 5)[:, 3:5] * shape
             for shape, lab in zip(shapes, dataset.labels)]
    return np.concatenate(sizes, 0) if sizes else np.zeros((0, 2))


def _lloyd_kmeans(
    points: np.ndarray, k: int, rng: np.random.Generator, iters: int = 50, restarts: int = 3
) -> np.ndarray:
    """Plain k-means (k-means++ seeding, Lloyd updates); the best of a few restarts by distortion."""
    best_centres, best_distortion = None, np.inf
    for _ in range(restarts):
        centres = points[rng.integers(len(points))][None]
        while len(centres) < k:  # k-means++: next seed drawn with probability proportional to squared distance
            d2 = ((points[:, None] - centres[None]) ** 2).sum(2).min(1)
            probs = d2 / d2.sum() if d2.sum() > 0 else np.full(len(points), 1.0 / len(points))
            centres = np.vstack((centres, points[rng.choice(len(points), p=probs)]))
        for _ in range(iters):
            d2 = ((points[:, None] - centres[None]) ** 2).sum(2)
            assign = d2.argmin(1)
            updated = np.array([points[assign == j].mean(0) if (assign == j).any() else centres[j] for j in range(k)])
            if np.allclose(updated, centres):
                break
            centres = updated
        distortion = np.sqrt(((points[:, None] - centres[None]) ** 2).sum(2).min(1)).mean()
        if distortion < best_distortion:
            best_centres, best_distortion = centres, distortion
    return best_centres


def _summarise(anchors: np.ndarray, wh: np.ndarray, thr: float) -> str:
    bpr, aat = best_possible_recall(anchors, wh, thr)
    sizes = ", ".join(f"{round(w)},{round(h)}" for w, h in anchors)
    return f"{PREFIX}thr={thr:.2f}: {bpr:.4f} best possible recall, {aat:.2f} anchors past thr; anchors: {sizes}"


def kmean_anchors(
    source: Any,
    n: int = 9,
    img_size: int = 640,
    thr: float = 4.0,
    gen: int = 1000,
    verbose: bool = True,
    seed: int = 0,
) -> np.ndarray:
    """Anchors [n, 2] (pixels, sorted by area) fitted to box sizes: k-means, then a mutation search on the fitness.

    `source` is either box sizes [m, 2] in pixels or a dataset with `.shapes` and `.labels` (sizes at img_size).
    """
    rng = np.random.default_rng(seed)
    is_sizes = isinstance(source, (np.ndarray, torch.Tensor, list))
    wh_all = _as_float_array(source) if is_sizes else label_wh_pixels(source, img_size)
    keep = (wh_all >= 2.0).any(1)
    if (~keep).any():
        LOGGER.warning(f"{PREFIX}WARNING {(~keep).sum()} of {len(wh_all)} labels are under 2 pixels and are left out")
    wh = wh_all[keep]
    if len(wh) == 0:
        raise ValueError(f"{PREFIX}no box of 2 pixels or more to fit anchors to")

    if len(wh) >= n:
        spread = wh.std(0)
        spread[spread == 0] = 1.0
        anchors = _lloyd_kmeans(wh / spread, n, rng) * spread
    else:
        LOGGER.warning(f"{PREFIX}WARNING only {len(wh)} boxes for {n} anchors; starting from random anchors")
        anchors = np.sort(rng.random((n, 2)) * img_size, axis=0)

    fitness = _evolution_fitness(anchors, wh, thr)
    mutation_prob, sigma = 0.9, 0.1
    bar = tqdm(range(gen), desc=f"{PREFIX}evolving anchors", disable=not verbose, bar_format="{l_bar}{bar:10}{r_bar}")
    for _ in bar:
        factor = np.ones_like(anchors)
        while (factor == 1).all():  # mutate until something changes
            mutate = rng.random(anchors.shape) < mutation_prob
            factor = (mutate * rng.random() * rng.standard_normal(anchors.shape) * sigma + 1.0).clip(0.3, 3.0)
        candidate = (anchors * factor).clip(min=2.0)
        candidate_fitness = _evolution_fitness(candidate, wh, thr)
        if candidate_fitness > fitness:
            fitness, anchors = candidate_fitness, candidate
            bar.desc = f"{PREFIX}evolving anchors, fitness {fitness:.4f}"

    anchors = anchors[np.argsort(anchors.prod(1))]
    if verbose:
        LOGGER.info(_summarise(anchors, wh, thr))
    return anchors.astype(np.float32)


def check_anchors(dataset: Any, model: nn.Module, thr: float = 4.0, imgsz: int = 640, gen: int = 1000) -> float:
    """Log the anchors' best possible recall on the dataset; below 0.98 re-fit them, kept only if recall improves.

    Returns the BPR of the anchors the model holds afterwards.
    """
    detect = (model.module if hasattr(model, "module") else model).detect
    wh = label_wh_pixels(dataset, imgsz, jitter_seed=0)
    stride = detect.stride.to(detect.anchors.device).view(-1, 1, 1)
    anchors_px = (detect.anchors * stride).detach().cpu().view(-1, 2)
    bpr, aat = best_possible_recall(anchors_px, wh, thr)
    message = f"{PREFIX}{aat:.2f} anchors/target, {bpr:.3f} Best Possible Recall (BPR). "
    if bpr >= GOOD_BPR:
        LOGGER.info(f"{message}Current anchors are a good fit to dataset")
        return bpr

    LOGGER.info(f"{message}Anchors are a poor fit to dataset, attempting to improve...")
    new_anchors = kmean_anchors(wh, n=anchors_px.shape[0], img_size=imgsz, thr=thr, gen=gen, verbose=True)
    new_bpr, _ = best_possible_recall(new_anchors, wh, thr)
    if new_bpr <= bpr:
        LOGGER.info(f"{PREFIX}Original anchors better than new anchors ({new_bpr:.3f} BPR), keeping them")
        return bpr
    new_px = torch.as_tensor(new_anchors, dtype=detect.anchors.dtype, device=detect.anchors.device)
    with torch.no_grad():
        detect.anchors[:] = new_px.view_as(detect.anchors)
        check_anchor_order(detect)  # compares areas, so run it in pixels, before the division by stride
        detect.anchors /= stride.to(detect.anchors.dtype)
    LOGGER.info(
        f"{PREFIX}New anchors saved to model ({new_bpr:.3f} BPR). Update the model *.yaml to use them in future runs."
    )
    return new_bpr
