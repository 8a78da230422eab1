"""benchmarks/epoch_curves.py: test curves grouped by strategy, means over seeds worked out by hand."""
from __future__ import annotations

import pandas as pd
import pytest

from benchmarks.epoch_curves import late_means, main, markdown, mean_by_epoch, read_curves


def _write(folder, name, rows):
    pd.DataFrame(rows, columns=["epoch", "elapsed_min", "checkpoint", "test_mAP50", "test_mAP50_95",
                                "test_view_accuracy"]).to_csv(folder / name, index=False)


@pytest.fixture
def curves_folder(tmp_path):
    _write(tmp_path, "view_only_s0_test.csv", [[0, 1, "epoch0.pt", 0, 0, 0.50], [5, 6, "epoch5.pt", 0, 0, 0.60],
                                               [9, 10, "last.pt", 0, 0, 0.70]])
    _write(tmp_path, "view_only_s1_test.csv", [[0, 1, "epoch0.pt", 0, 0, 0.40], [5, 6, "epoch5.pt", 0, 0, 0.70]])
    _write(tmp_path, "detection_only_s0_test.csv", [[0, 1, "epoch0.pt", 0.1, 0.03, None],
                                                    [9, 10, "last.pt", 0.3, 0.1, None]])
    (tmp_path / "notes_test.csv").write_text("not a run\n")  # no _s<seed>: not a run's curve, skipped
    return tmp_path


def test_means_over_the_seeds_that_saved_each_epoch(curves_folder):
    curves = read_curves(curves_folder)
    assert sorted(set(curves.strategy)) == ["detection_only", "view_only"] and len(curves) == 7
    view = mean_by_epoch(curves, "test_view_accuracy")
    assert list(view.index) == ["view_only"], "detection_only has no view figure"
    # epoch 0: (0.5 + 0.4) / 2; epoch 5: (0.6 + 0.7) / 2; epoch 9: seed 0 alone
    assert view.loc["view_only"].tolist() == pytest.approx([0.45, 0.65, 0.70])
    det = mean_by_epoch(curves, "test_mAP50")
    assert list(det.index) == ["detection_only"], "view_only's mAP50 (0: it trains no detector) means nothing"
    assert det.loc["detection_only", 9] == pytest.approx(0.3)
    assert markdown(view, "epoch").splitlines()[2] == "| view_only | 0.450 | 0.650 | 0.700 |"
    late = late_means(curves, "test_view_accuracy", late_from=5)
    # seed 0: (0.6 + 0.7) / 2 = 0.65, seed 1: 0.7 alone -> 0.675 ± sqrt(2 x 0.025^2) = 0.0354
    assert late.loc["view_only", "mean"] == pytest.approx(0.675) and late.loc["view_only", "count"] == 2
    assert late.loc["view_only", "std"] == pytest.approx(0.0354, abs=1e-4)


def test_a_file_without_the_columns_is_named(tmp_path):
    (tmp_path / "gradnorm_s0_test.csv").write_text("epoch,test_mAP50\n0,0.1\n")
    with pytest.raises(SystemExit, match="gradnorm_s0_test.csv: no column test_view_accuracy"):
        read_curves(tmp_path)
    with pytest.raises(SystemExit, match="no <strategy>_s<seed>_test.csv"):
        read_curves(tmp_path / "empty")


def test_main_prints_the_tables_and_draws_the_figure(curves_folder, capsys):
    main([str(curves_folder), "--view-ceiling", "0.68", "--late-from", "5"])
    out = capsys.readouterr().out
    assert "view_only: 0.675 ± 0.035 (n 2)" in out and "detection_only: 0.300 (n 1)" in out
    assert "| view_only | 0.450 | 0.650 | 0.700 |" in out and (curves_folder / "epoch_curves.png").stat().st_size > 0
