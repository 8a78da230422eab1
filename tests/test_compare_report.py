"""The strategy comparison's numbers and how they are shown, on hand-made rows: the columns read from a run,
mean ± sd over seeds, delta_m, the best fixed weight, the comparison sentences, report.md, comparison.csv, plots."""
from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import pytest

from utils.compare.comparison_csv import csv_fieldnames, csv_value
from utils.compare.evaluation import f1_score, metrics_row
from utils.compare.plots import plot_curves, plot_metric_vs_cost, plot_tradeoff, tradeoff_panels
from utils.compare.report import build_report, comparison_sentences, delta_m_table, format_stat, stat_table
from utils.compare.run_rows import epoch_choice_columns, interference_columns
from utils.compare.stats import Stat, aggregate, aggregate_stages, best_fixed, delta_m, mean_sd, with_delta_m


def test_mean_sd_is_sample_sd_and_skips_missing():
    stat = mean_sd([1.0, 2.0, 3.0, None, "", float("nan")])
    assert stat.n == 3 and stat.mean == pytest.approx(2.0) and stat.sd == pytest.approx(1.0)
    assert mean_sd([0.5]) == Stat(0.5, None, 1)
    assert mean_sd([]) == Stat(None, None, 0)
    assert mean_sd(["0.25", "0.75"]).sd == pytest.approx(math.sqrt(0.125))


def test_aggregate_groups_ok_rows_by_split_and_strategy():
    rows = [
        {"split": "a", "strategy": "gradnorm", "seed": 0, "status": "ok", "mAP50": 0.4},
        {"split": "a", "strategy": "gradnorm", "seed": 1, "status": "ok", "mAP50": 0.6},
        {"split": "a", "strategy": "gradnorm", "seed": 2, "status": "failed", "mAP50": None},
        {"split": "b", "strategy": "gradnorm", "seed": 0, "status": "ok", "mAP50": 0.1},
    ]
    agg = aggregate(rows, ["mAP50", "view_accuracy"])
    a = agg[("a", "gradnorm")]
    assert a["n"].n == 2 and a["mAP50"].mean == pytest.approx(0.5) and a["mAP50"].sd == pytest.approx(math.sqrt(0.02))
    assert a["view_accuracy"] == Stat(None, None, 0)
    assert agg[("b", "gradnorm")]["mAP50"] == Stat(0.1, None, 1)


def test_format_stat():
    assert format_stat(Stat(0.4333, 0.0212, 3)) == "0.433 ± 0.021"
    assert format_stat(Stat(0.4333, None, 1)) == "0.433"
    assert format_stat(Stat(None, None, 0)) == "n/a"
    assert format_stat(Stat(1885044.0, 0.0, 2), 0, thousands=True) == "1,885,044 ± 0"


def test_stat_table_marks_meaningless_columns_na():
    rows = [{"split": "s", "strategy": "view_only", "status": "ok", "mAP50": 0.01, "view_accuracy": 0.7},
            {"split": "s", "strategy": "detection_only", "status": "ok", "mAP50": 0.4}]
    table = stat_table(aggregate(rows, ["mAP50", "view_accuracy"]), "s", ["view_only", "detection_only", "dual"],
                         ["mAP50", "view_accuracy"])
    lines = table.splitlines()
    assert lines[2] == "| view_only | 1 | n/a | 0.700 |"
    assert lines[3] == "| detection_only | 1 | 0.400 | n/a |"
    assert lines[4] == "| dual | 0 | n/a | n/a |"


def test_aggregate_stages_averages_interference_over_seeds():
    s0 = {"overall": {"n": 4, "mean_cosine": 0.1, "conflict_fraction": 0.25, "median_norm_ratio": 2.0}}
    s1 = {"overall": {"n": 4, "mean_cosine": -0.1, "conflict_fraction": 0.75, "median_norm_ratio": 4.0},
          "P1": {"n": 4, "mean_cosine": 0.3, "conflict_fraction": 0.0, "median_norm_ratio": 1.0}}
    agg = aggregate_stages([s0, s1])
    assert agg["overall"]["mean_cosine"].mean == pytest.approx(0.0)
    assert agg["overall"]["conflict_fraction"].mean == pytest.approx(0.5)
    assert agg["overall"]["median_norm_ratio"].mean == pytest.approx(3.0)
    assert agg["P1"]["mean_cosine"] == Stat(0.3, None, 1)


