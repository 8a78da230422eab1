"""The report's reading of benchmarks/checkpoint_interference.py's table: direction against magnitude per strategy.

That script measures every saved checkpoint of a run on the same training batches: the mean cosine of the two
tasks' shared-layer gradients (direction), the share of batches where it is negative (conflict), and their norm
ratio view/detection, unweighted and weighted with the task weights in force (magnitude: what the optimizer sees).
Here each run is reduced to a few figures, early and late in training, and the report states their range over seeds.
"""
from __future__ import annotations

import math
import statistics
from pathlib import Path

import pandas as pd

from utils.compare.runs import parse_run_name
from utils.compare.stats import finite_number
from utils.compare.strategies import parse_fixed_weight

# Per run: the figures the conclusion quotes (each a range over the strategy's runs).
FIGURES = ("mean_cosine", "conflict_fraction", "ratio_first", "ratio_late", "weighted_late", "weight_ratio_late")


def split_and_strategy(run: str) -> tuple[str, str] | None:
    """'med_patient_s0/gradnorm_s1' (the table's run column: split/run folder) -> ('med_patient_s0', 'gradnorm')."""
    split, _, folder = run.rpartition("/")
    parsed = parse_run_name(folder)
    return (split, parsed[0]) if split and parsed else None


def read_tables(paths: list[Path]) -> list[dict]:
    """The rows of every checkpoint_interference.csv given (a clear error naming a missing or malformed file)."""
    rows: list[dict] = []
    for path in paths:
        if not Path(path).is_file():
            raise SystemExit(f"--checkpoint-interference {path}: no such file (benchmarks/checkpoint_interference.py "
                             "writes it)")
        table = pd.read_csv(path)
        missing = {"run", "epoch", "mean_cosine", "median_ratio_unweighted"} - set(table.columns)
        if missing:
            raise SystemExit(f"--checkpoint-interference {path}: not a checkpoint_interference.csv (no column "
                             f"{', '.join(sorted(missing))})")
        rows += table.to_dict("records")
    return rows


def run_figures(checkpoints: list[dict]) -> dict[str, float | None]:
    """One run's figures from its checkpoint rows: means over all checkpoints for direction, the first checkpoint's
    unweighted ratio, and medians over the last three quarters of training (epoch >= a quarter of the last
    checkpoint's) for magnitude, once the ratio has left its start-up value."""
    numbered = sorted((c for c in checkpoints if finite_number(c.get("epoch")) is not None),
                      key=lambda c: float(c["epoch"]))
    if not numbered:
        return dict.fromkeys(FIGURES)
    late = [c for c in numbered if float(c["epoch"]) >= float(numbered[-1]["epoch"]) / 4 and float(c["epoch"]) > 0]

    def values(rows: list[dict], column: str) -> list[float]:
        return [x for x in (finite_number(r.get(column)) for r in rows) if x is not None]

    def weight_ratio(row: dict) -> float | None:
        det, view = finite_number(row.get("weight_det")), finite_number(row.get("weight_view"))
        return view / det if det and view is not None else None

    figures = {"mean_cosine": values(numbered, "mean_cosine"),
               "conflict_fraction": values(numbered, "conflict_fraction"),
               "ratio_first": values(numbered[:1], "median_ratio_unweighted"),
               "ratio_late": values(late, "median_ratio_unweighted"),
               "weighted_late": values(late, "median_ratio_weighted"),
               "weight_ratio_late": [r for r in map(weight_ratio, late) if r is not None]}
    reduce = {"mean_cosine": statistics.fmean, "conflict_fraction": statistics.fmean}
    return {k: (reduce.get(k, statistics.median)(v) if v else None) for k, v in figures.items()}


