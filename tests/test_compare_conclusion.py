"""The report's conclusion section on hand-made rows whose figures are worked out by hand in the comments."""
from __future__ import annotations

from pathlib import Path

import pytest

from utils.compare.conclusion import conclusion_section, paired_difference, paired_note
from utils.compare.report import build_report
from utils.compare.stats import aggregate, with_delta_m


def row(strategy: str, seed: int, m: float | None, v: float | None, step_ms: float = 100.0, status: str = "ok"):
    """One finished run; val figures equal the test figures so the val pick of the sweep is easy to follow."""
    return {"split": "p", "strategy": strategy, "seed": seed, "status": status, "mAP50": m, "view_accuracy": v,
            "test_mAP50": m, "test_view_accuracy": v, "step_ms": step_ms, "parameters": 1000}


def comparison_rows() -> list[dict]:
    return [
        row("detection_only", 0, 0.18, None), row("detection_only", 1, 0.22, None),  # mAP50 reference 0.20
        row("view_only", 0, None, 0.68), row("view_only", 1, None, 0.72),  # view reference 0.70
        # delta_m per seed: ((0.22 - 0.2) / 0.2 + 0) / 2 = 0.05 and ((0.26 - 0.2) / 0.2) / 2 = 0.15 -> +10.0 ± 7.1 %
        row("gradnorm", 0, 0.22, 0.70, step_ms=120), row("gradnorm", 1, 0.26, 0.70, step_ms=120),
        # 0.05 and ((0.24 - 0.2) / 0.2) / 2 = 0.10 -> +7.5 ± 3.5 %
        row("gradnorm_frozen", 0, 0.22, 0.70), row("gradnorm_frozen", 1, 0.24, 0.70),
        row("dual", 0, 0.20, 0.63), row("dual", 1, 0.20, 0.63),  # (0 - 0.1) / 2 = -5.0 ± 0.0 %
        row("fixed_w0.1", 0, 0.16, 0.70), row("fixed_w0.1", 1, 0.16, 0.70),  # -10 %: the val pick of the sweep
        row("fixed_w1", 0, 0.04, 0.72), row("fixed_w1", 1, 0.04, 0.72),  # (-0.8 + 0.0286) / 2 = -38.6 %
        row("fixed_w1", 2, None, None, status="not_run"),
    ]


STRATEGIES = ["detection_only", "view_only", "fixed_w0.1", "fixed_w1", "gradnorm", "gradnorm_frozen", "dual"]
CEILINGS = {"p": {"val": {"accuracy": 0.60, "balanced": 0.55, "majority_rate": 0.5, "n": 10, "near_share": 0.0},
                  "test": {"accuracy": 0.65, "balanced": 0.6, "majority_rate": 0.5, "n": 10, "near_share": 0.0}}}


def conclusion(rows: list[dict], strategies: list[str] = STRATEGIES, ceilings: dict | None = None) -> str:
    rows = with_delta_m(rows)
    agg = aggregate(rows, ["mAP50", "view_accuracy", "test_mAP50", "test_view_accuracy", "delta_m", "test_delta_m",
                           "step_ms", "parameters"])
    return "\n".join(conclusion_section(agg, rows, ["p"], strategies, ceilings))


def test_paired_difference_uses_only_the_seeds_both_finished():
    rows = [row("gradnorm", 0, 0.30, 0.7), row("gradnorm", 1, 0.34, 0.7), row("gradnorm", 2, 0.20, 0.7),
            row("gradnorm_frozen", 0, 0.28, 0.7), row("gradnorm_frozen", 1, 0.30, 0.7),
            row("gradnorm_frozen", 2, 0.9, 0.7, status="failed")]
    diff = paired_difference(rows, "p", "gradnorm", "gradnorm_frozen", "test_mAP50")
    assert diff.n == 2 and diff.mean == pytest.approx(0.03) and diff.sd == pytest.approx(0.02 ** 0.5 / 10)