def test_interference_columns_from_history_records():
    def record(cosine, ratio):
        stats = {"cosine": cosine, "norm_ratio": ratio, "magnitude_similarity": 0.5, "norm_a": 1.0, "norm_b": ratio}
        return {"step": 0, "epoch": 0, "overall": stats, "stages": {"neck": stats}}

    columns, summary = interference_columns({"interference": [record(0.5, 1.0), record(-0.5, 3.0), record(0.2, 2.0)]})
    assert columns["interference_n"] == 3
    assert columns["interference_mean_cosine"] == pytest.approx(0.2 / 3)
    assert columns["interference_conflict_fraction"] == pytest.approx(1 / 3)
    assert columns["interference_median_norm_ratio"] == pytest.approx(2.0)
    assert set(summary) == {"overall", "neck"}
    assert interference_columns({"interference": []}) == ({}, {})


def test_comparison_sentences_state_which_is_higher_against_the_sd():
    def row(strategy, seed, m, v):
        return {"split": "s", "strategy": strategy, "seed": seed, "status": "ok", "mAP50": m, "view_accuracy": v}

    rows = [row("fixed_w0.3", 0, 0.40, 0.60), row("fixed_w0.3", 1, 0.42, 0.62),
            row("fixed_w1", 0, 0.05, 0.70), row("fixed_w1", 1, 0.07, 0.72),  # mean 0.385 < fixed_w0.3's 0.51
            row("gradnorm", 0, 0.50, 0.60), row("gradnorm", 1, 0.52, 0.64)]
    agg = aggregate(rows, ["mAP50", "view_accuracy"])
    strategies = ["fixed_w0.3", "fixed_w1", "gradnorm", "pcgrad"]
    assert best_fixed(agg, "s", strategies) == "fixed_w0.3"
    sentences = comparison_sentences(agg, "s", strategies)
    assert "fixed_w0.3" in sentences[0] and len(sentences) == 3  # pcgrad has no rows: no sentence
    assert sentences[2] == ("gradnorm is not dominated on the val set: no fixed weight of the sweep has both a higher "
                            "mean mAP50 and a higher mean view accuracy.")
    assert "mAP50 0.510 vs 0.410, gradnorm higher by 0.100" in sentences[1]
    assert "the difference is larger than the larger sd" in sentences[1]
    assert "view accuracy 0.620 vs 0.610, gradnorm higher by 0.010" in sentences[1]
    assert "not larger than the larger sd" in sentences[1]
    assert "same val set, which favours the picked weight" in sentences[0]


def test_delta_m_is_the_mean_relative_change_against_the_single_task_runs():
    def stats(m=None, v=None):
        return {"mAP50": Stat(m, None, 1), "view_accuracy": Stat(v, None, 1)}

    # (0.14 / 0.15 - 1 + 0.60 / 0.70 - 1) / 2 = (-1/15 - 1/7) / 2 = -0.104762
    assert delta_m(stats(0.14, 0.60), stats(m=0.15), stats(v=0.70)) == pytest.approx(-0.104762, abs=1e-6)
    assert delta_m(stats(0.15, 0.70), stats(m=0.15), stats(v=0.70)) == 0
    assert delta_m(stats(0.14, 0.60), stats(m=0.0), stats(v=0.70)) is None  # no scale to compare against
    assert delta_m(stats(0.14, None), stats(m=0.15), stats(v=0.70)) is None
    assert delta_m({}, stats(m=0.15), stats(v=0.70)) is None


