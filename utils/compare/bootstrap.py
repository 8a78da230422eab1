"""Patient bootstrap of test-set figures: how much a strategy's lead depends on which patients happened to be tested.

Seeds measure how much training varies; they say nothing about the test set, which on the patient split is 17
patients. Resampling those patients with replacement (the same draw for every run, so the differences are paired)
and recomputing mAP50 and view accuracy from each image's matched predictions gives the other half: a percentile
interval for each strategy's difference to the single-task runs and to a reference strategy.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
from tqdm import tqdm

from utils.compare.stats import Stat, delta_m
from utils.data.groups import group_images
from utils.evaluation.metrics import ap_per_class
from utils.evaluation.validation import ImageMatches
from utils.evaluation.view_metrics import NO_VIEW

DETECTION_REFERENCE, VIEW_REFERENCE = "detection_only", "view_only"


@dataclass
class PackedRun:
    """One run's per-image matches as flat arrays, so that any multiset of images is a cheap gather."""

    paths: list[str]
    correct50: np.ndarray  # bool [n_pred]: true positive at IoU 0.5
    conf: np.ndarray
    pred_cls: np.ndarray
    pred_start: np.ndarray  # [n_images + 1]: image i's predictions are [pred_start[i], pred_start[i + 1])
    target_cls: np.ndarray
    target_start: np.ndarray  # [n_images + 1]
    view_true: np.ndarray  # [n_images], NO_VIEW where unlabelled
    view_pred: np.ndarray  # [n_images], NO_VIEW without a view head


def pack(images: Sequence[ImageMatches]) -> PackedRun:
    """Flatten a run's ImageMatches (in loader order)."""
    def starts(sizes: list[int]) -> np.ndarray:
        return np.concatenate(([0], np.cumsum(sizes))).astype(np.int64)

    def cat(arrays: list[np.ndarray], dtype) -> np.ndarray:
        return np.concatenate(arrays).astype(dtype) if arrays else np.zeros(0, dtype)

    return PackedRun(
        paths=[m.path for m in images],
        correct50=cat([np.asarray(m.correct)[:, 0] for m in images], bool),
        conf=cat([np.asarray(m.conf) for m in images], np.float64),
        pred_cls=cat([np.asarray(m.pred_cls) for m in images], np.int64),
        pred_start=starts([len(m.conf) for m in images]),
        target_cls=cat([np.asarray(m.target_cls) for m in images], np.int64),
        target_start=starts([len(m.target_cls) for m in images]),
        view_true=np.array([m.view_true for m in images], dtype=np.int64),
        view_pred=np.array([m.view_pred for m in images], dtype=np.int64),
    )


def _gather(values: np.ndarray, start: np.ndarray, images: np.ndarray) -> np.ndarray:
    """values of the given images (repeats allowed), concatenated in that order."""
    if len(images) == 0:
        return values[:0]
    return np.concatenate([values[start[i]:start[i + 1]] for i in images])


def map50(run: PackedRun, images: np.ndarray) -> float:
    """mAP50 of the run on that multiset of images, as evaluate() computes it; nan when they hold no label."""
    target_cls = _gather(run.target_cls, run.target_start, images)
    if len(target_cls) == 0:
        return float("nan")
    tp = _gather(run.correct50, run.pred_start, images)[:, None]
    conf = _gather(run.conf, run.pred_start, images)
    pred_cls = _gather(run.pred_cls, run.pred_start, images)
    return float(ap_per_class(tp, conf, pred_cls, target_cls).ap[:, 0].mean())


def view_accuracy(run: PackedRun, images: np.ndarray) -> float:
    """Share of the view-labelled images whose arg-max view is right; nan without labels or without a view head."""
    true, pred = run.view_true[images], run.view_pred[images]
    labelled = true != NO_VIEW
    if not labelled.any() or (pred == NO_VIEW).all():
        return float("nan")
    return float((true[labelled] == pred[labelled]).mean())


def patient_groups(paths: Sequence[str], by: str = "patient") -> list[np.ndarray]:
    """Image indices of each group (utils.data.groups.group_images), groups in sorted order."""
    index = {path: i for i, path in enumerate(paths)}
    return [np.array(sorted(index[p] for p in members), dtype=np.int64) for members in group_images(paths, by).values()]


