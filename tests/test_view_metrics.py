"""View classification metrics against hand-computed values; unlabelled images (-1) never count."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from utils.evaluation.plots import plot_view_confusion_matrix
from utils.evaluation.view_metrics import (
    ViewAccumulator,
    compute_view_metrics,
    format_view_table,
    view_confusion,
)

NAMES = ["PSAX", "PLAX", "A4C"]

# 8 samples, two without a view label (the last two: their "predictions" must be ignored)
TRUE = np.array([0, 0, 0, 1, 1, 2, -1, -1])
PRED = np.array([0, 0, 1, 1, 2, 2, 0, 2])


def test_hand_computed_three_views():
    # Labelled pairs (true, pred): (0,0) (0,0) (0,1) (1,1) (1,2) (2,2)  -> n = 6
    # confusion, rows true, columns predicted:
    #   true 0: pred 0 twice, pred 1 once        -> [2, 1, 0]
    #   true 1: pred 1 once, pred 2 once          -> [0, 1, 1]
    #   true 2: pred 2 once                       -> [0, 0, 1]
    expected_confusion = np.array([[2, 1, 0], [0, 1, 1], [0, 0, 1]])
    # accuracy = diagonal / n = (2 + 1 + 1) / 6 = 4/6
    # recall    = diag / row sums    = 2/3, 1/2, 1/1
    # precision = diag / column sums = 2/2, 1/2, 1/2
    # balanced accuracy = (2/3 + 1/2 + 1) / 3 = (4/6 + 3/6 + 6/6) / 3 = 13/18
    # f1 = 2PR/(P+R): view 0: 2*1*(2/3)/(5/3) = 4/5; view 1: 2*.25/1 = 1/2; view 2: 2*.5/1.5 = 2/3
    m = compute_view_metrics(TRUE, PRED, 3)
    np.testing.assert_array_equal(m.confusion, expected_confusion)
    np.testing.assert_array_equal(view_confusion(TRUE, PRED, 3), expected_confusion)
    assert m.n == 6
    assert m.accuracy == pytest.approx(4 / 6)
    assert m.balanced_accuracy == pytest.approx(13 / 18)
    np.testing.assert_allclose(m.precision, [1.0, 0.5, 0.5])
    np.testing.assert_allclose(m.recall, [2 / 3, 0.5, 1.0])
    np.testing.assert_allclose(m.f1, [0.8, 0.5, 2 / 3])
    np.testing.assert_array_equal(m.support, [3, 2, 1])
    # `all` row means over views with support: P (1 + .5 + .5)/3 = 2/3, F1 (0.8 + 0.5 + 2/3)/3 = 59/90
    assert m.macro_precision == pytest.approx(2 / 3)
    assert m.macro_recall == pytest.approx(13 / 18)
    assert m.macro_f1 == pytest.approx(59 / 90)
    assert m.loss is None


def test_unlabelled_samples_change_nothing():
    more_true = np.concatenate((TRUE, [-1] * 5))
    more_pred = np.concatenate((PRED, [0, 1, 2, 2, 2]))
    a, b = compute_view_metrics(TRUE, PRED, 3), compute_view_metrics(more_true, more_pred, 3)
    np.testing.assert_array_equal(a.confusion, b.confusion)
    assert a.accuracy == b.accuracy and a.n == b.n


def test_view_never_predicted_and_view_without_support_give_zero_without_warning():
    # K = 4; true [0, 1, 2, 2], pred [0, 0, 2, 2]: view 1 is never predicted, view 3 never appears
    # precision: view 0 = 1/2 (two predicted, one right), view 1 = 0 (0/0), view 2 = 2/2, view 3 = 0 (0/0)
    # recall: 1/1, 0/1, 2/2, 0 (no support) ; f1: 2*.5*1/1.5 = 2/3, 0, 1, 0
    # balanced accuracy over views with support (0, 1, 2): (1 + 0 + 1) / 3 = 2/3; accuracy 3/4
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a numpy divide-by-zero RuntimeWarning would fail the test
        m = compute_view_metrics(np.array([0, 1, 2, 2]), np.array([0, 0, 2, 2]), 4)
    np.testing.assert_allclose(m.precision, [0.5, 0.0, 1.0, 0.0])
    np.testing.assert_allclose(m.recall, [1.0, 0.0, 1.0, 0.0])
    np.testing.assert_allclose(m.f1, [2 / 3, 0.0, 1.0, 0.0])
    np.testing.assert_array_equal(m.support, [1, 1, 2, 0])
    assert m.accuracy == pytest.approx(3 / 4)
    assert m.balanced_accuracy == pytest.approx(2 / 3)


def test_all_unlabelled_gives_zeros():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = compute_view_metrics(np.array([-1, -1, -1]), np.array([0, 2, 1]), 3)
        empty = compute_view_metrics(np.zeros(0, int), np.zeros(0, int), 3)
    for metrics in (m, empty):
        assert metrics.n == 0
        assert metrics.accuracy == 0.0 and metrics.balanced_accuracy == 0.0
        assert metrics.macro_precision == 0.0 and metrics.macro_f1 == 0.0
        assert not metrics.confusion.any()
        assert not (metrics.precision.any() or metrics.recall.any() or metrics.f1.any())
    assert "0 labelled images" in format_view_table(m, NAMES)


def test_out_of_range_labels_raise():
    with pytest.raises(ValueError):
        compute_view_metrics(np.array([0, 3]), np.array([0, 1]), 3)
    with pytest.raises(ValueError):
        compute_view_metrics(np.array([0, 1]), np.array([0, -1]), 3)


def test_accumulator_over_two_batches_equals_one_shot():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(8, 3, generator=generator)
    views = torch.from_numpy(TRUE)
    accumulator = ViewAccumulator(3)
    accumulator.update(logits[:5], views[:5], loss=0.5)
    accumulator.update(logits[5:], views[5:], loss=1.5)
    accumulated = accumulator.compute()

    labelled = views != -1
    one_shot = compute_view_metrics(TRUE, logits.argmax(1).numpy(), 3)
    np.testing.assert_array_equal(accumulated.confusion, one_shot.confusion)
    assert accumulated.accuracy == pytest.approx(one_shot.accuracy)
    assert accumulated.balanced_accuracy == pytest.approx(one_shot.balanced_accuracy)
    np.testing.assert_allclose(accumulated.f1, one_shot.f1)
    assert accumulated.n == 6
    assert accumulated.loss == pytest.approx(1.0)  # (0.5 + 1.5) / 2 batches
    np.testing.assert_array_equal(accumulator.true, TRUE[TRUE != -1])
    expected_conf = logits[labelled].softmax(1).max(1).values.numpy()
    np.testing.assert_allclose(accumulator.confidences, expected_conf, rtol=1e-6)


def test_accumulator_empty_and_wrong_shape():
    accumulator = ViewAccumulator(3)
    assert accumulator.compute().n == 0 and accumulator.compute().loss is None
    accumulator.update(torch.randn(2, 3), torch.tensor([-1, -1]))
    assert accumulator.compute().n == 0
    with pytest.raises(ValueError):
        accumulator.update(torch.randn(2, 4), torch.tensor([0, 1]))


def test_table_shows_names_and_numbers():
    m = compute_view_metrics(TRUE, PRED, 3)
    m.loss = 0.4321
    table = format_view_table(m, NAMES)
    lines = table.splitlines()
    assert lines[0] == "View accuracy 0.667, balanced accuracy 0.722 (6 labelled images), view loss 0.4321"
    assert lines[1].split() == ["View", "Images", "P", "R", "F1"]
    assert lines[2].split() == ["all", "6", "0.667", "0.722", "0.656"]
    assert lines[3].split() == ["PSAX", "3", "1", "0.667", "0.8"]
    assert lines[4].split() == ["PLAX", "2", "0.5", "0.5", "0.5"]
    assert lines[5].split() == ["A4C", "1", "0.5", "1", "0.667"]
    assert len({len(line) for line in lines[1:]}) == 1  # columns aligned
    # too few names: the view index stands in
    assert format_view_table(m, ["PSAX"]).splitlines()[4].split()[0] == "1"


def test_plot_writes_png(tmp_path):
    m = compute_view_metrics(TRUE, PRED, 3)
    path = plot_view_confusion_matrix(m.confusion, NAMES, tmp_path)
    assert path.name == "view_confusion_matrix.png"
    assert path.exists() and path.stat().st_size > 1000
    raw = plot_view_confusion_matrix(np.zeros((3, 3)), NAMES, tmp_path / "raw.png", normalize=False)
    assert raw.exists() and raw.stat().st_size > 1000


def test_matches_sklearn_if_available():
    metrics_module = pytest.importorskip("sklearn.metrics")
    labelled = TRUE != -1
    m = compute_view_metrics(TRUE, PRED, 3)
    assert m.accuracy == pytest.approx(metrics_module.accuracy_score(TRUE[labelled], PRED[labelled]))
    assert m.balanced_accuracy == pytest.approx(
        metrics_module.balanced_accuracy_score(TRUE[labelled], PRED[labelled])
    )
