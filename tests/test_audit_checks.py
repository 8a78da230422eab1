"""The audit's pure parts on hand-computed cases: signatures, nearest neighbours, the ceiling, label
comparison, group folds, and the cleanlab wrappers with planted label errors."""
from __future__ import annotations

import math

import numpy as np
import pytest

from utils.audit import ceiling as C
from utils.audit import signatures as S
from utils.audit.conflicts import compare_labels, worst_match_iou
from utils.audit.folds import group_folds
from utils.audit.model_checks import (box_label_issues, cleanlab_prediction, model_issues, prediction_summary,
                                     view_label_issues)
from utils.audit.predict import ImagePrediction
from utils.audit.records import AuditData, Record
from utils.data.groups import SplitError

S3 = math.sqrt(3) / 2  # 3 / sqrt(12)
NAMES = {0: "AR", 1: "MR", 2: "PR", 3: "TR"}
VIEWS = ["PSAX", "PLAX", "A4C"]


def test_standardise_makes_dot_product_the_correlation_and_zeroes_constant_rows():
    x = S.standardise(np.array([[1.0, 2.0, 3.0], [5.0, 5.0, 5.0]]))
    np.testing.assert_allclose(x[0], np.array([-1.0, 0.0, 1.0]) / math.sqrt(2))
    np.testing.assert_array_equal(x[1], np.zeros(3))  # no NaN from a zero norm
    a, b = np.array([1.0, 0.0, 0.0, 4.0]), np.array([2.0, 1.0, 3.0, 5.0])
    sa, sb = S.standardise(np.stack([a, b]))
    assert sa @ sb == pytest.approx(np.corrcoef(a, b)[0, 1])


def test_nearest_neighbours_by_hand_and_in_blocks(monkeypatch):
    # reference a=[3,2,1], b=[0,0,1], c=[2,4,6]; query [1,2,3]: corr a=-1, b=sqrt(3)/2, c=+1;
    # query [1,0,0]: corr a=sqrt(3)/2, b=-1/2, c=-sqrt(3)/2
    ref = S.standardise(np.array([[3, 2, 1], [0, 0, 1], [2, 4, 6]]))
    query = S.standardise(np.array([[1, 2, 3], [1, 0, 0]]))
    monkeypatch.setattr(S, "BLOCK_ROWS", 1)  # one query row per block: blocks must not change the answer
    idx, corr = S.nearest_neighbours(query, ref, k=3)
    np.testing.assert_array_equal(idx, [[2, 1, 0], [0, 1, 2]])
    np.testing.assert_allclose(corr, [[1.0, S3, -1.0], [S3, -0.5, -S3]], atol=1e-12)
    assert S.nearest_neighbours(query, ref, k=10)[0].shape == (2, 3)  # k capped at the reference size
    tie = S.standardise(np.array([[1, 2, 3], [2, 4, 6], [3, 2, 1]]))  # rows 0 and 1 identical once standardised
    np.testing.assert_array_equal(S.nearest_neighbours(S.standardise(np.array([[0, 1, 2]])), tie, k=2)[0], [[0, 1]])


def test_similar_pairs_threshold_and_blocks(monkeypatch):
    x = S.standardise(np.array([[1, 2, 3], [3, 2, 1], [5, 5, 5], [2, 4, 6.1]]))
    monkeypatch.setattr(S, "BLOCK_ROWS", 2)  # rows 0 and 3 sit in different blocks
    pairs = list(S.similar_pairs(x, 0.99))
    assert [(i, j) for i, j, _ in pairs] == [(0, 3)]
    assert pairs[0][2] == pytest.approx(np.corrcoef([1, 2, 3], [2, 4, 6.1])[0, 1])
    assert [(i, j) for i, j, _ in S.similar_pairs(x, 0.001)] == [(0, 3)]  # the constant row (all 0) pairs with none
    assert len(list(S.similar_pairs(x, -1.0))) == 6  # every pair i < j once


def test_majority_vote_and_agreement_bins():
    labels = np.array([[1, 0, 1], [2, 0, 1], [0, 2, 2], [1, 1, 1]])
    np.testing.assert_array_equal(C.majority_vote(labels), [1, 2, 2, 1])  # ties go to the nearest
    corr = np.array([0.995, 1.0, 0.98, 0.5, 0.92, 0.99])
    agree = np.array([1, 0, 1, 0, 1, 1], dtype=bool)
    rows = C.agreement_by_bin(corr, agree, edges=(-1.0, 0.9, 0.95, 0.99, 1.0))
    assert [(r["n"], r["agree"]) for r in rows] == [(1, 0), (1, 1), (1, 1), (3, 2)]
    rounded = C.agreement_by_bin(np.array([1.0 + 2e-16, -1.0 - 2e-16]), np.array([True, False]), edges=(-1.0, 0.9, 1.0))
    assert [r["n"] for r in rounded] == [1, 1]  # float rounding past +-1 stays in the end bins
    assert C.agreement_by_bin(np.array([0.5]), np.array([True]), edges=(-1.0, 0.9, 1.0))[1]["frac"] is None


