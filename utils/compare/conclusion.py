"""The report's opening section: per split, which remedy wins, by how much, with what spread and at what cost;
whether a tuned fixed weight matches it; whether GradNorm's moving weights matter; what the view labels allow.

Written from the figures every time the report is, so an interim report says as much as its finished runs allow
and no more. The winner is ranked by delta_m on the held-out test set where the split has one (nothing was chosen
on it); the fixed weight that competes is the one picked on val, so the sweep is not graded on the images that
would pick it.
"""
from __future__ import annotations

from utils.compare.bootstrap_table import patient_sampling_sentence
from utils.compare.ceilings import is_bound
from utils.compare.columns import LAST_PREFIX, TEST_PREFIX
from utils.compare.interference_table import checkpoint_interference_sentence, summarize_runs
from utils.compare.stats import NO_STAT, Stat, best_fixed, finite_number, has_test_figures, mean_sd
from utils.compare.strategies import REMEDIES, parse_fixed_weight
from utils.compare.wording import beats_noise, format_percent, format_stat, versus

Agg = dict[tuple[str, str], dict[str, Stat]]
TWO_SEEDS = " (two seeds: a hint, not a finding)"


def lead(diff: Stat) -> int | None:
    """Of a paired difference: +1 / -1 when its mean is beyond its sd (that side leads), 0 within it, None under
    two seeds."""
    if diff.mean is None or diff.sd is None or diff.n < 2:
        return None
    return 0 if abs(diff.mean) <= diff.sd else (1 if diff.mean > 0 else -1)


def paired_values(rows: list[dict], split: str, a: str, b: str, column: str) -> list[float]:
    """a's column minus b's, one value per seed where both finished (the same seed: the same data order)."""
    by_seed: dict[object, dict[str, float]] = {}
    for row in rows:
        if row.get("split") != split or row.get("status") != "ok" or row.get("strategy") not in (a, b):
            continue
        value = finite_number(row.get(column))
        if value is not None:
            by_seed.setdefault(row.get("seed"), {})[row["strategy"]] = value
    return [pair[a] - pair[b] for pair in by_seed.values() if a in pair and b in pair]


def paired_difference(rows: list[dict], split: str, a: str, b: str, column: str) -> Stat:
    """Mean ± sd over seeds of a's column minus b's, on the seeds where both finished.

    Pairing by seed compares runs that start from the same initial weights and see the same data order.
    """
    return mean_sd(paired_values(rows, split, a, b, column))


def paired_note(rows: list[dict], split: str, a: str, b: str, column: str) -> str | None:
    """', paired by seed (n 3): -0.078 ± 0.030, b higher in 3 of 3' where at least two seeds pair up."""
    diffs = paired_values(rows, split, a, b, column)
    if len(diffs) < 2:
        return None
    diff = mean_sd(diffs)
    leader, wins = (a, sum(d > 0 for d in diffs)) if diff.mean > 0 else (b, sum(d < 0 for d in diffs))
    return f"paired by seed (n {diff.n}): {diff.mean:+.3f} ± {diff.sd:.3f}, {leader} higher in {wins} of {diff.n}"


def ranked(agg: Agg, split: str, strategies: list[str], prefix: str) -> list[tuple[str, Stat]]:
    """The remedies and the val-picked fixed weight that have a delta_m, best first."""
    fixed = best_fixed(agg, split, strategies)
    names = [s for s in dict.fromkeys([*REMEDIES, fixed]) if s and s in strategies and (split, s) in agg]
    scored = [(s, agg[(split, s)].get(prefix + "delta_m", NO_STAT)) for s in names]
    return sorted([(s, st) for s, st in scored if st.mean is not None], key=lambda item: -item[1].mean)


def _stat(agg: Agg, split: str, strategy: str, column: str) -> Stat:
    return (agg.get((split, strategy)) or {}).get(column, NO_STAT)