def summarize_runs(rows: list[dict]) -> dict[tuple[str, str], dict[str, list[float]]]:
    """Per (split, strategy): each figure's values over its runs (seeds), from the table's checkpoint rows."""
    runs: dict[str, list[dict]] = {}
    for row in rows:
        runs.setdefault(str(row.get("run")), []).append(row)
    out: dict[tuple[str, str], dict[str, list[float]]] = {}
    for run, checkpoints in sorted(runs.items()):
        key = split_and_strategy(run)
        if key is None:
            continue
        figures = run_figures(checkpoints)
        group = out.setdefault(key, {k: [] for k in FIGURES})
        for key, value in figures.items():
            if value is not None:
                group[key].append(value)
    return out


def span(values: list[float], fmt: str = ".2f", unit: str = "") -> str:
    """The range over runs, '0.67-0.77' ('+0.045 to +0.091' when signed), or the one value."""
    low, high = format(min(values), fmt), format(max(values), fmt)
    if low == high:
        return low + unit
    return f"{low}{' to ' if fmt.startswith('+') or min(values) < 0 else '-'}{high}{unit}"


def closest_fixed_weight(summary: dict[tuple[str, str], dict[str, list[float]]], split: str) -> str | None:
    """The fixed_w<v> strategy whose weighted ratio late in training is nearest (on a log scale) to gradnorm's."""
    target = summary.get((split, "gradnorm"), {}).get("weighted_late")
    if not target or min(target) <= 0:
        return None
    candidates = [(abs(math.log(statistics.fmean(g["weighted_late"]) / statistics.fmean(target))), s)
                  for (sp, s), g in summary.items() if sp == split and parse_fixed_weight(s) is not None
                  and g["weighted_late"] and min(g["weighted_late"]) > 0]
    return min(candidates)[1] if candidates else None


def checkpoint_interference_sentence(summary: dict[tuple[str, str], dict[str, list[float]]],
                                     split: str) -> str | None:
    """Direction against magnitude on the split's shared-backbone runs, as measured on their checkpoints."""
    groups = {s: g for (sp, s), g in summary.items() if sp == split and g["mean_cosine"]}
    if not groups:
        return None
    cosines = [c for g in groups.values() for c in g["mean_cosine"]]
    conflicts = [c for g in groups.values() for c in g["conflict_fraction"]]
    n_runs = len(cosines)
    if max(map(abs, cosines)) < 0.1:
        direction = ("nearly orthogonal (|cosine| < 0.1 in every run): little of either task's step undoes the "
                     "other's")
    elif min(cosines) < -0.1:
        direction = "in conflict in some runs (mean cosine below -0.1)"
    else:
        direction = "partly aligned (mean cosine above 0.1 in some runs)"
    line = (f"Interference (measured on the saved checkpoints of {n_runs} runs, the same training images for all): "
            f"direction: the mean cosine of the two tasks' shared-layer gradients is {span(cosines, '+.3f')}, "
            f"conflict in {span([100 * c for c in conflicts], '.0f', ' %')} of batches, {direction}.")
    first = [v for g in groups.values() for v in g["ratio_first"]]
    late = [v for g in groups.values() for v in g["ratio_late"]]
    if first and late:
        line += (f" Magnitude: the unweighted view/detection gradient-norm ratio goes from {span(first, '.1f')} at the "
                 f"first checkpoint to {span(late, '.1f')} over the last three quarters of training (median)")
    weighted = [f"{s} {span(g['weighted_late'])}" for s, g in sorted(groups.items()) if g["weighted_late"]]
    if weighted:
        line += "; weighted by each run's task weights, what the optimizer sees: " + ", ".join(weighted)
    gradnorm = groups.get("gradnorm", {}).get("weight_ratio_late")
    if gradnorm:
        line += (f". GradNorm's view/detection weight ratio there is {span(gradnorm, '.3f')}: its "
                 "operating point as a fixed weight")
        nearest = closest_fixed_weight(summary, split)
        if nearest:
            line += f"; the fixed weight whose weighted ratio is nearest to GradNorm's is {nearest}"
    return line + "."