def _data(views: list[tuple[str, int]], vectors: list[list[float]]) -> AuditData:
    records = [Record(i, f"/d/{split}/p{i}-v{i % 2}.mp4-{i}.png", split, view=v) for i, (split, v) in enumerate(views)]
    return AuditData(records, S.standardise(np.array(vectors, dtype=float)), NAMES, VIEWS)


def test_ceiling_copies_the_nearest_train_view():
    # train: A (view 0) ~ [1,2,3], B (view 1) ~ [3,2,1], C (view 1) ~ [1,3,2]; val frames near A, B, B, and one
    # near A labelled 2: the copy gets 2 of 4 right; train's most frequent view is 1, which 1 of 4 val frames carry
    data = _data([("train", 0), ("train", 1), ("train", 1), ("val", 0), ("val", 1), ("val", 0), ("val", 2)],
                 [[1, 2, 3], [3, 2, 1], [1, 3, 2], [1, 2, 3.1], [3, 2, 1.1], [3.1, 2, 1], [1.1, 2, 3]])
    (c,) = C.compute_ceilings(data, videos=None)
    assert (c.split, c.n, c.n_train) == ("val", 4, 3)
    np.testing.assert_array_equal(c.neighbour, [0, 1, 1, 0])
    assert c.accuracy == 0.5 and c.majority_view == 1 and c.majority_rate == 0.25
    assert c.confusion.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 0]]
    assert C.compute_ceilings(AuditData(data.records, data.signatures, NAMES, None), None) == []


def test_compare_labels_by_hand():
    box = np.array([[3, 0.5, 0.5, 0.2, 0.2]], np.float32)
    assert compare_labels(box, 1, box, 1, NAMES, VIEWS) == []
    assert compare_labels(box, 1, box, -1, NAMES, VIEWS) == []  # a missing view is not a conflict
    (view,) = compare_labels(box, 0, box, 2, NAMES, VIEWS)
    assert (view.kind, view.detail) == ("view_conflict", "PSAX vs A4C")
    (cls,) = compare_labels(box, 1, np.array([[1, 0.5, 0.5, 0.2, 0.2]]), 1, NAMES, VIEWS)
    assert (cls.kind, cls.detail) == ("class_conflict", "TR vs MR")
    shifted = np.array([[3, 0.55, 0.5, 0.2, 0.2]])  # overlap 0.15 x 0.2 of two 0.04 boxes: IoU 0.03 / 0.05 = 0.6
    assert worst_match_iou(box, shifted) == pytest.approx(0.6, abs=1e-5)
    assert compare_labels(box, 1, shifted, 1, NAMES, VIEWS) == []
    (moved,) = compare_labels(box, 1, shifted, 1, NAMES, VIEWS, iou_threshold=0.7)
    assert moved.kind == "box_conflict" and moved.worst_iou == pytest.approx(0.6, abs=1e-5)
    two = np.array([[0, 0.2, 0.2, 0.1, 0.1], [0, 0.8, 0.8, 0.1, 0.1]])
    assert worst_match_iou(two, two[::-1]) == pytest.approx(1.0, abs=1e-4)  # matched by overlap, not by row order


def test_group_folds_keep_groups_whole_and_balance_sizes():
    groups = {"a": ["1"] * 5, "b": ["2"] * 4, "c": ["3"] * 3, "d": ["4"] * 2, "e": ["5"]}
    folds = group_folds(groups, 2, seed=0)
    assert sorted(g for f in folds for g in f) == sorted(groups)
    assert sorted(sum(len(groups[g]) for g in f) for f in folds) == [7, 8]
    with pytest.raises(SplitError, match="--folds 6: only 5 group"):
        group_folds(groups, 6)


def test_cleanlab_view_finds_the_planted_flip():
    labels = np.array([0] * 10 + [1] * 10 + [2] * 10)
    probs = np.full((30, 3), 0.05)
    probs[np.arange(30), labels] = 0.9
    mask, quality = view_label_issues(labels, probs)
    assert not mask.any()  # consistent labels: no issue
    probs[3] = [0.02, 0.96, 0.02]  # labelled PSAX, the model is sure it is PLAX
    mask, quality = view_label_issues(labels, probs)
    assert np.flatnonzero(mask).tolist() == [3] and quality[3] == pytest.approx(0.02)


