"""report.md: settings, mean ± sd tables per split, delta_m, and sentences weighing each remedy against the sweep."""
from __future__ import annotations

import os
import platform
from pathlib import Path

from utils.compare.ceilings import is_bound
from utils.compare.conclusion import conclusion_section
from utils.compare.columns import (COST_COLUMNS, DETECTION_COLUMNS, DIGITS, EPOCH_CHOICE_COLUMNS,
                                   INTERFERENCE_COLUMNS, LABELS, SINGLE_TASK, TEST_PREFIX, VIEW_COLUMNS,
                                   not_applicable, ordered_columns)
from utils.compare.stats import (NO_STAT, Stat, aggregate, aggregate_stages, best_fixed, best_fixed_criterion,
                                 has_test_figures, with_delta_m)
from utils.compare.strategies import REMEDIES, parse_fixed_weight
from utils.compare.wording import format_percent, format_stat, versus


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """A GitHub markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def stat_table(agg: dict[tuple[str, str], dict[str, Stat]], split: str, strategies: list[str], columns: list[str],
               labels: dict[str, str] | None = None) -> str:
    """Markdown: one row per strategy, 'mean ± sd' per column, n seeds, n/a where a column means nothing."""
    labels = labels or {}
    rows = []
    for strategy in strategies:
        stats = agg.get((split, strategy))
        if stats is None:
            rows.append([strategy, "0"] + ["n/a"] * len(columns))
            continue
        cells = [strategy, str(stats["n"].n)]
        for column in columns:
            if not_applicable(strategy, column):
                cells.append("n/a")
            else:
                cells.append(format_stat(stats.get(column), DIGITS.get(column, 3), thousands=column == "parameters"))
        rows.append(cells)
    return markdown_table(["strategy", "n"] + [labels.get(c, c) for c in columns], rows)


def delta_m_table(agg: dict[tuple[str, str], dict[str, Stat]], split: str, strategies: list[str]) -> str | None:
    """Mean ± sd of the per-run delta_m per joint strategy on val (and test where there is one); None if none.

    `agg` must have been aggregated over rows from with_delta_m with the delta_m columns.
    """
    def stat(strategy: str, column: str) -> Stat:
        return (agg.get((split, strategy)) or {}).get(column, NO_STAT)

    joint = [s for s in strategies if s not in SINGLE_TASK]
    columns = [c for c in ("delta_m", TEST_PREFIX + "delta_m") if any(stat(s, c).mean is not None for s in joint)]
    table = [[strategy, str(stat(strategy, "n").n)] + [format_percent(stat(strategy, c)) for c in columns]
             for strategy in joint if any(stat(strategy, c).mean is not None for c in columns)]
    if not table:
        return None
    return markdown_table(["strategy", "n"] + [{"delta_m": "delta_m val"}.get(c, "delta_m test") for c in columns],
                          table)


def comparison_sentences(agg: dict[tuple[str, str], dict[str, Stat]], split: str, strategies: list[str]) -> list[str]:
    """Each remedy (balancers, dual) against the best fixed weight and against the single-task runs.

    The best fixed weight is picked on the val set. Where the split has a test set the comparisons use
    it, so the pick is not graded on the images that picked it; without one the pick is favoured.
    """
    on_test = has_test_figures(agg, split, strategies)
    prefix, where = (TEST_PREFIX, "test set") if on_test else ("", "val set")
    fixed = best_fixed(agg, split, strategies)
    if fixed is None:
        sentences = ["No fixed-weight run finished, so there is no sweep to compare the remedies with."]
    else:
        use = ("The comparisons below use the held-out test set." if on_test else
               "The comparisons below use the same val set, which favours the picked weight.")
        sentences = [f"Best fixed weight of the sweep, picked on the val set "
                     f"({best_fixed_criterion(agg, split, strategies)}): {fixed}. {use}"]
    both = (("mAP50", "mAP50"), ("view_accuracy", "view accuracy"))
    references = ([(fixed, both)] if fixed else []) + [("detection_only", both[:1]), ("view_only", both[1:])]
    for strategy in REMEDIES:
        stats = agg.get((split, strategy))
        if strategy not in strategies or stats is None:
            continue
        for reference, columns in references:
            ref_stats = agg.get((split, reference))
            if ref_stats is None:
                continue
            pairs = [(stats.get(prefix + c, NO_STAT), ref_stats.get(prefix + c, NO_STAT), label)
                     for c, label in columns]
            parts = [versus(strategy, a, reference, b, label) for a, b, label in pairs
                     if a.mean is not None and b.mean is not None]
            if parts:
                sentences.append(f"{strategy} vs {reference} ({where}): " + "; ".join(parts) + ".")
        dominance = dominance_sentence(agg, split, strategy, strategies, prefix, where)
        if dominance:
            sentences.append(dominance)
    return sentences


def dominance_sentence(agg: dict[tuple[str, str], dict[str, Stat]], split: str, strategy: str, strategies: list[str],
                       prefix: str, where: str) -> str | None:
    """Whether some fixed weight beats `strategy` on both mean mAP50 and mean view accuracy (no weighting chosen).

    The claim that tuned fixed weights match the balancers, checked without deciding how much a point of
    mAP is worth against a point of view accuracy.
    """
    def point(name: str) -> tuple[float, float] | None:
        stats = agg.get((split, name)) or {}
        m, v = stats.get(prefix + "mAP50", NO_STAT).mean, stats.get(prefix + "view_accuracy", NO_STAT).mean
        return None if m is None or v is None else (m, v)

    mine = point(strategy)
    fixed = [(name, point(name)) for name in strategies if parse_fixed_weight(name) is not None and point(name)]
    if mine is None or not fixed:
        return None
    better = [name for name, (m, v) in fixed if m >= mine[0] and v >= mine[1] and (m, v) != mine]
    if better:
        return (f"{strategy} is dominated on the {where} by {', '.join(better)}: at least as high a mean mAP50 and "
                f"mean view accuracy.")
    return (f"{strategy} is not dominated on the {where}: no fixed weight of the sweep has both a higher mean mAP50 "
            f"and a higher mean view accuracy.")


def machine_line(device: str) -> str:
    """Platform, CPU count, Python and torch versions, and the training device."""
    import torch

    accel = "cpu" if device == "cpu" or not torch.cuda.is_available() else torch.cuda.get_device_name(0)
    return (f"{platform.platform()}, {os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), "
            f"Python {platform.python_version()}, torch {torch.__version__}, device {accel}")


def interference_table(stage_aggs: dict[str, dict[str, dict[str, Stat]]]) -> str:
    """Markdown: strategy, stage, then the per-stage figures as mean ± sd over seeds."""
    rows = []
    for strategy, stages in stage_aggs.items():
        for stage, stats in stages.items():
            rows.append([strategy, stage, format_stat(stats["n"], 0), format_stat(stats["mean_cosine"]),
                         format_stat(stats["conflict_fraction"]), format_stat(stats["median_norm_ratio"])])
    return markdown_table(["strategy", "stage", "measurements", "mean cosine", "conflict fraction",
                           "median norm ratio ‖g_view‖/‖g_det‖"], rows)


METRICS_NOTE = {
    "best": "each run's best.pt (last.pt when the run wrote no best.pt)",
    "last": "each run's last.pt (the final epoch, chosen by no val figure: this report checks that the conclusion "
            "does not rest on the epoch choice; the main report scores best.pt)",
}

NOTES = """\
How to read this:
- Metrics: {metrics} evaluated on the split's val set with
  utils.evaluation.validation.evaluate (as val.py: conf 0.001, IoU 0.6, rect batches of 32). F1 = 2PR/(P+R) of the
  overall P and R. mean ± sample sd over seeds; one seed shows the value alone. best.pt is picked on val, so
  val figures lean optimistic; where the split has a test set (utils.split writes one) the same checkpoint is
  also evaluated there, and the comparison sentences use test.