def winner_sentences(agg: Agg, split: str, order: list[tuple[str, Stat]], prefix: str, where: str,
                     rows: list[dict] | None = None) -> list[str]:
    """Who has the highest delta_m, against the runner-up's spread, and per task against training it alone."""
    (win, score), rest = order[0], order[1:]
    line = f"**{win}** has the highest delta_m on the {where}: {format_percent(score)} (n {score.n})"
    if rest:
        second, second_score = rest[0]
        gap = 100 * (score.mean - second_score.mean)
        separated = beats_noise(score, second_score)
        verdict = {True: "larger than the larger sd", False: "not larger than the larger sd, so this data does not "
                   "separate them", None: "against a one-seed sd, so no claim"}[separated]
        line += f"; next {second} {format_percent(second_score)}: a gap of {gap:.1f} points, {verdict}"
    if score.mean < 0:
        line += ". Every strategy ranked is below 0: none matches the two tasks trained alone"
    refs = f"detection_only (n {_stat(agg, split, 'detection_only', 'n').n}) and view_only " \
           f"(n {_stat(agg, split, 'view_only', 'n').n})"
    out = [line + f". delta_m is the mean relative change of mAP50 and view accuracy against training each task alone "
                  f"(0 = as good as both alone), here against the means of {refs}; its sd counts only the "
                  f"strategy's own seeds."]
    parts = against_alone(agg, split, win, prefix, rows)
    if parts:
        out.append(f"{win} against each task trained alone: " + "; ".join(parts) + ".")
    return out


def against_alone(agg: Agg, split: str, strategy: str, prefix: str, rows: list[dict] | None = None) -> list[str]:
    """The strategy's mAP50 against detection_only and view accuracy against view_only, where both have figures;
    with the rows, also the difference paired by seed."""
    parts = []
    for column, label, reference in (("mAP50", "mAP50", "detection_only"),
                                     ("view_accuracy", "view accuracy", "view_only")):
        mine, theirs = _stat(agg, split, strategy, prefix + column), _stat(agg, split, reference, prefix + column)
        if mine.mean is not None and theirs.mean is not None:
            paired = paired_note(rows or [], split, strategy, reference, prefix + column)
            parts.append(versus(strategy, mine, reference, theirs, label) + (f"; {paired}" if paired else ""))
    return parts


def alone_sentences(agg: Agg, split: str, strategies: list[str], prefix: str, where: str,
                    rows: list[dict] | None = None) -> list[str]:
    """Before delta_m can rank anything: each remedy against whichever single-task run has finished."""
    return [f"{strategy} against the task trained alone ({where}): " + "; ".join(parts) + "."
            for strategy in REMEDIES if strategy in strategies and (split, strategy) in agg
            and (parts := against_alone(agg, split, strategy, prefix, rows))]