def _box_case(plant: str | None) -> tuple[list[dict], list[np.ndarray]]:
    """40 images, one box each, predicted as a good model does (a pixel or two off, plus unsure boxes far
    away; cleanlab floors swap scores at the smallest label-prediction similarity it sees, so with every
    box predicted exactly no swap could be found); image 7 planted."""
    rng = np.random.default_rng(0)
    labels, preds = [], []
    for i in range(40):
        cls, x, y = i % 4, rng.uniform(50, 300), rng.uniform(50, 200)
        box = np.array([[x, y, x + 60, y + 50]])
        given_cls, given = cls, box.copy()
        rows = [[*(box[0] + rng.normal(0, 1, 4)), 0.97, cls],  # a good model is a pixel or two off ...
                [350, 250, 390, 290, 0.05, (cls + 1) % 4]]  # ... and has unsure boxes elsewhere
        if i == 7 and plant == "swap":
            given_cls = (cls + 1) % 4
        if i == 7 and plant == "badloc":
            given = given + np.array([40, 32, 40, 32])
        if i == 7 and plant == "overlooked":
            rows.append([10, 10, 40, 40, 0.98, (cls + 2) % 4])
        labels.append({"bboxes": given, "labels": np.array([given_cls])})
        preds.append(cleanlab_prediction(np.array(rows), 4))
    return labels, preds


@pytest.mark.parametrize("plant", ["swap", "badloc", "overlooked"])
def test_cleanlab_boxes_find_the_planted_error_and_its_kind(plant):
    assert not box_label_issues(*_box_case(None))["issue"].any()
    verdict = box_label_issues(*_box_case(plant))
    assert np.flatnonzero(verdict["issue"]).tolist() == [7]
    pooled = {kind: verdict[kind][7] for kind in ("box_overlooked", "box_swap", "box_badloc")}
    assert min(pooled, key=pooled.get) == f"box_{plant}"


def test_model_issues_rows_say_what_the_model_suggests():
    labels, preds = _box_case("swap")
    records, predictions = [], []
    for i, (label, pred) in enumerate(zip(labels, preds)):
        (x1, y1, x2, y2), cls = label["bboxes"][0], int(label["labels"][0])
        box = [cls, (x1 + x2) / 2 / 400, (y1 + y2) / 2 / 300, (x2 - x1) / 400, (y2 - y1) / 300]
        records.append(Record(i, f"/d/p{i}.png", "val", boxes=np.array([box]), view=i % 3, shape=(300, 400)))
        rows = np.array([[*b[:4], b[4], k] for k in range(4) for b in pred[k]])
        probs = np.full(3, 0.05)
        probs[(i % 3) if i != 6 else 2] = 0.9  # record 6 is labelled PSAX, the model says A4C
        predictions.append(ImagePrediction(rows, probs / probs.sum()))
    data = AuditData(records, np.zeros((40, 3)), NAMES, VIEWS)
    issues = {(i.kind, i.record): i for i in model_issues(data, list(range(40)), predictions, "test")}
    assert set(issues) == {("view_issue", 6), ("box_swap", 7)}
    assert (issues[("view_issue", 6)].given, issues[("view_issue", 6)].suggested) == ("PSAX", "A4C")
    swap = issues[("box_swap", 7)]  # image 7 holds a TR jet labelled AR
    assert swap.given.startswith("AR@") and swap.suggested == "TR (conf 0.97)"


def test_prediction_summary_by_hand():
    box = np.array([[3, 0.5, 0.5, 0.2, 0.2]])  # 80x60 px box at the centre of a 400x300 image: x 160-240, y 120-180
    records = [Record(0, "/d/a.png", "val", boxes=box, view=0, shape=(300, 400)),
               Record(1, "/d/b.png", "val", boxes=box, view=1, shape=(300, 400)),
               Record(2, "/d/c.png", "val", boxes=box, view=-1, shape=(300, 400))]
    preds = [ImagePrediction(np.array([[160, 120, 240, 180, 0.9, 3]]), np.array([0.8, 0.1, 0.1])),  # right, found
             ImagePrediction(np.array([[160, 120, 240, 180, 0.1, 3]]), np.array([0.8, 0.1, 0.1])),  # wrong, too unsure
             ImagePrediction(np.array([[160, 120, 240, 180, 0.9, 1]]), np.array([0.1, 0.1, 0.8]))]  # other class
    summary = prediction_summary(records, preds)
    assert summary == {"view_n": 2, "view_accuracy": 0.5, "boxes_n": 3, "boxes_found": pytest.approx(1 / 3)}