def test_best_fixed_uses_delta_m_so_a_small_scale_task_is_not_swamped():
    def row(strategy, m, v):
        return {"split": "s", "strategy": strategy, "seed": 0, "status": "ok", "mAP50": m, "view_accuracy": v}

    # fixed_w1 has the higher raw mean (0.385 vs 0.37) but keeps 13 % of detection; fixed_w0.1 keeps 93 %.
    rows = [row("detection_only", 0.15, None), row("view_only", None, 0.70),
            row("fixed_w0.1", 0.14, 0.60), row("fixed_w1", 0.02, 0.75), row("gradnorm", 0.15, 0.63)]
    agg = aggregate(rows, ["mAP50", "view_accuracy"])
    strategies = ["detection_only", "view_only", "fixed_w0.1", "fixed_w1", "gradnorm"]
    assert best_fixed(agg, "s", strategies) == "fixed_w0.1"
    assert "highest delta_m against detection_only and view_only): fixed_w0.1" in \
        comparison_sentences(agg, "s", strategies)[0]
    rows.append(row("gradnorm", 0.12, 0.77))  # a second seed: delta_m (-0.2 + 0.1) / 2 = -0.05, sd 0
    rows = with_delta_m(rows)
    assert "delta_m" not in rows[0] and rows[2]["delta_m"] == pytest.approx(-0.104762, abs=1e-6)
    agg = aggregate(rows, ["mAP50", "view_accuracy", "delta_m"])
    table = delta_m_table(agg, "s", strategies)
    # fixed_w1: (0.02/0.15 - 1 + 0.75/0.70 - 1) / 2 = -0.39762; gradnorm: (0 + 0.63/0.70 - 1) / 2 = -0.05
    assert table.splitlines()[0] == "| strategy | n | delta_m val |"
    assert table.splitlines()[2:] == ["| fixed_w0.1 | 1 | -10.5 % |", "| fixed_w1 | 1 | -39.8 % |",
                                      "| gradnorm | 2 | -5.0 ± 0.0 % |"]
    assert delta_m(agg[("s", "gradnorm")], agg[("s", "detection_only")], agg[("s", "view_only")]) == \
        pytest.approx(agg[("s", "gradnorm")]["delta_m"].mean)  # linear: delta_m of the means = mean delta_m
    no_single = with_delta_m([r for r in rows if r["strategy"].startswith(("fixed", "gradnorm"))])
    assert not any("delta_m" in r for r in no_single)
    agg = aggregate(no_single, ["mAP50", "view_accuracy", "delta_m"])
    assert best_fixed(agg, "s", strategies) == "fixed_w1"  # fallback: raw mean
    assert delta_m_table(agg, "s", strategies) is None
    assert "no single-task runs to compute delta_m" in comparison_sentences(agg, "s", strategies)[0]


def test_comparison_uses_the_test_set_and_the_single_task_runs_when_there_are_some():
    def row(strategy, m, v, test_m, test_v):
        return {"split": "s", "strategy": strategy, "seed": 0, "status": "ok", "mAP50": m, "view_accuracy": v,
                "test_mAP50": test_m, "test_view_accuracy": test_v}

    rows = [row("fixed_w0.3", 0.40, 0.60, 0.30, 0.50), row("fixed_w1", 0.10, 0.70, 0.08, 0.66),
            row("dual", 0.35, 0.55, 0.33, 0.58), row("detection_only", 0.45, None, 0.36, None),
            row("view_only", None, 0.65, None, 0.61)]
    agg = aggregate(rows, ["mAP50", "view_accuracy", "test_mAP50", "test_view_accuracy"])
    strategies = ["detection_only", "view_only", "fixed_w0.3", "fixed_w1", "dual"]
    sentences = comparison_sentences(agg, "s", strategies)
    assert sentences[0].startswith("Best fixed weight of the sweep, picked on the val set")
    assert "fixed_w0.3" in sentences[0]
    assert "held-out test set" in sentences[0]
    assert sentences[1:] == [
        "dual vs fixed_w0.3 (test set): mAP50 0.330 vs 0.300, dual higher by 0.030 (sd n/a with one seed); "
        "view accuracy 0.580 vs 0.500, dual higher by 0.080 (sd n/a with one seed).",
        "dual vs detection_only (test set): mAP50 0.330 vs 0.360, detection_only higher by 0.030 "
        "(sd n/a with one seed).",
        "dual vs view_only (test set): view accuracy 0.580 vs 0.610, view_only higher by 0.030 "
        "(sd n/a with one seed).",
        "dual is not dominated on the test set: no fixed weight of the sweep has both a higher mean mAP50 and a "
        "higher mean view accuracy."]
    rows.append(row("fixed_w0.1", 0.50, 0.50, 0.40, 0.60))  # beats dual on test on both
    agg = aggregate(rows, ["mAP50", "view_accuracy", "test_mAP50", "test_view_accuracy"])
    assert comparison_sentences(agg, "s", ["fixed_w0.1", *strategies])[-1] == (
        "dual is dominated on the test set by fixed_w0.1: at least as high a mean mAP50 and mean view accuracy.")
    report = build_report(command="c", date="d", machine="m", settings={"name": "t", "epochs": 1, "seeds": [0],
                            "extra": ""}, splits={"s": Path("x.yaml")}, strategies=strategies, rows=rows,
                            stage_summaries={}, failures=[], plots={})
    assert "### Metrics on the held-out test set" in report and "| fixed_w0.3 | 1 | 0.300 |" in report
    assert "| view_only | 1 | n/a | 0.610 |" in report and "| detection_only | 1 | 0.360 | n/a |" in report