def test_paired_note_counts_the_seeds_each_side_leads():
    rows = [row("gradnorm", 0, 0.24, 0.7), row("gradnorm", 1, 0.27, 0.7), row("gradnorm", 2, 0.28, 0.7),
            row("detection_only", 0, 0.34, None), row("detection_only", 1, 0.26, None),
            row("detection_only", 2, 0.33, None)]
    # -0.10, +0.01, -0.05: mean -0.0467, sd sqrt(((0.0533)^2 + (0.0567)^2 + (0.0033)^2) / 2) = 0.0551
    assert paired_note(rows, "p", "gradnorm", "detection_only", "test_mAP50") == \
        "paired by seed (n 3): -0.047 ± 0.055, detection_only higher in 2 of 3"
    assert paired_note(rows[:4], "p", "gradnorm", "detection_only", "test_mAP50") is None  # one pair: no note


def test_conclusion_names_the_winner_its_margin_and_what_it_means():
    text = conclusion(comparison_rows(), ceilings=CEILINGS)
    assert "### `p`: 14 of 15 runs finished" in text
    assert ("**gradnorm** has the highest delta_m on the test set: +10.0 ± 7.1 % (n 2); next gradnorm_frozen "
            "+7.5 ± 3.5 %: a gap of 2.5 points, not larger than the larger sd, so this data does not separate them"
            in text)
    # the sweep's pick is its smallest weight, and GradNorm's mAP50 lead over it (0.08) beats the sd (0.028)
    assert "Tuned fixed weight: fixed_w0.1, picked on val by delta_m among 2 weights (0.1, 1)." in text
    assert "gradnorm differs from it by more than the larger sd on at least one metric" in text
    assert "It is at the end of the sweep" in text
    # paired by seed: mAP50 differences 0.00 and 0.02 -> +0.010 ± 0.014; view differences 0 -> within the spread
    assert "(n 2): mAP50 +0.010 ± 0.014; view accuracy +0.000 ± 0.000; within the spread on both" in text
    assert "(two seeds: a hint, not a finding)" in text
    assert "gradnorm takes 120 ± 0 ms per training step against 100 ± 0 ms for fixed_w0.1 (1.20x" in text
    assert "Interference: not measured during these runs" in text
    assert "spans 0.630-0.720 over the strategies; copying the view of the nearest train frame scores 0.650" in text
    assert "memorisation baseline" in text


def test_a_tuned_fixed_weight_that_wins_is_named_as_enough():
    rows = [r for r in comparison_rows() if r["strategy"] not in ("gradnorm", "gradnorm_frozen")]
    rows += [row("fixed_w0.3", 0, 0.24, 0.72), row("fixed_w0.3", 1, 0.24, 0.72)]
    text = conclusion(rows, [*STRATEGIES, "fixed_w0.3"])
    assert "**fixed_w0.3** has the highest delta_m" in text
    assert "a tuned fixed weight is all this data needs (two seeds: a hint, not a finding)." in text
    assert "end of the sweep" not in text
    assert "Schedule or ratio" not in text  # no gradnorm pair to read it from
    one_seed = conclusion([r for r in rows if (r["strategy"], r["seed"]) != ("fixed_w0.3", 1)],
                          [*STRATEGIES, "fixed_w0.3"])
    assert "**fixed_w0.3** has the highest delta_m" in one_seed and "all this data needs" not in one_seed
    assert "whether a tuned fixed weight is enough is open" in one_seed
    # fixed_w0.3 at (0.24, 0.72) and (0.26, 0.72): delta_m 11.43 % and ((0.3 + 0.0286) / 2 =) 16.43 %, so
    # +13.9 ± 3.5 %; dual at (0.24, 0.72) twice: +11.4 ± 0 %, a gap of 2.5 points within the larger sd
    level = conclusion([r for r in rows if r["strategy"] not in ("dual", "fixed_w0.3")]
                       + [row("fixed_w0.3", 0, 0.24, 0.72), row("fixed_w0.3", 1, 0.26, 0.72),
                          row("dual", 0, 0.24, 0.72), row("dual", 1, 0.24, 0.72)], [*STRATEGIES, "fixed_w0.3"])
    assert "**fixed_w0.3** has the highest delta_m on the test set: +13.9 ± 3.5 %" in level
    assert "a tuned fixed weight does as well as any remedy here" in level