def resample(groups: Sequence[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """Image indices of len(groups) groups drawn with replacement (a drawn group brings all its images)."""
    drawn = rng.integers(0, len(groups), len(groups))
    return np.concatenate([groups[g] for g in drawn])


def check_same_images(runs: Mapping[str, Sequence[PackedRun]]) -> list[str]:
    """The image paths every run was evaluated on; ValueError naming the first run whose list differs."""
    reference: list[str] | None = None
    for strategy, seeds in runs.items():
        for i, run in enumerate(seeds):
            if reference is None:
                reference = run.paths
            elif run.paths != reference:
                raise ValueError(f"{strategy} (run {i}) was evaluated on other images than the first run: "
                                 "every run must use the same test set in the same order")
    return reference or []


def bootstrap(runs: Mapping[str, Sequence[PackedRun]], groups: Sequence[np.ndarray], n: int,
              seed: int = 0) -> dict[str, np.ndarray]:
    """{strategy: [n + 1, seeds, 2] of (mAP50, view accuracy) per seed}; seed_means() reduces the seed axis.

    Row 0 is the whole test set (the observed figures); rows 1..n are patient resamples, the same draw for every
    strategy, so differences between strategies are paired.
    """
    rng = np.random.default_rng(seed)
    draws = [np.concatenate(list(groups))] + [resample(groups, rng) for _ in range(n)]
    figures: dict[str, list] = {strategy: [] for strategy in runs}
    for draw in tqdm(draws, desc="patient resamples", disable=n < 100):
        for strategy, seeds in runs.items():
            figures[strategy].append([[map50(run, draw), view_accuracy(run, draw)] for run in seeds])
    return {strategy: np.array(rows) for strategy, rows in figures.items()}


def seed_means(per_seed: Mapping[str, np.ndarray], rng: np.random.Generator | None = None) -> dict[str, np.ndarray]:
    """{strategy: [n + 1, 2]}: each row's mean over the strategy's seeds.

    With rng, rows 1..n average a draw of the seeds with replacement instead (row 0 keeps them all), so that an
    interval covers which seeds were run as well as which patients were tested. With two seeds that draw is crude
    (a, a / a, b / b, b), but it widens the interval by the seed spread instead of ignoring it.
    """
    out = {}
    for strategy, figures in per_seed.items():
        if rng is None:
            out[strategy] = figures.mean(1)
            continue
        rows, seeds = figures.shape[:2]
        pick = rng.integers(0, seeds, (rows, seeds))
        pick[0] = np.arange(seeds)
        out[strategy] = np.take_along_axis(figures, pick[:, :, None], 1).mean(1)
    return out


def _stats(figures: np.ndarray) -> dict[str, Stat]:
    return {"mAP50": Stat(float(figures[0]), None, 1), "view_accuracy": Stat(float(figures[1]), None, 1)}


def delta_m_samples(samples: Mapping[str, np.ndarray], strategy: str) -> np.ndarray:
    """delta_m of the strategy in every row of seed_means()'s output, against the same row of the references."""
    det, view = samples.get(DETECTION_REFERENCE), samples.get(VIEW_REFERENCE)
    if det is None or view is None:
        return np.full(len(samples[strategy]), np.nan)
    values = [delta_m(_stats(s), _stats(d), _stats(v)) for s, d, v in zip(samples[strategy], det, view)]
    return np.array([np.nan if x is None else x for x in values], dtype=np.float64)


@dataclass
class Interval:
    """A difference on the whole test set and the percentile interval of its resamples."""

    observed: float
    low: float
    high: float
    share_above_zero: float  # of the resamples


def interval(samples: np.ndarray, level: float = 0.95) -> Interval:
    """Row 0 is observed; the interval and share come from rows 1.. (nan rows, a resample without labels, dropped)."""
    resampled = samples[1:][np.isfinite(samples[1:])]
    if len(resampled) == 0:
        return Interval(float(samples[0]), float("nan"), float("nan"), float("nan"))
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(resampled, [tail, 100 - tail])
    return Interval(float(samples[0]), float(low), float(high), float((resampled > 0).mean()))


def differences(samples: Mapping[str, np.ndarray], reference: str | None = None) -> dict[tuple[str, str], np.ndarray]:
    """Per joint strategy: mAP50 minus detection_only's, view accuracy minus view_only's, delta_m, and (with a
    reference strategy) its delta_m minus the reference's, each as [n + 1] paired samples."""
    out = {}
    joint = [s for s in samples if s not in (DETECTION_REFERENCE, VIEW_REFERENCE)]
    ref_delta = delta_m_samples(samples, reference) if reference in samples else None
    for strategy in joint:
        if DETECTION_REFERENCE in samples:
            out[(strategy, "mAP50 - detection_only")] = samples[strategy][:, 0] - samples[DETECTION_REFERENCE][:, 0]
        if VIEW_REFERENCE in samples:
            out[(strategy, "view accuracy - view_only")] = samples[strategy][:, 1] - samples[VIEW_REFERENCE][:, 1]
        own = delta_m_samples(samples, strategy)
        out[(strategy, "delta_m")] = own
        if ref_delta is not None and strategy != reference:
            out[(strategy, f"delta_m - {reference}")] = own - ref_delta
    return out