def fixed_weight_sentence(agg: Agg, split: str, strategies: list[str], win: str | None, prefix: str,
                          where: str, lead_separated: bool | None = None) -> str | None:
    """Whether the fixed weight picked on val matches the winner, and whether the sweep brackets it.

    lead_separated: whether the winner's delta_m beats the runner-up's by more than the larger sd (None: a side
    has one seed), so that a fixed weight ranked first is only called enough when the data says so."""
    fixed = best_fixed(agg, split, strategies)
    if fixed is None:
        return None
    weights = sorted(w for s in strategies if (w := parse_fixed_weight(s)) is not None and (split, s) in agg)
    edge = (" It is at the end of the sweep, so a weight beyond it might do better."
            if len(weights) > 1 and parse_fixed_weight(fixed) in (weights[0], weights[-1]) else "")
    count = f"{len(weights)} weight" + "s" * (len(weights) != 1)
    head = f"Tuned fixed weight: {fixed}, picked on val by delta_m among {count} " \
           f"({', '.join(f'{w:g}' for w in weights)}).{val_margin(agg, split, strategies, fixed, prefix, where)}"
    if win is None or win == fixed:
        verdict = {True: " It has the highest delta_m, beyond the runner-up's spread: a tuned fixed weight is all this "
                         "data needs",
                   False: " It has the highest delta_m, within the runner-up's spread: a tuned fixed weight does as "
                          "well as any remedy here",
                   None: " It has the highest delta_m, but a side has one seed: whether a tuned fixed weight is "
                         "enough is open"}[lead_separated] if win == fixed else ""
        if verdict and lead_separated is not None and _stat(agg, split, fixed, prefix + "delta_m").n == 2:
            verdict += TWO_SEEDS
        return head + (verdict + "." if verdict else "") + edge
    columns = (("mAP50", "mAP50"), ("view_accuracy", "view accuracy"))
    pairs = [(_stat(agg, split, win, prefix + c), _stat(agg, split, fixed, prefix + c), label) for c, label in columns]
    pairs = [p for p in pairs if p[0].mean is not None and p[1].mean is not None]
    if not pairs:
        return head + edge
    separated = [beats_noise(a, b) for a, b, _ in pairs]
    if None in separated:
        verdict = "one side has a single seed, so whether it matches is open"
    elif not any(separated):
        verdict = f"it matches {win} within the spread on both metrics"
    else:
        verdict = f"{win} differs from it by more than the larger sd on at least one metric"
    details = "; ".join(versus(win, a, fixed, b, label) for a, b, label in pairs)
    return f"{head} On the {where}: {verdict} ({details}).{edge}"


def val_margin(agg: Agg, split: str, strategies: list[str], fixed: str, prefix: str, where: str) -> str:
    """Val's pick against the next fixed weight on val: a pick within the runner-up's spread could have gone the
    other way, so the runner-up's figure where the winner is ranked is given too."""
    others = [(st, s) for s in strategies if parse_fixed_weight(s) is not None and s != fixed
              and (st := _stat(agg, split, s, "delta_m")).mean is not None]
    picked = _stat(agg, split, fixed, "delta_m")
    if not others or picked.mean is None:
        return ""
    runner_stat, runner = max(others, key=lambda item: item[0].mean)
    gap = 100 * (picked.mean - runner_stat.mean)
    text = (f" On val: {format_percent(picked)}, next {runner} {format_percent(runner_stat)}, a gap of {gap:.2f} "
            f"points")
    separated = beats_noise(picked, runner_stat)
    if separated is None:
        return text + " (a side has one seed)."
    if separated:
        return text + ", beyond the larger sd."
    elsewhere = _stat(agg, split, runner, prefix + "delta_m") if prefix else NO_STAT
    there = f"; on the {where} {runner} scores {format_percent(elsewhere)}" if elsewhere.mean is not None else ""
    return text + f", within the larger sd: val could as well have picked {runner}{there}."


def schedule_sentence(rows: list[dict], split: str, prefix: str, where: str) -> str | None:
    """GradNorm against its own mean weights held fixed (gradnorm_frozen), paired by seed: is it the schedule?"""
    diffs = [(label, paired_difference(rows, split, "gradnorm", "gradnorm_frozen", prefix + c))
             for c, label in (("mAP50", "mAP50"), ("view_accuracy", "view accuracy"))]
    diffs = [(label, d) for label, d in diffs if d.mean is not None]
    if not diffs:
        return None
    n = diffs[0][1].n
    figures = "; ".join(f"{label} {d.mean:+.3f}" + ("" if d.sd is None else f" ± {d.sd:.3f}") for label, d in diffs)
    beyond = [f"{label} ({'gradnorm' if d.mean > 0 else 'gradnorm_frozen'} higher)" for label, d in diffs if lead(d)]
    if n < 2:
        reading = "one seed, so no claim"
    elif not beyond:
        reading = "within the spread on both: the weights' schedule adds nothing measurable, the ratio GradNorm " \
                  "finds does the work"
    else:
        reading = f"beyond the spread on {' and '.join(beyond)}: there the moving weights matter, not only their mean"
    if n == 2:
        reading += TWO_SEEDS
    return (f"Schedule or ratio: gradnorm minus gradnorm_frozen (GradNorm's mean task weights held fixed from the "
            f"first step), paired by seed on the {where} (n {n}): {figures}; {reading}.")


