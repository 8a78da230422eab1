"""The strategy comparison (utils/compare): the pure parts on hand-made numbers, its entry points and flag checks,
and one tiny end-to-end run (trains, then resumes)."""
from __future__ import annotations

import csv
import json
import math
import os
import platform
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from tests.helpers import med_subset_yaml
from utils.compare import evaluation
from utils.compare.cli import main, parse_args
from utils.compare.comparison_csv import csv_fieldnames, csv_value
from utils.compare.evaluation import EVAL_FILE, EvalSettings, cached_evaluation, f1_score, metrics_row
from utils.compare.plots import plot_curves, plot_metric_vs_cost, plot_tradeoff, tradeoff_panels
from utils.compare.report import build_report, comparison_sentences, delta_m_table, format_stat, stat_table
from utils.compare.run_rows import epoch_choice_columns, interference_columns, median_step_ms
from utils.compare.runs import (COST_FILE, Plan, child_env, claim_run, lock_holder, lock_path, parse_train_iterations,
                                run_complete, run_finished, train_if_free)
from utils.compare.stats import Stat, aggregate, aggregate_stages, best_fixed, delta_m, mean_sd, with_delta_m
from utils.compare.strategies import (Strategy, build_command, check_extra_args, derived_hyp, detection_only_content,
                                      resolve_strategies, split_labels, strategy_spec, write_yaml)
from utils.data.dataset_yaml import check_dataset

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------ aggregation

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


def test_child_env_shares_the_cores_between_concurrent_jobs():
    assert child_env(1, {"PATH": "/bin"}, cpus=16) == {"PATH": "/bin"}, "one job: the environment unchanged"
    assert child_env(4, {}, cpus=16)["OMP_NUM_THREADS"] == "4"
    assert child_env(3, {}, cpus=2)["OMP_NUM_THREADS"] == "1", "never 0 threads"
    assert child_env(4, {"OMP_NUM_THREADS": "8"}, cpus=16)["OMP_NUM_THREADS"] == "8", "the user's choice wins"
    with pytest.raises(SystemExit):
        parse_args(["--data", "data/med.yaml", "--epochs", "1", "--jobs", "0"])


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


# --------------------------------------------------------------------------------- derived files

def test_derived_hyp_sets_task_weights_and_turns_mixing_off():
    base = {"lr0": 0.01, "mosaic": 1.0, "mixup": 0.1, "copy_paste": 0.0, "det_task": 1.0, "view_task": 0.5}
    fixed = derived_hyp(base, strategy_spec("fixed_w0.3").det_task, strategy_spec("fixed_w0.3").view_task)
    assert fixed["det_task"] == 1.0 and fixed["view_task"] == pytest.approx(0.3)
    assert fixed["mosaic"] == 0.0 and fixed["mixup"] == 0.0 and fixed["lr0"] == 0.01
    view_only = strategy_spec("view_only")
    hyp = derived_hyp(base, view_only.det_task, view_only.view_task)
    assert hyp["det_task"] == 0.0 and hyp["view_task"] == 1.0
    kept = derived_hyp(base)  # the adaptive strategies keep the given weights
    assert kept["det_task"] == 1.0 and kept["view_task"] == 0.5
    assert base["mosaic"] == 1.0, "the base hyp is not modified"


def test_detection_only_yaml_drops_cls_names_and_still_loads(tmp_path):
    for split in ("train", "val"):
        (tmp_path / "ds" / "images" / split).mkdir(parents=True)
    content = {"path": str(tmp_path / "ds"), "train": "images/train", "val": "images/val",
               "names": {0: "AR", 1: "MR"}, "cls_names": ["PSAX", "PLAX", "A4C"]}
    derived = detection_only_content(content)
    assert "cls_names" not in derived and "cls_names" in content
    path = write_yaml(tmp_path / "derived" / "det.yaml", derived, "test")
    data = check_dataset(path)
    assert data["cls_names"] is None and data["nc"] == 2 and data["val"] == str((tmp_path / "ds/images/val").resolve())
    # a relative path (resolved against the repository root by check_dataset) becomes absolute
    assert detection_only_content({"path": "datasets/x", "train": "a", "val": "b", "names": ["a"]})["path"] == \
        str((ROOT / "datasets/x").resolve())
    assert detection_only_content({"train": "/a", "val": "/b", "names": ["a"]})["path"] == str(ROOT)