def test_f1_and_metrics_row_from_a_result():
    view = SimpleNamespace(accuracy=0.75, balanced_accuracy=0.5, f1=[1.0, 0.0, 0.5])
    result = SimpleNamespace(map50=0.4, map=0.2, precision=0.6, recall=0.3, view=view,
                             per_class=[("AR", 3, 4, 0.5, 0.5, 0.35, 0.1), ("TR", 1, 1, 0.2, 0.2, 0.45, 0.3)])
    row = metrics_row(result, ["PSAX", "PLAX", "A4C"])
    assert row["F1"] == pytest.approx(2 * 0.6 * 0.3 / 0.9)
    assert row["AP50_AR"] == 0.35 and row["AP50_TR"] == 0.45 and "AP50_MR" not in row
    assert row["view_accuracy"] == 0.75 and row["F1_PLAX"] == 0.0 and row["F1_A4C"] == 0.5
    assert f1_score(0.0, 0.0) == 0.0


def test_view_f1_left_out_for_a_view_absent_from_the_val_set():
    view = SimpleNamespace(accuracy=1.0, balanced_accuracy=1.0, f1=[0.0, 1.0, 0.0], support=[0, 4, 0])
    result = SimpleNamespace(map50=0.0, map=0.0, precision=0.0, recall=0.0, view=view, per_class=[])
    row = metrics_row(result, ["PSAX", "PLAX", "A4C"])
    assert row["F1_PLAX"] == 1.0 and "F1_PSAX" not in row and "F1_A4C" not in row


def test_build_report_tables_interference_and_failures():
    def row(strategy, seed, m, v, status="ok"):
        return {"split": "med", "strategy": strategy, "seed": seed, "status": status, "mAP50": m, "view_accuracy": v,
                "AP50_AR": m, "F1_PSAX": v, "train_time_s": 100.0 + seed, "parameters": 1885044}

    rows = [row("fixed_w1", 0, 0.30, 0.60), row("fixed_w1", 1, 0.32, 0.64), row("gradnorm", 0, 0.40, 0.62),
            row("gradnorm", 1, None, None, status="failed")]
    stage = {"overall": {"n": 3, "mean_cosine": -0.2, "conflict_fraction": 0.5, "median_norm_ratio": 4.0},
             "neck": {"n": 3, "mean_cosine": 0.1, "conflict_fraction": 0.0, "median_norm_ratio": 2.0}}
    report = build_report(command="python benchmarks/compare.py ...", date="2026-11-24", machine="test box",
                            settings={"name": "t", "epochs": 2, "seeds": [0, 1], "extra": "--img 64"},
                            splits={"med": Path("data/med.yaml")}, strategies=["fixed_w1", "gradnorm"], rows=rows,
                            stage_summaries={("med", "fixed_w1"): [stage, stage]},
                            failures=[{**rows[3], "error": "exit code 1", "tail": "Traceback ..."}],
                            plots={"med": ["curves_med.png"]})
    assert "| fixed_w1 | 2 | 0.310 ± 0.014 |" in report
    assert "| gradnorm | 1 | 0.400 |" in report
    assert "| fixed_w1 | overall | 3 ± 0 | -0.200 ± 0.000 | 0.500 ± 0.000 | 4.000 ± 0.000 |" in report
    assert "gradnorm vs fixed_w1 (val set): mAP50 0.400 vs 0.310, gradnorm higher by 0.090 (sd n/a: gradnorm has " \
           "one seed)" in report, "no claim against the sd when one side has a single seed"
    assert "held-out test set" not in report, "no test columns, no test table"
    assert "### AP50 per class" in report and "| strategy | n | AR |" in report and "| strategy | n | PSAX |" in report
    assert "## Failed runs" in report and "Traceback ..." in report and "![curves_med.png](curves_med.png)" in report


def test_epoch_choice_reads_the_view_peak_from_validated_epochs_only():
    def epoch(n, fit, view, validated=True):
        return {"epoch": n, "fitness": fit, "validated": validated, "val": {"mAP_0.5": fit, "view_accuracy": view}}

    history = {"epochs": [epoch(0, 0.1, 0.50), epoch(1, 0.3, 0.80), epoch(2, 0.9, 0.95, validated=False),
                          epoch(3, 0.2, 0.80), epoch(4, 0.3, 0.20)]}
    assert epoch_choice_columns(history) == {"best_epoch": 4, "view_accuracy_peak": 0.80, "view_peak_epoch": 1}, \
        "best.pt: the later of equal fitness; an unvalidated epoch carries stale figures; view peak: the first on a tie"
    detection = {"epochs": [{"epoch": 0, "fitness": 0.1, "validated": True, "val": {"mAP_0.5": 0.1}}]}
    assert epoch_choice_columns(detection) == {"best_epoch": 0}, "no view task, no view peak"
    assert epoch_choice_columns(None) == {}