def epoch_choice_sentence(rows: list[dict], split: str, names: list[str], prefix: str, where: str) -> str | None:
    """Each remedy minus the task trained alone, paired by seed, scored at best.pt and again at last.pt.

    best.pt is picked on a small, noisy val set, and not on the same metric for every strategy (detection
    fitness for the joint runs, the view for view_only); last.pt is picked by nothing. A lead that holds at
    both does not rest on the epoch choice.
    """
    readings = {(1, 1): "holds", (-1, -1): "holds", (0, 0): "within the spread at both"}
    parts = []
    for name in names:
        for column, label, reference in (("mAP50", "mAP50", "detection_only"),
                                         ("view_accuracy", "view accuracy", "view_only")):
            best = paired_difference(rows, split, name, reference, prefix + column)
            last = paired_difference(rows, split, name, reference, LAST_PREFIX + prefix + column)
            leads = (lead(best), lead(last))
            if None in leads:
                continue
            reading = readings.get(leads) or ("beyond the spread only at last.pt" if leads[0] == 0 else
                                              "does not hold at last.pt")
            parts.append(f"{name} {label} {best.mean:+.3f} ± {best.sd:.3f} → {last.mean:+.3f} ± {last.sd:.3f} "
                         f"({reading})")
    if not parts:
        return None
    return ("Epoch choice: best.pt is picked on val (by detection fitness for the joint runs, by the view for "
            "view_only), last.pt by nothing. Each remedy minus the task trained alone, paired by seed on the "
            f"{where}, best.pt → last.pt: " + "; ".join(parts) + ". A finding that does not hold at last.pt rests on "
            "the epoch val picked.")


def cost_sentence(agg: Agg, split: str, win: str | None, strategies: list[str]) -> str | None:
    """The winner's training step time against the val-picked fixed weight's, else detection_only's (wall clock; the
    report's cost caveats apply)."""
    reference = best_fixed(agg, split, strategies) or "detection_only"
    if win is None or win == reference:
        return None
    a, b = _stat(agg, split, win, "step_ms"), _stat(agg, split, reference, "step_ms")
    if not a.mean or not b.mean:
        return None
    return (f"Cost: {win} takes {format_stat(a, 0)} ms per training step against {format_stat(b, 0)} ms for "
            f"{reference} ({a.mean / b.mean:.2f}x, wall clock on this machine), "
            f"{format_stat(Stat(_stat(agg, split, win, 'parameters').mean, None, 1), 0, thousands=True)} parameters.")


def labels_sentence(agg: Agg, split: str, strategies: list[str], ceiling: dict | None, prefix: str,
                    where: str) -> str | None:
    """Where the view accuracies sit against what copying the nearest train frame's label scores."""
    values = [m for s in strategies if s != "detection_only"
              and (m := _stat(agg, split, s, prefix + "view_accuracy").mean) is not None]
    if not values or not ceiling:
        return None
    low, high, copy = min(values), max(values), ceiling["accuracy"]
    near = f"{ceiling.get('near_share', 1.0):.0%} of the held-out frames have a near-identical train frame"
    if is_bound(ceiling):
        reading = f"{near}, so this is what the labels allow; view differences near it are label noise"
    else:
        reading = (f"{near}, so the copy is a memorisation baseline: a figure above it is learnt, and label "
                   "noise within videos still caps it")
    return (f"Labels: view accuracy on the {where} spans {low:.3f}-{high:.3f} over the strategies; copying the view "
            f"of the nearest train frame scores {copy:.3f} (majority view {ceiling['majority_rate']:.3f}); {reading}.")


