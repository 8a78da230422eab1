"""One comparison.csv row per run: its costs and epoch choice read from the run folder, its metrics evaluated."""
from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from utils.compare.columns import LAST_COLUMNS, LAST_PREFIX
from utils.compare.evaluation import EVAL_FILE, LAST_EVAL_FILE, EvalSettings, cached_evaluation
from utils.compare.runs import Plan, read_history, run_finished
from utils.training.best_checkpoint import best_checkpoint_epoch
from utils.training.interference import OVERALL, summarize_interference


def median_step_ms(history: dict | None, iterations: dict[int, int]) -> float | None:
    """Median over epochs of the epoch's time / its iterations, in ms (None without both).

    The epoch's time is train_s (the batches alone) where the history has it, else time_s
    (which also counts that epoch's validation and checkpoint save: histories written
    before train_s existed).
    """
    if not history or not iterations:
        return None
    fallback = statistics.median(iterations.values())
    steps = [r.get("train_s", r.get("time_s")) / (iterations.get(r["epoch"]) or fallback) * 1e3
             for r in history.get("epochs", []) if "train_s" in r or "time_s" in r]
    return statistics.median(steps) if steps else None


def interference_columns(history: dict | None) -> tuple[dict, dict]:
    """(CSV columns of the overall interference summary, the full per-stage summary); empty when not measured."""
    records = (history or {}).get("interference") or []
    if not records:
        return {}, {}
    summary = summarize_interference(records)
    overall = summary[OVERALL]
    return {"interference_n": overall["n"], "interference_mean_cosine": overall["mean_cosine"],
            "interference_conflict_fraction": overall["conflict_fraction"],
            "interference_median_norm_ratio": overall["median_norm_ratio"]}, summary


def epoch_choice_columns(history: dict | None) -> dict:
    """best.pt's epoch, and the highest val view accuracy the run reached on any validated epoch (and when).

    Joint strategies pick best.pt by detection fitness (YOLOv5's rule), so their view accuracy is read at an
    epoch the detector chose. The peak shows what that choice costs the view task; it is picked on val, so it
    leans optimistic and is no fair score by itself.
    """
    records = (history or {}).get("epochs", [])
    best_epoch = best_checkpoint_epoch(records)
    columns: dict[str, Any] = {} if best_epoch is None else {"best_epoch": best_epoch}
    validated = [r for r in records
                 if r.get("validated", True) and "view_accuracy" in (r.get("val") or {})]
    if validated:
        peak = max(validated, key=lambda r: r["val"]["view_accuracy"])  # the first epoch on a tie
        columns.update(view_accuracy_peak=peak["val"]["view_accuracy"], view_peak_epoch=peak["epoch"])
    return columns


def collect_row(plan: Plan, epochs: int, cost: dict, settings: EvalSettings, trained_now: bool,
                checkpoint: str = "best") -> tuple[dict, dict]:
    """One CSV row for a run (metrics evaluated now) and its per-stage interference summary.

    checkpoint "best" evaluates best.pt (last.pt when the run wrote none); "last" evaluates last.pt, the final
    epoch, which no val figure chose: the check that a conclusion does not rest on the epoch choice.
    """
    history = read_history(plan.run_dir)
    row: dict[str, Any] = {"split": plan.split, "strategy": plan.strategy.name, "seed": plan.seed,
                           "run_dir": str(plan.run_dir), "trained_now": trained_now, "status": "ok"}
    if history:
        row["epochs_done"] = len(history.get("epochs", []))
        elapsed = [r["elapsed_s"] for r in history.get("epochs", []) if "elapsed_s" in r]
        row["train_loop_s"] = elapsed[-1] if elapsed else None
    iterations = {int(k): v for k, v in (cost.get("iterations") or {}).items()}
    row.update(train_time_s=cost.get("train_time_s"), peak_rss_gb=cost.get("peak_rss_gb"),
               step_ms=median_step_ms(history, iterations),
               iterations_per_epoch=statistics.median(iterations.values()) if iterations else None)
    columns, stages = interference_columns(history)
    row.update(columns)
    if not run_finished(plan.run_dir, epochs):
        row.update(status="failed", error=f"exit code {cost.get('rc', '?')}, run incomplete")
        return row, {}
    if row.get("epochs_done", epochs) < epochs:
        row["error"] = f"stopped early after {row['epochs_done']} epochs (--patience)"
    weights = plan.run_dir / "weights" / f"{checkpoint}.pt"
    weights = weights if weights.is_file() else plan.run_dir / "weights" / "last.pt"
    row["checkpoint"] = weights.name
    row.update(epoch_choice_columns(history))
    if weights.name != "best.pt":
        row.pop("best_epoch", None)
    def evaluated(checkpoint_file: Path) -> dict:  # one cache file per checkpoint file, so each is evaluated once
        cache = LAST_EVAL_FILE if checkpoint_file.name == "last.pt" else EVAL_FILE
        return cached_evaluation(plan.run_dir, checkpoint_file, plan.data, settings, cache)

    try:
        row.update(evaluated(weights))
        if checkpoint == "best":  # the headline figures at last.pt too: does the conclusion rest on the epoch choice?
            last = evaluated(plan.run_dir / "weights" / "last.pt")
            row.update({LAST_PREFIX + c: last[c] for c in LAST_COLUMNS if c in last})
    except Exception as e:  # one broken run must not stop the report
        row.update(status="eval_failed", error=f"{type(e).__name__}: {e}")
    return row, stages