def test_report_tables_the_epoch_choice_when_runs_have_a_view_peak():
    rows = [{"split": "med", "strategy": "dual", "seed": s, "status": "ok", "mAP50": 0.5, "view_accuracy": v,
             "best_epoch": 19, "view_accuracy_peak": p, "view_peak_epoch": e}
            for s, v, p, e in ((0, 0.2, 0.5, 3), (1, 0.6, 0.7, 5))]
    report = build_report(command="c", date="d", machine="m", settings={"name": "t", "epochs": 20, "seeds": [0, 1],
                            "extra": ""}, splits={"med": Path("m.yaml")}, strategies=["dual"], rows=rows,
                            stage_summaries={}, failures=[], plots={})
    assert "### Epoch choice" in report
    assert "| dual | 2 | 19.0 ± 0.0 | 0.400 ± 0.283 | 0.600 ± 0.141 | 4.0 ± 1.4 |" in report
    without = build_report(command="c", date="d", machine="m", settings={"name": "t", "epochs": 20, "seeds": [0],
                             "extra": ""}, splits={"med": Path("m.yaml")}, strategies=["dual"],
                             rows=[{k: v for k, v in rows[0].items() if "peak" not in k}], stage_summaries={},
                             failures=[], plots={})
    assert "### Epoch choice" not in without


def test_interim_report_lists_the_runs_not_run_yet():
    rows = [{"split": "med", "strategy": "fixed_w1", "seed": 0, "status": "ok", "mAP50": 0.3, "view_accuracy": 0.6},
            {"split": "med", "strategy": "fixed_w1", "seed": 1, "status": "not_run"},
            {"split": "med", "strategy": "gradnorm", "seed": 0, "status": "not_run"},
            {"split": "med", "strategy": "gradnorm", "seed": 1, "status": "not_run"}]
    report = build_report(command="c", date="d", machine="m", settings={"name": "t", "epochs": 2, "seeds": [0, 1],
                            "extra": ""}, splits={"med": Path("data/med.yaml")}, strategies=["fixed_w1", "gradnorm"],
                            rows=rows, stage_summaries={}, failures=[], plots={})
    assert "**Interim report: 1 of 4 runs finished**" in report
    assert "- med / fixed_w1: seeds 1" in report and "- med / gradnorm: seeds 0, 1" in report
    assert "| fixed_w1 | 1 | 0.300 |" in report and "| gradnorm | 0 | n/a |" in report
    complete = build_report(command="c", date="d", machine="m", settings={"name": "t", "epochs": 2, "seeds": [0],
                              "extra": ""}, splits={"med": Path("data/med.yaml")}, strategies=["fixed_w1"],
                              rows=rows[:1], stage_summaries={}, failures=[], plots={})
    assert "Interim" not in complete and "Not run yet" not in complete


def test_csv_fieldnames_and_values():
    rows = [{"split": "s", "strategy": "dual", "AP50_AR": 0.1, "F1_PSAX": 0.2},
            {"split": "s", "strategy": "dual", "AP50_MR": 0.3}]
    fields = csv_fieldnames(rows)
    assert fields[:3] == ["split", "strategy", "seed"] and fields[-1] == "error"
    assert fields.index("AP50_AR") < fields.index("AP50_MR") < fields.index("view_accuracy") < fields.index("F1_PSAX")
    assert csv_value(None) == "" and csv_value(0.123456789) == "0.123457" and csv_value(3) == 3


def test_plots_of_a_split_with_no_finished_run_are_written_without_warnings(tmp_path):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plot_curves({}, "empty", tmp_path / "curves.png")
        plot_metric_vs_cost({}, "empty", ["fixed_w1"], tmp_path / "cost.png")
        plot_tradeoff({}, "empty", ["fixed_w1"], tmp_path / "tradeoff.png")
    for name in ("curves.png", "cost.png", "tradeoff.png"):
        assert (tmp_path / name).stat().st_size > 0


