"""benchmarks/view_neighbours.py: the pure parts on hand-computed numbers, and one tiny end-to-end run."""
from __future__ import annotations

import csv
import math

import numpy as np
import pytest

from benchmarks import view_neighbours as V
from tests.helpers import med_subset_yaml

S3 = math.sqrt(3) / 2  # 3 / sqrt(12)


def test_standardise_makes_dot_product_the_correlation_and_zeroes_constant_rows():
    x = V.standardise(np.array([[1.0, 2.0, 3.0], [5.0, 5.0, 5.0]]))
    np.testing.assert_allclose(x[0], np.array([-1.0, 0.0, 1.0]) / math.sqrt(2))
    np.testing.assert_array_equal(x[1], np.zeros(3))  # no NaN from a zero norm
    a, b = np.array([1.0, 0.0, 0.0, 4.0]), np.array([2.0, 1.0, 3.0, 5.0])
    sa, sb = V.standardise(np.stack([a, b]))
    assert sa @ sb == pytest.approx(np.corrcoef(a, b)[0, 1])


def test_nearest_neighbours_by_hand():
    # reference: a=[3,2,1], b=[0,0,1], c=[2,4,6]
    # query [1,2,3] -> corr a=-1, b=3/sqrt(12)=sqrt(3)/2, c=+1 (scale-invariant)
    # query [1,0,0] -> corr a=sqrt(3)/2, b=-1/2, c=-sqrt(3)/2
    ref = V.standardise(np.array([[3, 2, 1], [0, 0, 1], [2, 4, 6]]))
    query = V.standardise(np.array([[1, 2, 3], [1, 0, 0]]))
    idx, corr = V.nearest_neighbours(query, ref, k=3)
    np.testing.assert_array_equal(idx, [[2, 1, 0], [0, 1, 2]])
    np.testing.assert_allclose(corr, [[1.0, S3, -1.0], [S3, -0.5, -S3]], atol=1e-12)
    idx1, corr1 = V.nearest_neighbours(query, ref, k=1)
    np.testing.assert_array_equal(idx1, [[2], [0]])
    np.testing.assert_allclose(corr1, [[1.0], [S3]], atol=1e-12)
    assert V.nearest_neighbours(query, ref, k=10)[0].shape == (2, 3)  # k capped at the reference size


def test_nearest_neighbours_ties_go_to_lower_index():
    ref = V.standardise(np.array([[1, 2, 3], [2, 4, 6], [3, 2, 1]]))  # rows 0 and 1 identical after standardising
    idx, _ = V.nearest_neighbours(V.standardise(np.array([[0, 1, 2]])), ref, k=2)
    np.testing.assert_array_equal(idx, [[0, 1]])


def test_majority_vote_k3():
    labels = np.array([[1, 0, 1], [2, 0, 1], [0, 2, 2], [1, 1, 1]])
    # 2 of 3 -> 1; three-way tie -> nearest (2); 2 of 3 beats the nearest -> 2; unanimous -> 1
    np.testing.assert_array_equal(V.majority_vote(labels), [1, 2, 2, 1])


def test_agreement_by_bin_hand_made():
    corr = np.array([0.995, 1.0, 0.98, 0.5, 0.92, 0.99])
    agree = np.array([1, 0, 1, 0, 1, 1], dtype=bool)
    rows = V.agreement_by_bin(corr, agree, edges=(-1.0, 0.9, 0.95, 0.99, 1.0))
    assert [(r["n"], r["agree"]) for r in rows] == [(1, 0), (1, 1), (1, 1), (3, 2)]
    assert [r["frac"] for r in rows] == [0.0, 1.0, 1.0, pytest.approx(2 / 3)]  # 0.99 and 1.0 fall in the top bin
    rounded = V.agreement_by_bin(np.array([1.0 + 2e-16, -1.0 - 2e-16]), np.array([True, False]), edges=(-1.0, 0.9, 1.0))
    assert [r["n"] for r in rounded] == [1, 1]  # float rounding past +-1 stays in the end bins
    empty = V.agreement_by_bin(np.array([0.5]), np.array([True]), edges=(-1.0, 0.9, 1.0))
    assert empty[1]["n"] == 0 and empty[1]["frac"] is None


def test_clip_id():
    assert V.clip_id("Z2liwqVnacKV-unnamed_1_1.mp4-12.png") == "Z2liwqVnacKV-unnamed_1_1.mp4"
    assert V.clip_id("frame_7.png") == "frame_7"


def test_end_to_end_split_against_itself(tmp_path, med_root, capsys):
    """Train == valid: every frame is its own nearest neighbour, so everything agrees."""
    data = med_subset_yaml(tmp_path, med_root, n=6)
    out = tmp_path / "out"
    result = V.main(["--data", str(data), "--size", "16", "12", "--out", str(out)])
    assert result["acc1"] == 1.0
    assert result["bins"][-1]["n"] == 6 and result["bins"][-1]["frac"] == 1.0
    assert "byte-identical train/valid pairs: 6 (6 both labelled, 0 disagree on view)" in capsys.readouterr().out
    rows = list(csv.DictReader(open(out / "view_neighbours.csv")))
    assert len(rows) == 6 and all(r["file"] == r["nn_train_file"] and r["agree"] == "1" for r in rows)
    assert (out / "agreement_by_corr.png").stat().st_size > 0
