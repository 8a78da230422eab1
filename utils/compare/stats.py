"""Numbers over seeds: mean ± sd per strategy, the multi-task score delta_m, and the best weight of the fixed sweep."""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from utils.compare.columns import SINGLE_TASK, TEST_PREFIX
from utils.compare.strategies import parse_fixed_weight


@dataclass(frozen=True)
class Stat:
    """Mean, sample standard deviation (None for fewer than 2 values) and count of one column."""

    mean: float | None
    sd: float | None
    n: int


NO_STAT = Stat(None, None, 0)


def finite_number(value: Any) -> float | None:
    """A finite float, or None for '', None, NaN, inf and anything non-numeric."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def mean_sd(values: Iterable[Any]) -> Stat:
    """Mean and sample sd of the numeric values (missing ones skipped)."""
    numbers = [x for x in (finite_number(v) for v in values) if x is not None]
    if not numbers:
        return Stat(None, None, 0)
    return Stat(statistics.fmean(numbers), statistics.stdev(numbers) if len(numbers) > 1 else None, len(numbers))


def aggregate(rows: list[dict], columns: Iterable[str]) -> dict[tuple[str, str], dict[str, Stat]]:
    """Per (split, strategy): a Stat for each column over the rows with status 'ok' (the seeds)."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        if row.get("status") == "ok":
            groups.setdefault((row["split"], row["strategy"]), []).append(row)
    columns = list(columns)
    return {key: {c: mean_sd(r.get(c) for r in group) for c in columns} | {"n": Stat(len(group), None, len(group))}
            for key, group in groups.items()}


def aggregate_stages(summaries: list[dict]) -> dict[str, dict[str, Stat]]:
    """Per stage: mean ± sd over runs (seeds) of summarize_interference's figures."""
    stages: dict[str, list[dict]] = {}
    for summary in summaries:
        for stage, stats in summary.items():
            stages.setdefault(stage, []).append(stats)
    keys = ("n", "mean_cosine", "conflict_fraction", "median_norm_ratio")
    return {stage: {k: mean_sd(s.get(k) for s in stats) for k in keys} for stage, stats in stages.items()}


def delta_m(stats: Mapping[str, Stat], det_ref: Mapping[str, Stat], view_ref: Mapping[str, Stat],
            prefix: str = "") -> float | None:
    """Multi-task score: mean relative change of mAP50 and view accuracy against the single-task runs.

    Delta_m of Maninis et al. (2019) / Vandenhende et al. (2021) on this product's two headline metrics, from
    the given Stats' means (over seeds, or one run's values): 0 means both tasks as good as trained alone,
    -0.5 means half of each lost on average.
    Relative, so a task with small absolute numbers (mAP50 0.15 on an honest split) weighs as much as one
    with large ones (view accuracy 0.7). None when a figure or a reference is missing or zero.
    """
    def mean(source: Mapping[str, Stat], column: str) -> float | None:
        return source.get(prefix + column, NO_STAT).mean

    m, v = mean(stats, "mAP50"), mean(stats, "view_accuracy")
    m_ref, v_ref = mean(det_ref, "mAP50"), mean(view_ref, "view_accuracy")
    if None in (m, v, m_ref, v_ref) or not m_ref or not v_ref:
        return None
    return ((m - m_ref) / m_ref + (v - v_ref) / v_ref) / 2


def split_delta_m(agg: dict[tuple[str, str], dict[str, Stat]], split: str, strategy: str,
                  prefix: str = "") -> float | None:
    """delta_m of one strategy on one split against that split's detection_only and view_only runs."""
    def stats(name: str) -> dict[str, Stat]:
        return agg.get((split, name)) or {}

    return delta_m(stats(strategy), stats("detection_only"), stats("view_only"), prefix)


def has_test_figures(agg: dict[tuple[str, str], dict[str, Stat]], split: str, strategies: list[str]) -> bool:
    """Whether some strategy of the split was evaluated on a held-out test set."""
    return any((agg.get((split, s)) or {}).get(TEST_PREFIX + "mAP50", NO_STAT).mean is not None for s in strategies)


def best_fixed(agg: dict[tuple[str, str], dict[str, Stat]], split: str, strategies: list[str]) -> str | None:
    """The fixed_w* strategy with the highest val delta_m, or None.

    Without single-task runs to refer to, the highest mean of (mean mAP50, mean view accuracy) instead.
    """
    fixed = [s for s in strategies if parse_fixed_weight(s) is not None and (split, s) in agg]
    scored = [(score, s) for s in fixed if (score := split_delta_m(agg, split, s)) is not None]
    if scored:
        return max(scored)[1]
    for strategy in fixed:
        m, v = agg[(split, strategy)]["mAP50"].mean, agg[(split, strategy)]["view_accuracy"].mean
        if m is not None and v is not None:
            scored.append(((m + v) / 2, strategy))
    return max(scored)[1] if scored else None


def best_fixed_criterion(agg: dict[tuple[str, str], dict[str, Stat]], split: str, strategies: list[str]) -> str:
    """How best_fixed chose, in words for the report."""
    fixed = [s for s in strategies if parse_fixed_weight(s) is not None]
    if any(split_delta_m(agg, split, s) is not None for s in fixed):
        return "highest delta_m against detection_only and view_only"
    return "highest mean of mAP50 and view accuracy; no single-task runs to compute delta_m"


def with_delta_m(rows: list[dict]) -> list[dict]:
    """Copies of the rows with delta_m (and test_delta_m) for each finished joint run.

    The references are the split's mean detection_only mAP50 and mean view_only view accuracy, so the mean of
    the per-run values equals delta_m of the mean metrics (it is linear in them) and their sd shows the spread
    over seeds.
    """
    def as_stats(source: Mapping[str, Any]) -> dict[str, Stat]:
        return {k: Stat(finite_number(v), None, 1) for k, v in source.items()}

    references = aggregate(rows, [p + c for p in ("", TEST_PREFIX) for c in ("mAP50", "view_accuracy")])
    out = []
    for row in rows:
        row = {k: v for k, v in row.items() if k not in ("delta_m", TEST_PREFIX + "delta_m")}  # recomputed
        if row.get("status") == "ok" and row["strategy"] not in SINGLE_TASK:
            det_ref = references.get((row["split"], "detection_only"), {})
            view_ref = references.get((row["split"], "view_only"), {})
            for prefix in ("", TEST_PREFIX):
                value = delta_m(as_stats(row), det_ref, view_ref, prefix)
                if value is not None:
                    row[prefix + "delta_m"] = value
        out.append(row)
    return out