def test_split_labels():
    med, split = ROOT / "data" / "med.yaml", ROOT / "runs" / "splits" / "med_patient_s0" / "med.yaml"
    assert split_labels([med]) == ["med"]
    assert split_labels([med, split]) == ["med", "med_patient_s0"]
    assert split_labels([Path("/x/a/med.yaml"), Path("/y/a/med.yaml")]) == ["a", "a_2"]
    assert split_labels([med, ROOT / "data" / "med-detection.yaml"]) == ["med", "med-detection"]


# --------------------------------------------------------------------------------------- resume

def _fake_run(run_dir: Path, epochs: list[int], last_pt: bool = True) -> Path:
    (run_dir / "weights").mkdir(parents=True)
    if last_pt:
        (run_dir / "weights" / "last.pt").write_bytes(b"not really a checkpoint")
    history = {"run": {}, "epochs": [{"epoch": e, "time_s": 2.0, "val": {}} for e in epochs], "steps": [],
               "interference": []}
    (run_dir / "training_history.json").write_text(json.dumps(history))
    return run_dir


def test_run_complete_needs_last_pt_and_the_final_epoch(tmp_path):
    done = _fake_run(tmp_path / "done", [0, 1, 2])
    assert run_complete(done, 3)
    assert not run_complete(done, 4), "an interrupted run (epoch 2 of 0..3) is trained again"
    assert not run_complete(_fake_run(tmp_path / "no_ckpt", [0, 1, 2], last_pt=False), 3)
    broken = _fake_run(tmp_path / "broken", [0, 1, 2])
    (broken / "training_history.json").write_text("{not json")
    assert not run_complete(broken, 3)
    assert not run_complete(tmp_path / "missing", 3)


def test_run_finished_accepts_an_early_stop_under_the_same_epochs(tmp_path):
    def early(name, rc, epochs_flag):
        run_dir = _fake_run(tmp_path / name, [0, 1])  # stopped after epoch 1 of 0..4
        (run_dir / COST_FILE).write_text(json.dumps({"rc": rc}))
        (run_dir / "opt.yaml").write_text(yaml.safe_dump({"epochs": epochs_flag}))
        return run_dir

    assert not run_complete(early("stopped", 0, 5), 5)
    assert run_finished(early("stopped2", 0, 5), 5), "a clean early stop is a result: not trained again"
    assert not run_finished(early("crashed", 1, 5), 5), "a failed child is trained again"
    assert not run_finished(early("other_budget", 0, 5), 8), "a different --epochs is a different run"
    assert not run_finished(_fake_run(tmp_path / "killed", [0, 1]), 5), "no cost record: it was interrupted"
    assert run_finished(_fake_run(tmp_path / "done", [0, 1, 2]), 3)


def _plan(run_dir: Path) -> Plan:
    return Plan("split", run_dir / "data.yaml", Strategy("fixed_w1", "train.py", 1.0, 1.0), 0, run_dir, [])


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_claimed_run_is_not_trained_or_cleared_by_a_second_process(tmp_path):
    run_dir = tmp_path / "split" / "fixed_w1_s0"
    partial = _fake_run(run_dir, [0])  # another process is training it: epoch 0 of 0..2 done
    lock = lock_path(run_dir)
    lock.write_text(f"{os.getpid()} {platform.node()}\n")  # held by a live process (this one)
    trained = []
    assert train_if_free(_plan(run_dir), 3, lambda p: trained.append(p) or {"rc": 0}) == ("held", None)
    assert trained == [] and (partial / "training_history.json").is_file(), "its folder is left alone"
    assert lock_holder(lock) == f"pid {os.getpid()} on {platform.node()}"
    assert claim_run(run_dir) is None

    lock.write_text(f"{os.getpid()} another-host\n")
    assert lock_holder(lock) is not None, "a claim from another host cannot be checked: it counts as held"