def test_val_pick_is_weighed_against_the_next_fixed_weight_on_val():
    # fixed_w0.1 -10.0 ± 0.0 % against fixed_w1 -38.57 ± 0.0 % (from comparison_rows): separated
    text = conclusion(comparison_rows())
    assert "On val: -10.0 ± 0.0 %, next fixed_w1 -38.6 ± 0.0 %, a gap of 28.57 points, beyond the larger sd." in text
    # fixed_w0.3 at mAP50 0.20 and 0.26 (view at the reference): delta_m 0 and +15 % -> +7.5 ± 10.6 %; fixed_w0.1 at
    # 0.22 twice: +5.0 ± 0.0 %. Val picks fixed_w0.3 by 2.5 points, inside its own sd: a tie the report names
    rows = [r for r in comparison_rows() if not r["strategy"].startswith("fixed_w")]
    rows += [row("fixed_w0.3", 0, 0.20, 0.70), row("fixed_w0.3", 1, 0.26, 0.70),
             row("fixed_w0.1", 0, 0.22, 0.70), row("fixed_w0.1", 1, 0.22, 0.70)]
    tie = conclusion(rows, ["detection_only", "view_only", "fixed_w0.1", "fixed_w0.3", "gradnorm"])
    assert ("Tuned fixed weight: fixed_w0.3, picked on val by delta_m among 2 weights (0.1, 0.3). On val: +7.5 ± 10.6 "
            "%, next fixed_w0.1 +5.0 ± 0.0 %, a gap of 2.50 points, within the larger sd: val could as well have "
            "picked fixed_w0.1; on the test set fixed_w0.1 scores +5.0 ± 0.0 %.") in tie
    one_seed = conclusion([r for r in rows if (r["strategy"], r["seed"]) != ("fixed_w0.1", 1)],
                          ["detection_only", "view_only", "fixed_w0.1", "fixed_w0.3", "gradnorm"])
    assert "next fixed_w0.1 +5.0 %, a gap of 2.50 points (a side has one seed)." in one_seed


def test_no_winner_without_the_single_task_runs_and_val_when_there_is_no_test_set():
    rows = [{k: v for k, v in r.items() if not k.startswith("test_")} for r in comparison_rows()
            if r["strategy"] in ("gradnorm", "fixed_w0.1", "fixed_w1")]
    text = conclusion(rows)
    assert "No winner yet: delta_m needs finished detection_only and view_only runs" in text
    assert "gradnorm against the task trained alone" not in text  # nothing alone to weigh it against
    # without single-task runs the sweep is picked on the mean of mAP50 and view accuracy: (0.16 + 0.7) / 2 wins
    assert "Tuned fixed weight: fixed_w0.1" in text


def test_report_opens_with_the_conclusion():
    report = build_report(command="c", date="d", machine="m", settings={"name": "t", "epochs": 2, "seeds": [0, 1],
                          "extra": ""}, splits={"p": Path("p.yaml")}, strategies=STRATEGIES, rows=comparison_rows(),
                          stage_summaries={}, failures=[], plots={}, ceilings=CEILINGS)
    assert report.index("## Conclusion") < report.index("How to read this") < report.index("## Split `p`")
    assert "**gradnorm** has the highest delta_m on the test set" in report


