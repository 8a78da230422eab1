"""The report's reading of benchmarks/patient_bootstrap.py's table: would a difference on test hold on other patients?

The report's ± is the spread over seeds (training noise). The bootstrap redraws the test patients instead, the same
draws for every run, and gives each difference a percentile interval for patient sampling. The conclusion quotes it
for the strategies it turns on; an interval clear of 0 says the difference does not hinge on which patients were
tested, for the seeds that were run.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from utils.compare.stats import finite_number

COLUMNS = {"split", "checkpoint", "strategy", "seeds", "comparison", "observed", "low", "high", "low_seeds",
           "high_seeds", "resamples", "groups"}


def read_bootstrap_tables(paths: list[Path]) -> list[dict]:
    """The rows of every patient_bootstrap_<checkpoint>.csv given (a clear error naming a missing or malformed file)."""
    rows: list[dict] = []
    for path in paths:
        if not Path(path).is_file():
            raise SystemExit(f"--patient-bootstrap {path}: no such file (benchmarks/patient_bootstrap.py writes it)")
        table = pd.read_csv(path)
        missing = COLUMNS - set(table.columns)
        if missing:
            raise SystemExit(f"--patient-bootstrap {path}: not a table of benchmarks/patient_bootstrap.py (no column "
                             f"{', '.join(sorted(missing))})")
        rows += table.to_dict("records")
    return rows


def _figure(row: dict) -> str | None:
    """'mAP50 - detection_only -0.079 (-0.168 to -0.016; -0.190 to -0.010)': the whole test set, the patient interval,
    the patient-and-seed interval; delta_m rows in percent."""
    values = [finite_number(row.get(k)) for k in ("observed", "low", "high", "low_seeds", "high_seeds")]
    if None in values:
        return None
    observed, low, high, low_seeds, high_seeds = values
    if str(row["comparison"]).startswith("delta_m"):
        return (f"{row['comparison']} {100 * observed:+.1f} % ({100 * low:+.1f} to {100 * high:+.1f} %; "
                f"{100 * low_seeds:+.1f} to {100 * high_seeds:+.1f} %)")
    return f"{row['comparison']} {observed:+.3f} ({low:+.3f} to {high:+.3f}; {low_seeds:+.3f} to {high_seeds:+.3f})"


def patient_sampling_sentence(rows: list[dict], split: str, strategies: list[str]) -> str | None:
    """One sentence on the given strategies (in that order) from the split's bootstrap rows, or None without any.

    rows: one checkpoint's rows (the report's).
    """
    mine = [r for r in rows if r.get("split") == split]
    parts = []
    for strategy in strategies:
        own = [r for r in mine if r.get("strategy") == strategy]
        figures = [f for f in map(_figure, own) if f]
        if figures:
            seeds = int(own[0]["seeds"])
            parts.append(f"{strategy} ({seeds} seed{'s' * (seeds > 1)}): {', '.join(figures)}")
    if not parts:
        return None
    first = mine[0]
    return (f"Patient sampling (benchmarks/patient_bootstrap.py: the {int(first['groups'])} test patients redrawn "
            f"{int(first['resamples'])} times, the same draws for every run; whole test set, then the 95 % interval "
            "over the draws, then the same with each strategy's seeds redrawn too): " + " | ".join(parts) + ". An "
            "interval clear of 0 does not hinge on which patients were tested; the second one also covers which seeds "
            "were run (crudely, with 2-3 seeds).")