def test_a_free_or_stale_claim_is_taken_and_released_even_when_training_fails(tmp_path):
    run_dir = tmp_path / "split" / "fixed_w1_s0"
    lock = lock_path(run_dir)
    assert train_if_free(_plan(run_dir), 3, lambda p: {"rc": 0, "held": lock.is_file()}) == \
        ("trained", {"rc": 0, "held": True})
    assert not lock.exists(), "released after training"

    lock.write_text(f"{_dead_pid()} {platform.node()}\n")  # its process died
    assert lock_holder(lock) is None
    with pytest.raises(RuntimeError):
        train_if_free(_plan(run_dir), 3, lambda p: (_ for _ in ()).throw(RuntimeError("child failed")))
    assert not lock.exists(), "released when training raises"


def test_a_run_finished_by_another_process_after_planning_is_not_trained_again(tmp_path):
    run_dir = _fake_run(tmp_path / "split" / "fixed_w1_s0", [0, 1, 2])
    trained = []
    assert train_if_free(_plan(run_dir), 3, lambda p: trained.append(p) or {}) == ("finished", None)
    assert trained == [] and (run_dir / "weights" / "last.pt").is_file()


def test_cached_evaluation_reuses_until_checkpoint_or_data_change(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(evaluation, "evaluate_checkpoint",
                        lambda w, d, s: calls.append(w) or {"mAP50": 0.1 * len(calls)})
    run_dir = _fake_run(tmp_path / "run", [0])
    weights, data = run_dir / "weights" / "last.pt", tmp_path / "data.yaml"
    data.write_text("val: a\n")
    settings = EvalSettings(imgsz=64)
    assert cached_evaluation(run_dir, weights, data, settings) == {"mAP50": 0.1}
    assert cached_evaluation(run_dir, weights, data, settings) == {"mAP50": 0.1} and len(calls) == 1
    data.write_text("val: b\n")
    assert cached_evaluation(run_dir, weights, data, settings)["mAP50"] == pytest.approx(0.2)
    assert cached_evaluation(run_dir, weights, data, EvalSettings(imgsz=128))["mAP50"] == pytest.approx(0.3)
    weights.write_bytes(b"a retrained checkpoint, longer than before")
    assert cached_evaluation(run_dir, weights, data, EvalSettings(imgsz=128))["mAP50"] == pytest.approx(0.4)
    (run_dir / EVAL_FILE).write_text("{broken")
    assert cached_evaluation(run_dir, weights, data, EvalSettings(imgsz=128))["mAP50"] == pytest.approx(0.5)
    assert len(calls) == 5


def test_step_time_from_progress_bar_and_history():
    stderr = ("        0/1         0G      1.234 :  50%|#####     | 1/2 [00:01<00:01,  1.00it/s]\r"
              "        0/1         0G      1.234 : 100%|##########| 2/2 [00:02<00:00,  1.00it/s]\n"
              "        1/1         0G      1.100 : 100%|##########| 2/2 [00:02<00:00,  1.00it/s]\n"
              "                 Class     Images  Instances          P          R      mAP50   mAP50-95: "
              "100%|#| 1/1 [00:00<00:00]\n")
    iterations = parse_train_iterations(stderr)
    assert iterations == {0: 2, 1: 2}
    history = {"epochs": [{"epoch": 0, "time_s": 3.0}, {"epoch": 1, "time_s": 5.0}]}
    assert median_step_ms(history, iterations) == pytest.approx(2000.0)
    assert median_step_ms(history, {}) is None
    with_train_s = {"epochs": [{"epoch": 0, "time_s": 3.0, "train_s": 2.0},
                               {"epoch": 1, "time_s": 5.0, "train_s": 4.0}]}
    assert median_step_ms(with_train_s, iterations) == pytest.approx(1500.0)  # validation time left out


# ------------------------------------------------------------------------------- command lines

EXTRA = ["--cfg", "models/yolov5n.yaml", "--img", "64", "--hyp", "data/hyps/hyp.medical.yaml",
         "--gradnorm-alpha", "1.0", "--cls-imgsz=32", "--workers", "0"]


def _command(name: str, interference_every: int = 5) -> list[str]:
    return build_command(strategy_spec(name), data=Path("/d/med.yaml"), hyp=Path(f"/h/hyp_{name}.yaml"), epochs=3,
                           seed=1, project=Path("/p/med"), name=f"{name}_s1", interference_every=interference_every,
                           extra=EXTRA, python="python")


@pytest.mark.parametrize("name, script, present, absent", [
    ("detection_only", "train.py", [], ["--balancer", "--interference-every", "--fitness"]),
    ("view_only", "train.py", ["--fitness joint"], ["--balancer", "--interference-every"]),
    ("fixed_w0.3", "train.py", ["--interference-every 5"], ["--balancer"]),
    ("gradnorm", "train_gradnorm.py", ["--interference-every 5", "--gradnorm-alpha 1.0"], ["--balancer"]),
    ("uncertainty", "train.py", ["--balancer uncertainty", "--interference-every 5"], []),
    ("pcgrad", "train.py", ["--balancer pcgrad", "--interference-every 5"], []),
    ("dual", "train_dual.py", ["--cls-imgsz=32"], ["--balancer", "--interference-every"]),
])
def test_command_per_strategy(name, script, present, absent):
    cmd = _command(name)
    text = " ".join(cmd)
    assert cmd[0] == "python" and cmd[1] == str(ROOT / script)
    for flags in ("--data /d/med.yaml", f"--hyp /h/hyp_{name}.yaml", "--epochs 3", "--seed 1", "--weights  ",
                  "--exist-ok", "--project /p/med", f"--name {name}_s1", "--cfg models/yolov5n.yaml", "--img 64",
                  "--workers 0", *present):
        assert flags in text, (flags, text)
    for flag in absent:
        assert flag not in text
    assert cmd.count("--hyp") == 1 and "data/hyps/hyp.medical.yaml" not in text, "the derived hyp replaces --hyp"
    if script != "train_gradnorm.py":
        assert "--gradnorm-alpha" not in text and "1.0" not in cmd[2:cmd.index("--data")]
    if script != "train_dual.py":
        assert "--cls-imgsz=32" not in text


def test_interference_only_when_asked():
    assert "--interference-every" not in _command("fixed_w1", interference_every=0)


def test_strategy_names_and_controlled_flags():
    assert resolve_strategies(None, [0.1, 1.0]) == ["detection_only", "view_only", "fixed_w0.1", "fixed_w1",
                                                      "gradnorm", "uncertainty", "pcgrad", "dual"]
    assert resolve_strategies(["joint_fixed", "fixed_w1.0", "dual"], [0.5]) == ["fixed_w1", "dual"]
    assert resolve_strategies(None, [1, 0.3, 1.0]) == ["detection_only", "view_only", "fixed_w1", "fixed_w0.3",
                                                       "gradnorm", "uncertainty", "pcgrad", "dual"], \
        "a view weight given twice is one strategy: its runs are not planned and counted twice"
    with pytest.raises(ValueError):
        resolve_strategies(["dwa"], [1.0])
    with pytest.raises(SystemExit):
        check_extra_args(["--img", "64", "--epochs", "3"])
    with pytest.raises(SystemExit):
        check_extra_args(["--seed=2"])
    check_extra_args(EXTRA)


# ------------------------------------------------------------------------- flag checks and entry points

BASE_ARGS = ["--data", "data/med.yaml", "--epochs", "2"]


@pytest.mark.parametrize("flags, message", [
    (["--epochs", "0"], "ERROR: --epochs 0: expected a number >= 1"),
    (["--epochs", "-3"], "ERROR: --epochs -3: expected a number >= 1"),
    (["--jobs", "0"], "ERROR: --jobs 0: expected a number >= 1"),
    (["--seeds", "0", "-1"], "ERROR: --seeds -1: expected a number >= 0"),
    (["--view-weights", "0.1", "-0.5"], "ERROR: --view-weights -0.5: expected a number >= 0"),
    (["--view-weights", "nan"], "ERROR: --view-weights nan: expected a number >= 0"),
    (["--view-weights", "inf"], "ERROR: --view-weights inf: expected a number >= 0"),
    (["--interference-every", "-1"], "ERROR: --interference-every -1: expected a number >= 0"),
])
def test_a_bad_numeric_flag_stops_with_one_error_line_before_any_work(tmp_path, flags, message):
    project = tmp_path / "compare"
    with pytest.raises(SystemExit) as stop:
        main([*BASE_ARGS, *flags, "--project", str(project), "--", "--img", "64"])
    assert str(stop.value) == message
    assert not project.exists(), "nothing planned or written"


def test_the_edge_values_of_the_numeric_flags_are_accepted():
    opt, extra = parse_args(["--data", "data/med.yaml", "--epochs", "1", "--jobs", "1", "--seeds", "0", "7",
                             "--view-weights", "0", "2.5", "--interference-every", "0", "--", "--img", "64"])
    assert (opt.epochs, opt.jobs, opt.seeds, opt.view_weights) == (1, 1, [0, 7], [0.0, 2.5])
    assert opt.strategies[2:4] == ["fixed_w0", "fixed_w2.5"] and extra == ["--img", "64"]


ENTRY_POINTS = {"root script": ["compare.py"], "package": ["-m", "utils.compare"],
                "old path": ["benchmarks/compare.py"]}


def _run_entry(entry: list[str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *entry, *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_the_three_entry_points_share_the_help_and_plan_the_same_runs(tmp_path):
    helps, plans = {}, {}
    args = ["--data", "data/med.yaml", "--epochs", "3", "--seeds", "0", "1", "--strategies", "fixed_w0.3", "gradnorm",
            "--project", str(tmp_path), "--name", "same", "--dry-run", "--", "--img", "64", "--workers", "0"]
    for label, entry in ENTRY_POINTS.items():
        shown = _run_entry(entry, "--help")
        assert shown.returncode == 0, (label, shown.stderr[-2000:])
        usage, options = shown.stdout.split("\n\n", 1)
        assert usage.startswith("usage: " + ("python -m utils.compare" if entry[0] == "-m" else "compare.py"))
        helps[label] = options
        planned = _run_entry(entry, *args)
        assert planned.returncode == 0, (label, planned.stderr[-2000:])
        plans[label] = planned.stdout
    assert helps["root script"] == helps["package"] == helps["old path"]
    for flag in ("--view-weights", "--interference-every", "--jobs", "--report-only", "--dry-run"):
        assert flag in helps["root script"]
    assert plans["root script"] == plans["package"] == plans["old path"]
    assert len(plans["root script"].splitlines()) == 4, "2 strategies x 2 seeds"
    assert "train_gradnorm.py" in plans["root script"] and not (tmp_path / "same").exists(), "--dry-run writes nothing"


# ------------------------------------------------------------------------------------ end to end

def _compare(data: Path, project: Path, *flags: str,
             strategies: tuple[str, ...] = ("detection_only", "fixed_w1", "dual")) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(ROOT / "compare.py"), "--data", str(data), "--epochs", "1",
           "--seeds", "0", "--strategies", *strategies, *flags, "--name", "smoke",
           "--project", str(project), "--", "--img", "64", "--batch-size", "2", "--workers", "0",
           "--cfg", "models/yolov5n.yaml", "--hyp", "data/hyps/hyp.medical.yaml", "--noplots", "--noautoanchor"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_compare_end_to_end_then_resume(tmp_path, med_root):
    data = med_subset_yaml(tmp_path, med_root, n=4)
    cfg = yaml.safe_load(data.read_text())
    data.write_text(yaml.safe_dump({**cfg, "test": cfg["val"]}))  # a test split: evaluated too, with test_ columns
    first = _compare(data, tmp_path / "compare", "--jobs", "2")
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    root = tmp_path / "compare" / "smoke"
    with open(root / "comparison.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 and {r["strategy"] for r in rows} == {"detection_only", "fixed_w1", "dual"}
    assert all(r["status"] == "ok" and r["trained_now"] == "True" for r in rows), rows
    assert not list(root.rglob(".*.lock")), "every claim released"
    by_name = {r["strategy"]: r for r in rows}
    assert by_name["detection_only"]["view_accuracy"] == "" and by_name["fixed_w1"]["view_accuracy"] != ""
    assert float(by_name["dual"]["parameters"]) > float(by_name["fixed_w1"]["parameters"])
    assert all(r["best_epoch"] in {"0", "1"} for r in rows), "replayed from each run's history"
    assert by_name["detection_only"]["view_accuracy_peak"] == "" and by_name["dual"]["view_accuracy_peak"] != ""
    assert all(r["test_mAP50"] == r["mAP50"] for r in rows), "test lists the val images here: same figures"
    assert by_name["fixed_w1"]["test_view_accuracy"] == by_name["fixed_w1"]["view_accuracy"] != ""
    assert float(by_name["fixed_w1"]["peak_rss_gb"]) > 0.1 and float(by_name["fixed_w1"]["train_time_s"]) > 0
    assert "### Metrics on the held-out test set" in (root / "report.md").read_text()
    assert (root / "metric_vs_cost_med_views.png").is_file() and (root / "tradeoff_med_views.png").is_file()
    assert "cls_names" not in yaml.safe_load((root / "derived" / "data_med_views_detection_only.yaml").read_text())
    assert yaml.safe_load((root / "derived" / "hyp_fixed_w1.yaml").read_text())["view_task"] == 1.0

    second = _compare(data, tmp_path / "compare")
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert second.stdout.count("complete, not retrained") == 3 and "training..." not in second.stdout
    with open(root / "comparison.csv") as f:
        again = list(csv.DictReader(f))
    assert [r["trained_now"] for r in again] == ["False"] * 3
    assert [r["mAP50"] for r in again] == [r["mAP50"] for r in rows]
    assert [r["train_time_s"] for r in again] == [r["train_time_s"] for r in rows], "costs kept from the first run"
    assert all((Path(r["run_dir"]) / EVAL_FILE).is_file() for r in again), "each checkpoint evaluated once"

    interim = _compare(data, tmp_path / "compare", "--report-only",
                       strategies=("detection_only", "fixed_w1", "dual", "gradnorm"))
    assert interim.returncode == 0, interim.stdout[-3000:] + interim.stderr[-3000:]
    assert "training..." not in interim.stdout and "not run yet" in interim.stdout
    assert not (root / "med_views" / "gradnorm_s0").exists(), "--report-only trains nothing"
    with open(root / "comparison.csv") as f:
        statuses = {r["strategy"]: r["status"] for r in csv.DictReader(f)}
    assert statuses == {"detection_only": "ok", "fixed_w1": "ok", "dual": "ok", "gradnorm": "not_run"}
    report = (root / "report.md").read_text()
    assert "Interim report: 3 of 4 runs finished" in report and "- med_views / gradnorm: seeds 0" in report


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