- n/a: view_only trains with det_task 0, so its detection numbers are meaningless (kept in comparison.csv);
  detection_only has no view task. view_only picks best.pt with --fitness joint (detection fitness is noise there).
- best.pt of the joint strategies is the epoch with the best detection fitness (YOLOv5's rule), so their view
  figures are read where the detector peaked (the epoch-choice table shows what that costs). dual keeps each
  network at its own best epoch (train_dual.py's default --fitness per-network): they share nothing.
- Every strategy trains with a derived hyp: the given --hyp with mosaic, mixup and copy_paste set to 0 (the
  engine does that for any run with a view task, so detection_only gets the same augmentation), unless it sets
  mask_mixed_views: true (then they stay on in every run and mixed images train detection only), and
  det_task / view_task set per strategy (fixed_w<v>: 1 / v; view_only: 0 / 1; the others keep the given values).
- train time: wall time of the child process (start-up, data scan, training, validation, final validation,
  plots). train loop: elapsed_s of the last epoch in training_history.json. step: median over epochs of the
  epoch's train_s (its batches alone; time_s, which adds validation and checkpoint, for histories written
  before train_s existed) / iterations per epoch (from the progress bar). peak RSS: ru_maxrss of the child
  from os.wait4 (its largest process, not the sum with loader workers).
  parameters / GFLOPs: model.info(imgsz) of the evaluated checkpoint, unfused.
- Time columns are wall times on a machine that may have been shared (--jobs, or other work): compare them
  within one report with care; benchmarks/strategy_speed.py measures clean cost ratios in one process.
- With --interference-every, the measured strategies pay one extra backward per task per measurement, which
  is included in their time columns.
- Interference in the conclusion, with --checkpoint-interference: benchmarks/checkpoint_interference.py on the
  runs' saved weights (no training cost), per run the mean cosine and conflict share over its checkpoints, and
  the median norm ratios of the checkpoints in the last three quarters of training; ranges are over runs.
"""


def ceiling_labels(ceiling: dict | None) -> dict[str, str]:
    """LABELS with the split's view-label reference beside the view accuracy: 'view acc (ceiling 0.667)', or
    'view acc (copy 0.557)' where the copy is no bound (see is_bound)."""
    if not ceiling:
        return LABELS
    word = "ceiling" if is_bound(ceiling) else "copy"
    return {**LABELS, "view_accuracy": f"view acc ({word} {ceiling['accuracy']:.3f})",
            "view_balanced_accuracy": f"view bal. acc ({word} {ceiling['balanced']:.3f})"}


def ceiling_line(ceilings: dict[str, dict]) -> list[str]:
    """One sentence on what the ceilings are, for a split that has them."""
    if not ceilings:
        return []
    figures = "; ".join(f"{s} {c['accuracy']:.3f} (majority rate {c['majority_rate']:.3f}, {c['n']} frames)"
                        for s, c in ceilings.items())
    if all(is_bound(c) for c in ceilings.values()):
        return [f"View-label ceiling (copying the view of the nearest train frame, `python -m utils.audit`): "
                f"{figures}. A view accuracy near its ceiling is what the labels allow; differences between "
                "strategies there are mostly label noise.", ""]
    shares = ", ".join(f"{s} {c.get('near_share', 1.0):.0%}" for s, c in ceilings.items())
    return [f"View-label copy (the view of the nearest train frame, `python -m utils.audit`): {figures}. Few held-out "
            f"frames have a near-identical train frame (correlation >= 0.90: {shares}), so the copy is a "
            "memorisation baseline, not a bound: a model that learnt the views can beat it, and only label noise "
            "within videos caps it.", ""]


def split_section(agg: dict[tuple[str, str], dict[str, Stat]], split: str, data: Path, strategies: list[str],
                  split_rows: list[dict], stage_summaries: dict, plots: list[str],
                  ceilings: dict[str, dict] | None = None, checkpoint: str = "best") -> list[str]:
    """The report lines of one split: its tables, its comparison sentences and its plots.

    ceilings: the split's view-label ceiling per held-out split ('val', 'test'), shown beside the view accuracies.
    checkpoint: the scored checkpoint's name without .pt, for the epoch-choice table.
    """
    ceilings = ceilings or {}
    out = [f"## Split `{split}` ({data})", "", *ceiling_line(ceilings), "### Metrics (valid set, mean ± sd over seeds)",
           "", stat_table(agg, split, strategies, [*DETECTION_COLUMNS, *VIEW_COLUMNS],
                          ceiling_labels(ceilings.get("val"))), ""]
    split_test = [TEST_PREFIX + c for c in (*DETECTION_COLUMNS, *VIEW_COLUMNS)
                  if TEST_PREFIX + c in ordered_columns(split_rows, TEST_PREFIX)]
    if split_test:
        test_labels = ceiling_labels(ceilings.get("test"))
        out += ["### Metrics on the held-out test set (mean ± sd over seeds; no choice was made on it)", "",
                stat_table(agg, split, strategies, split_test,
                           {c: test_labels[c.removeprefix(TEST_PREFIX)] for c in split_test}), ""]
    out += ["### Cost", "", stat_table(agg, split, strategies, list(COST_COLUMNS), LABELS), ""]
    split_ap = ordered_columns(split_rows, "AP50_")
    if split_ap:
        out += ["### AP50 per class", "",
                stat_table(agg, split, strategies, split_ap, {c: c[5:] for c in split_ap}), ""]
    split_f1 = ordered_columns(split_rows, "F1_")
    if split_f1:
        out += ["### F1 per view", "",
                stat_table(agg, split, strategies, split_f1, {c: c[3:] for c in split_f1}), ""]
    stage_aggs = {s: aggregate_stages(stage_summaries[(split, s)]) for s in strategies
                  if stage_summaries.get((split, s))}
    if stage_aggs:
        out += ["### Gradient interference per stage (summarize_interference per run, mean ± sd over seeds)", "",
                interference_table(stage_aggs), ""]
    choice = [s for s in strategies if agg.get((split, s), {}).get("view_accuracy_peak", NO_STAT).n]
    if choice:
        chosen = ("best.pt is the epoch with the highest fitness: detection fitness for every joint strategy, so "
                  "the view task is read where the detector peaked." if checkpoint == "best" else
                  f"{checkpoint}.pt is the final epoch.")
        out += [f"### Epoch choice (valid set): view accuracy of {checkpoint}.pt against the run's peak over epochs",
                "", f"{chosen} The peak view accuracy is picked on val (optimistic); a large gap means the view "
                "figures above depend on the epoch choice.", "",
                stat_table(agg, split, choice, ["best_epoch", "view_accuracy", *EPOCH_CHOICE_COLUMNS[1:]],
                           LABELS), ""]
    table = delta_m_table(agg, split, strategies)
    if table:
        out += ["### Multi-task score delta_m (mean relative change of mAP50 and view accuracy against "
                "detection_only and view_only; 0 = as good as each task alone)", "", table, ""]
    out += ["### Comparison", "", *[f"- {s}" for s in comparison_sentences(agg, split, strategies)], ""]
    for name in plots:
        out += [f"![{name}]({name})", ""]
    return out


def more_seeds_note(rows: list[dict], seeds: list[int]) -> str:
    """' (and seed 3 of gradnorm, ...)': finished runs of seeds beyond --seeds that the report counts too."""
    extra: dict[int, list[str]] = {}
    for r in rows:
        if r["seed"] not in seeds and r["strategy"] not in extra.get(r["seed"], []):
            extra.setdefault(r["seed"], []).append(r["strategy"])
    return "".join(f" (and seed {seed} of {', '.join(names)})" for seed, names in sorted(extra.items()))


def build_report(*, command: str, date: str, machine: str, settings: dict, splits: dict[str, Path],
                 strategies: list[str], rows: list[dict], stage_summaries: dict, failures: list[dict],
                 plots: dict[str, list[str]], ceilings: dict[str, dict] | None = None,
                 checkpoint_rows: list[dict] | None = None, bootstrap_rows: list[dict] | None = None) -> str:
    """The whole report.md text (pure: everything it shows is passed in; ceilings per split, see split_section;
    checkpoint_rows, see conclusion_section; bootstrap_rows of every checkpoint, the report's own are quoted)."""
    ap_cols, f1_cols = ordered_columns(rows, "AP50_"), ordered_columns(rows, "F1_")
    rows = with_delta_m(rows)
    test_cols = ordered_columns(rows, TEST_PREFIX)
    agg = aggregate(rows, [*DETECTION_COLUMNS, *VIEW_COLUMNS, *COST_COLUMNS, *INTERFERENCE_COLUMNS,
                           *EPOCH_CHOICE_COLUMNS, *ap_cols, *f1_cols, *test_cols, "delta_m"])
    checkpoint = settings.get("checkpoint", "best")
    title = settings["name"] + ("" if checkpoint == "best" else f", scored at {checkpoint}.pt")
    out = [f"# Strategy comparison: {title}", "",
           f"- command: `{command}`", f"- date: {date}", f"- machine: {machine}",
           f"- epochs {settings['epochs']}, seeds {settings['seeds']}{more_seeds_note(rows, settings['seeds'])}, "
           f"strategies {', '.join(strategies)}",
           f"- train flags passed through: `{settings['extra'] or '(none)'}`", ""]
    pending = [r for r in rows if r.get("status") == "not_run"]
    if pending:
        out += [f"**Interim report: {len(rows) - len(pending)} of {len(rows)} runs finished** (written with "
                "--report-only; the n column counts the seeds each figure rests on; the runs still missing "
                "are listed at the end).", ""]
    out += conclusion_section(agg, rows, list(splits), strategies, ceilings, checkpoint_rows,
                              [r for r in bootstrap_rows or [] if r.get("checkpoint") == checkpoint])
    out += [NOTES.format(metrics=METRICS_NOTE[checkpoint])]
    for split, data in splits.items():
        out += split_section(agg, split, data, strategies, [r for r in rows if r["split"] == split],
                             stage_summaries, plots.get(split, []), (ceilings or {}).get(split), checkpoint)
    if pending:
        out += ["## Not run yet", ""]
        missing: dict[tuple[str, str], list[int]] = {}
        for r in pending:
            missing.setdefault((r["split"], r["strategy"]), []).append(r["seed"])
        out += [f"- {split} / {strategy}: seeds {', '.join(map(str, seeds))}"
                for (split, strategy), seeds in missing.items()] + [""]
    if failures:
        out += ["## Failed runs", ""]
        for f in failures:
            out += [f"- {f['split']} / {f['strategy']} seed {f['seed']}: {f['error']}", "", "```",
                    f.get("tail") or "(no stderr)", "```", ""]
    return "\n".join(out)
