"""The report's reading of checkpoint_interference.csv, on hand-made tables with hand-worked figures."""
import pytest

from utils.compare.conclusion import conclusion_section
from utils.compare.interference_table import (checkpoint_interference_sentence, closest_fixed_weight, read_tables,
                                              run_figures, span, summarize_runs)


def checkpoint(run, epoch, cosine, conflict, unweighted, w_det=1.0, w_view=0.05):
    return {"run": run, "epoch": epoch, "mean_cosine": cosine, "conflict_fraction": conflict,
            "median_ratio_unweighted": unweighted, "median_ratio_weighted": unweighted * w_view / w_det,
            "weight_det": w_det, "weight_view": w_view}


def test_run_figures_early_and_late():
    rows = [checkpoint("s/gradnorm_s0", 0, 0.00, 0.5, 2.0, w_view=0.2),
            checkpoint("s/gradnorm_s0", 5, 0.10, 0.25, 8.0, w_view=0.1),  # before a quarter of 39: not late
            checkpoint("s/gradnorm_s0", 10, 0.05, 0.25, 12.0),
            checkpoint("s/gradnorm_s0", 20, 0.05, 0.0, 16.0),
            checkpoint("s/gradnorm_s0", 39, 0.10, 0.0, 20.0, w_det=2.0, w_view=0.2)]
    figures = run_figures(list(reversed(rows)))  # order in the file does not matter
    assert figures["mean_cosine"] == pytest.approx(0.06)  # (0 + 0.1 + 0.05 + 0.05 + 0.1) / 5
    assert figures["conflict_fraction"] == pytest.approx(0.2)  # (0.5 + 0.25 + 0.25) / 5
    assert figures["ratio_first"] == 2.0
    assert figures["ratio_late"] == 16.0  # median of 12, 16, 20
    assert figures["weighted_late"] == pytest.approx(0.8)  # median of 0.6, 0.8, 2.0
    assert figures["weight_ratio_late"] == pytest.approx(0.05)  # median of 0.05, 0.05, 0.1


def test_summary_groups_runs_by_split_and_strategy():
    rows = [checkpoint("p/gradnorm_s0", 0, 0.1, 0.2, 2.0), checkpoint("p/gradnorm_s1", 0, 0.2, 0.2, 3.0),
            checkpoint("c/gradnorm_s0", 0, 0.3, 0.2, 4.0), checkpoint("not-a-run-name", 0, 0.9, 0.2, 4.0)]
    summary = summarize_runs(rows)
    assert set(summary) == {("p", "gradnorm"), ("c", "gradnorm")}
    assert sorted(summary[("p", "gradnorm")]["mean_cosine"]) == [0.1, 0.2]
    assert summary[("c", "gradnorm")]["ratio_first"] == [4.0]


def test_span():
    assert span([0.67, 0.77]) == "0.67-0.77"
    assert span([0.7]) == "0.70"
    assert span([0.045, 0.091], "+.3f") == "+0.045 to +0.091"
    assert span([-0.2, 0.1]) == "-0.20 to 0.10"
    assert span([17.4, 31.9], ".0f", " %") == "17-32 %"


def table(cosines=(0.05, 0.08)):
    rows = []
    for seed, cosine in enumerate(cosines):
        rows += [checkpoint(f"p/gradnorm_s{seed}", e, cosine, 0.2, r, w_view=0.05) for e, r in ((0, 3.0), (39, 14.0))]
    for weight, ratio in ((0.03, 13.3), (0.1, 12.0)):  # weighted late: 0.4 and 1.2 against gradnorm's 0.7
        rows += [checkpoint(f"p/fixed_w{weight}_s0", e, 0.05, 0.2, r, w_view=weight)
                 for e, r in ((0, 3.0), (39, ratio))]
    return rows


def test_closest_fixed_weight_on_a_log_scale():
    summary = summarize_runs(table())
    # |log(0.7 / 0.399)| = 0.562 against |log(1.2 / 0.7)| = 0.539: 0.1 is nearer, though 0.03 is nearer linearly
    assert closest_fixed_weight(summary, "p") == "fixed_w0.1"
    assert closest_fixed_weight(summary, "other") is None


def test_sentence_reads_direction_and_magnitude():
    text = checkpoint_interference_sentence(summarize_runs(table()), "p")
    assert "checkpoints of 4 runs" in text and "+0.050 to +0.080" in text and "nearly orthogonal" in text
    assert "from 3.0 at the first checkpoint to 12.0-14.0" in text
    assert "gradnorm 0.70" in text and "fixed_w0.03 0.40" in text
    assert "GradNorm's view/detection weight ratio there is 0.050" in text and "nearest to GradNorm's is fixed_w0.1" \
        in text
    assert "in conflict in some runs" in checkpoint_interference_sentence(summarize_runs(table((-0.2, 0.05))), "p")
    assert checkpoint_interference_sentence(summarize_runs(table()), "other") is None


def test_conclusion_prefers_the_checkpoint_table():
    rows = [{"split": "p", "strategy": "gradnorm", "seed": 0, "status": "ok"}]
    agg = {("p", "gradnorm"): {}}
    without = "\n".join(conclusion_section(agg, rows, ["p"], ["gradnorm"]))
    assert "not measured during these runs" in without
    with_table = "\n".join(conclusion_section(agg, rows, ["p"], ["gradnorm"], checkpoint_rows=table()))
    assert "measured on the saved checkpoints of 4 runs" in with_table and "not measured" not in with_table


def test_read_tables_names_the_bad_file(tmp_path):
    with pytest.raises(SystemExit, match="--checkpoint-interference .*missing.csv: no such file"):
        read_tables([tmp_path / "missing.csv"])
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("run,epoch\np/gradnorm_s0,0\n")
    with pytest.raises(SystemExit, match="wrong.csv: not a checkpoint_interference.csv .*mean_cosine"):
        read_tables([wrong])
    good = tmp_path / "good.csv"
    good.write_text("run,epoch,mean_cosine,median_ratio_unweighted\np/gradnorm_s0,0,0.1,2.0\n")
    assert read_tables([good]) == [{"run": "p/gradnorm_s0", "epoch": 0, "mean_cosine": 0.1,
                                    "median_ratio_unweighted": 2.0}]