def test_schedule_names_the_metric_and_direction_beyond_the_spread():
    rows = [row("gradnorm", seed, m, v) for seed, m, v in ((0, 0.30, 0.70), (1, 0.32, 0.72), (2, 0.31, 0.69))]
    # frozen: mAP50 higher by 0.05, 0.06, 0.04 (mean 0.05 > sd 0.01); view differences 0.01, -0.01, 0 (within)
    rows += [row("gradnorm_frozen", seed, m, v) for seed, m, v in ((0, 0.35, 0.69), (1, 0.38, 0.73), (2, 0.35, 0.69))]
    text = conclusion(rows, ["gradnorm", "gradnorm_frozen"])
    assert "(n 3): mAP50 -0.050 ± 0.010; view accuracy +0.000 ± 0.010" in text
    assert "beyond the spread on mAP50 (gradnorm_frozen higher)" in text and "a hint" not in text


def test_before_delta_m_each_remedy_is_weighed_against_the_single_task_run_that_finished():
    rows = [r for r in comparison_rows() if r["strategy"] in ("gradnorm", "detection_only")]
    rows.append(row("dual", 0, None, None, status="not_run"))
    text = conclusion(rows)
    assert "No winner yet" in text
    # paired by seed: 0.22 - 0.18 and 0.26 - 0.22, both +0.040
    assert ("gradnorm against the task trained alone (test set): mAP50 0.240 vs 0.200, gradnorm higher by 0.040 "
            "(sd 0.028 vs 0.028; the difference is larger than the larger sd); paired by seed (n 2): +0.040 ± 0.000, "
            "gradnorm higher in 2 of 2.") in text
    only_pending = conclusion([row("dual", 0, None, None, status="not_run")], ["dual"])
    assert "### `p`: 0 of 1 runs finished" in only_pending and "- No run finished yet." in only_pending
    assert "Interference" not in only_pending


def test_a_winner_below_zero_is_called_what_it_is():
    rows = [r for r in comparison_rows() if r["strategy"] in ("detection_only", "view_only", "dual")]
    text = conclusion(rows, ["detection_only", "view_only", "dual"])
    assert "**dual** has the highest delta_m on the test set: -5.0 ± 0.0 % (n 2)" in text
    assert "Every strategy ranked is below 0: none matches the two tasks trained alone" in text
    assert "against the means of detection_only (n 2) and view_only (n 2)" in text
    assert "below 0" not in conclusion(comparison_rows(), ceilings=CEILINGS)  # gradnorm's +10 %


def test_epoch_choice_says_which_leads_hold_at_last_pt():
    def at(strategy, seed, m, v, last_m, last_v):
        return {**row(strategy, seed, m, v), "last_test_mAP50": last_m, "last_test_view_accuracy": last_v}

    rows = [at("detection_only", 0, 0.34, None, 0.34, None), at("detection_only", 1, 0.36, None, 0.36, None),
            at("detection_only", 2, 0.33, None, 0.34, None),
            at("view_only", 0, None, 0.62, None, 0.69), at("view_only", 1, None, 0.59, None, 0.71),
            at("view_only", 2, None, 0.66, None, 0.70),
            # mAP50 at best: -0.10, -0.09, -0.05 (mean -0.080, sd 0.026: beyond it, detection_only leads);
            # at last: -0.10, -0.08, -0.06 (mean -0.080, sd 0.020): holds
            # view at best: +0.08, +0.10, +0.04 (mean +0.073, sd 0.031: gradnorm leads);
            # at last: +0.01, -0.04, 0.00 (mean -0.010, sd 0.026: within it): does not hold
            at("gradnorm", 0, 0.24, 0.70, 0.24, 0.70), at("gradnorm", 1, 0.27, 0.69, 0.28, 0.67),
            at("gradnorm", 2, 0.28, 0.70, 0.28, 0.70)]
    text = conclusion(rows, ["detection_only", "view_only", "gradnorm"])
    assert ("best.pt → last.pt: gradnorm mAP50 -0.080 ± 0.026 → -0.080 ± 0.020 (holds); gradnorm view accuracy "
            "+0.073 ± 0.031 → -0.010 ± 0.026 (does not hold at last.pt).") in text
    assert "Epoch choice" not in conclusion(comparison_rows()), "no last.pt figures: no sentence"