def test_tradeoff_plot_draws_val_and_test_panels_when_there_is_a_test_set(tmp_path):
    def row(strategy, seed, m, v, test=True):
        extra = {"test_mAP50": m - 0.05 if m is not None else None,
                 "test_view_accuracy": v - 0.05 if v is not None else None} if test else {}
        return {"split": "s", "strategy": strategy, "seed": seed, "status": "ok", "mAP50": m, "view_accuracy": v,
                **extra}

    rows = [row("detection_only", 0, 0.5, None), row("view_only", 0, None, 0.7), row("fixed_w0.1", 0, 0.4, 0.6),
            row("fixed_w0.1", 1, 0.42, 0.62), row("fixed_w1", 0, 0.1, 0.68), row("gradnorm", 0, 0.45, 0.66)]
    columns = ["mAP50", "view_accuracy", "test_mAP50", "test_view_accuracy"]
    strategies = ["detection_only", "view_only", "fixed_w0.1", "fixed_w1", "gradnorm"]
    agg = aggregate(rows, columns)
    assert tradeoff_panels(agg, "s", strategies) == ["", "test_"]
    plot_tradeoff(agg, "s", strategies, tmp_path / "two.png")
    val_only = [row(r["strategy"], r["seed"], r["mAP50"], r["view_accuracy"], test=False) for r in rows]
    agg = aggregate(val_only, columns)
    assert tradeoff_panels(agg, "s", strategies) == [""]
    plot_tradeoff(agg, "s", strategies, tmp_path / "one.png")
    from PIL import Image

    wide, narrow = Image.open(tmp_path / "two.png").size, Image.open(tmp_path / "one.png").size
    assert wide[0] == 2 * narrow[0] and wide[1] == narrow[1]  # one 6-inch panel per metric set


def test_view_label_ceiling_beside_every_view_accuracy_and_on_the_tradeoff_plot(tmp_path):
    rows = [{"split": "s", "strategy": s, "seed": 0, "status": "ok", "mAP50": m, "view_accuracy": v,
             "view_balanced_accuracy": v, "test_mAP50": m, "test_view_accuracy": v}
            for s, m, v in (("fixed_w0.1", 0.4, 0.6), ("gradnorm", 0.45, 0.66))]
    ceilings = {"s": {"val": {"accuracy": 0.557, "balanced": 0.5, "majority_rate": 0.492, "n": 184},
                      "test": {"accuracy": 0.682, "balanced": 0.6, "majority_rate": 0.547, "n": 201}}}
    report = build_report(command="c", date="d", machine="m", settings={"name": "t", "epochs": 1, "seeds": [0],
                          "extra": ""}, splits={"s": Path("x.yaml")}, strategies=["fixed_w0.1", "gradnorm"],
                          rows=rows, stage_summaries={}, failures=[], plots={}, ceilings=ceilings)
    valid, test = report.split("### Metrics on the held-out test set")
    assert "view acc (ceiling 0.557)" in valid and "view bal. acc (ceiling 0.500)" in valid
    assert "view acc (ceiling 0.682)" in test and "0.557" not in test.split("###")[0]
    assert "val 0.557 (majority rate 0.492, 184 frames); test 0.682" in report
    without = build_report(command="c", date="d", machine="m", settings={"name": "t", "epochs": 1, "seeds": [0],
                           "extra": ""}, splits={"s": Path("x.yaml")}, strategies=["fixed_w0.1", "gradnorm"],
                           rows=rows, stage_summaries={}, failures=[], plots={})
    assert "ceiling" not in without
    agg = aggregate(rows, ["mAP50", "view_accuracy", "test_mAP50", "test_view_accuracy"])
    plot_tradeoff(agg, "s", ["fixed_w0.1", "gradnorm"], tmp_path / "tradeoff.png", ceilings["s"])
    assert (tmp_path / "tradeoff.png").stat().st_size > 0

    # a patient-grouped split: no held-out frame has a near-identical train frame, so the copy is no bound
    for c in ceilings["s"].values():
        c["near_share"] = 0.0
    grouped = build_report(command="c", date="d", machine="m", settings={"name": "t", "epochs": 1, "seeds": [0],
                           "extra": ""}, splits={"s": Path("x.yaml")}, strategies=["fixed_w0.1", "gradnorm"],
                           rows=rows, stage_summaries={}, failures=[], plots={}, ceilings=ceilings)
    assert "view acc (copy 0.557)" in grouped and "view acc (copy 0.682)" in grouped and "ceiling 0." not in grouped
    assert "memorisation baseline, not a bound" in grouped and "val 0%, test 0%" in grouped