def interference_sentence(agg: Agg, split: str, strategies: list[str]) -> str:
    """Direction against magnitude on the shared layers, from the runs that measured it (--interference-every)."""
    measured = [(s, _stat(agg, split, s, "interference_mean_cosine"), _stat(agg, split, s,
                                                                           "interference_median_norm_ratio"))
                for s in strategies if _stat(agg, split, s, "interference_mean_cosine").mean is not None]
    if not measured:
        return ("Interference: not measured during these runs (train flag --interference-every N); "
                "benchmarks/checkpoint_interference.py measures it on their saved checkpoints.")
    cosines = [c.mean for _, c, _ in measured]
    ratios = ", ".join(f"{s} {r.mean:.2g}" for s, _, r in measured if r.mean is not None)
    reading = (" The directions barely conflict (|cosine| < 0.1 everywhere); what differs between the strategies is "
               "the magnitude." if max(abs(c) for c in cosines) < 0.1 else "")
    return (f"Interference on the shared layers: mean cosine of the two tasks' gradients {min(cosines):+.2f} to "
            f"{max(cosines):+.2f}; median view/detection gradient-norm ratio {ratios}.{reading}")


def conclusion_section(agg: Agg, rows: list[dict], splits: list[str], strategies: list[str],
                       ceilings: dict[str, dict] | None = None, checkpoint_rows: list[dict] | None = None,
                       bootstrap_rows: list[dict] | None = None) -> list[str]:
    """The '## Conclusion' lines: one block per split. `agg` holds delta_m columns (rows from with_delta_m);
    checkpoint_rows: benchmarks/checkpoint_interference.py's table, read in place of interference measured during
    training where it has the split's runs; bootstrap_rows: benchmarks/patient_bootstrap.py's table for the report's
    checkpoint, quoted for the winner, GradNorm, its frozen ablation and the fixed weight picked on val."""
    out = ["## Conclusion", ""]
    checkpoints = summarize_runs(checkpoint_rows or [])
    for split in splits:
        on_test = has_test_figures(agg, split, strategies)
        prefix = TEST_PREFIX if on_test else ""
        where = "test set" if on_test else "val set (which also picked the fixed weight, so it favours it)"
        split_rows = [r for r in rows if r.get("split") == split]
        done = sum(r.get("status") == "ok" for r in split_rows)
        out += [f"### `{split}`: {done} of {len(split_rows)} runs finished", ""]
        if not done:
            out += ["- No run finished yet.", ""]
            continue
        order = ranked(agg, split, strategies, prefix)
        win = order[0][0] if order else None
        lines = winner_sentences(agg, split, order, prefix, where, split_rows) if order else [
            "No winner yet: delta_m needs finished detection_only and view_only runs beside the remedies.",
            *alone_sentences(agg, split, strategies, prefix, where, split_rows)]
        ceiling = ((ceilings or {}).get(split) or {}).get("test" if on_test else "val")
        remedies = [s for s in dict.fromkeys([*REMEDIES, best_fixed(agg, split, strategies)]) if s in strategies]
        separated = beats_noise(order[0][1], order[1][1]) if len(order) > 1 else None
        turns_on = list(dict.fromkeys([win, "gradnorm", "gradnorm_frozen", best_fixed(agg, split, strategies)]))
        lines += [s for s in (fixed_weight_sentence(agg, split, strategies, win, prefix, where, separated),
                              epoch_choice_sentence(split_rows, split, remedies, prefix, where),
                              schedule_sentence(split_rows, split, prefix, where),
                              cost_sentence(agg, split, win, strategies),
                              checkpoint_interference_sentence(checkpoints, split)
                              or interference_sentence(agg, split, strategies),
                              patient_sampling_sentence(bootstrap_rows or [], split, turns_on),
                              labels_sentence(agg, split, strategies, ceiling, prefix, where)) if s]
        out += [f"- {line}" for line in lines] + [""]
    return out
