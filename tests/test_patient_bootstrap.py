"""Patient bootstrap: per-image matches from evaluate(), mAP50 / view accuracy on resampled images, paired intervals.

mAP50 figures are YOLOv5's 101-point interpolated AP: a class found perfectly scores 0.995 (the trapezoid's
last step falls from 1 to 0 over recall 0.99-1), one found at half recall with precision 1 then a miss about 0.625
(1 up to recall 0.5, then the envelope's line from 0.5 down to 0 at recall 1: 0.5 + 0.125).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from benchmarks import patient_bootstrap
from tests.export_models import make_checkpoints
from tests.helpers import MED_NAMES, MED_VIEWS
from tests.test_compare_conclusion import CEILINGS, STRATEGIES, comparison_rows
from utils.compare.bootstrap import (bootstrap, check_same_images, delta_m_samples, differences, interval, map50, pack,
                                     patient_groups, resample, seed_means, view_accuracy)
from utils.compare.bootstrap_table import read_bootstrap_tables
from utils.compare.evaluation import EvalSettings, evaluate_checkpoint
from utils.compare.records import save_record
from utils.compare.report import build_report
from utils.data.labels import img2label_paths, read_label_file
from utils.evaluation.validation import ImageMatches
from utils.evaluation.view_metrics import NO_VIEW


def image(path: str, preds: list[tuple[float, int, bool]], labels: list[int], view: tuple[int, int] = (NO_VIEW,) * 2):
    """ImageMatches from (conf, class, true positive at every IoU) predictions and label classes."""
    correct = np.array([[tp] * 10 for *_, tp in preds], dtype=bool).reshape(len(preds), 10)
    return ImageMatches(path, correct, np.array([p[0] for p in preds]), np.array([p[1] for p in preds]),
                        np.array(labels), *view)


HIT = image("p1-hit.png", [(0.9, 0, True)], [0])  # class 0 found
MISS = image("p2-miss.png", [(0.8, 0, False)], [0])  # class 0 missed, one false positive
OTHER = image("p3-other.png", [(0.7, 1, True)], [1])  # class 1 found
EMPTY = image("p3-empty.png", [], [])


def test_map50_of_hand_made_images():
    run = pack([HIT, MISS, OTHER, EMPTY])
    assert map50(run, np.array([0])) == pytest.approx(0.995)
    assert map50(run, np.array([0, 0])) == pytest.approx(0.995)  # a drawn twice changes nothing when all is found
    assert map50(run, np.array([1])) == 0.0
    assert map50(run, np.array([0, 1])) == pytest.approx(0.625, abs=0.006)
    assert map50(run, np.array([0, 2])) == pytest.approx(0.995)  # both classes found
    assert map50(run, np.array([1, 2, 3])) == pytest.approx(0.995 / 2)  # class 0 missed, class 1 found
    assert np.isnan(map50(run, np.array([3])))  # no label at all


def test_view_accuracy_counts_labelled_images_and_needs_a_head():
    views = [image(f"p{i}-v.png", [], [], (t, p)) for i, (t, p) in enumerate([(0, 0), (1, 1), (2, 0), (NO_VIEW, 1)])]
    run = pack(views)
    assert view_accuracy(run, np.arange(4)) == pytest.approx(2 / 3)
    assert view_accuracy(run, np.array([2, 2, 0])) == pytest.approx(1 / 3)
    assert np.isnan(view_accuracy(run, np.array([3])))
    assert np.isnan(view_accuracy(pack([HIT, MISS]), np.arange(2)))  # detection only: no view head


def test_patients_are_drawn_whole():
    paths = ["a-1.png", "b-1.png", "a-2.png", "c-1.png", "b-2.png", "a-3.png"]
    groups = patient_groups(paths)
    assert [g.tolist() for g in groups] == [[0, 2, 5], [1, 4], [3]]
    rng = np.random.default_rng(0)
    for _ in range(20):
        drawn = resample(groups, rng)
        counts = np.bincount(drawn, minlength=len(paths))
        for g in groups:  # every image of a patient is drawn as often as the others of that patient
            assert len(set(counts[g].tolist())) == 1
        assert counts[[0, 1, 3]].sum() == len(groups)  # one draw per patient slot


def test_paired_differences_of_identical_runs_are_zero_and_row0_is_the_whole_set():
    det = pack([HIT, MISS, OTHER])
    viewed = [image(m.path, [(c, k, bool(t[0])) for c, k, t in zip(m.conf, m.pred_cls, m.correct)], list(m.target_cls),
                    (0, 0 if i else 1)) for i, m in enumerate([HIT, MISS, OTHER])]
    joint = pack(viewed)
    runs = {"detection_only": [det], "view_only": [joint], "gradnorm": [joint, joint], "fixed_w0.1": [joint]}
    groups = patient_groups(check_same_images(runs))
    per_seed = bootstrap(runs, groups, n=50, seed=1)
    assert per_seed["gradnorm"].shape == (51, 2, 2)  # draws, seeds, (mAP50, view accuracy)
    samples = seed_means(per_seed)
    assert samples["gradnorm"][0] == pytest.approx([map50(det, np.arange(3)), 2 / 3])
    diffs = differences(samples, reference="gradnorm")
    assert set(diffs) == {("gradnorm", "mAP50 - detection_only"), ("gradnorm", "view accuracy - view_only"),
                          ("gradnorm", "delta_m"), ("fixed_w0.1", "mAP50 - detection_only"),
                          ("fixed_w0.1", "view accuracy - view_only"), ("fixed_w0.1", "delta_m"),
                          ("fixed_w0.1", "delta_m - gradnorm")}
    for key, values in diffs.items():
        finite = values[np.isfinite(values)]
        assert len(finite) > 25 and np.all(finite == 0), key


def test_seed_means_redraw_seeds_but_keep_the_whole_first_row():
    per_seed = {"gradnorm": np.array([[[0.1, 0.5], [0.3, 0.7]]] * 200)}  # 200 rows, seeds 0.1 / 0.3 (and 0.5 / 0.7)
    assert seed_means(per_seed)["gradnorm"][:, 0] == pytest.approx([0.2] * 200)
    drawn = seed_means(per_seed, np.random.default_rng(0))["gradnorm"]
    assert drawn[0] == pytest.approx([0.2, 0.6])  # row 0: the whole test set and every seed
    assert set(np.round(drawn[1:, 0], 6)) == {0.1, 0.2, 0.3}  # (a, a), (a, b) or (b, b)
    assert drawn[1:, 1] - drawn[1:, 0] == pytest.approx([0.4] * 199)  # both figures drawn from the same seeds


def test_delta_m_samples_and_interval_by_hand():
    samples = {"detection_only": np.array([[0.4, np.nan]]), "view_only": np.array([[0.0, 0.7]]),
               "fixed_w0.1": np.array([[0.3, 0.7]])}
    assert delta_m_samples(samples, "fixed_w0.1")[0] == pytest.approx(((0.3 - 0.4) / 0.4 + 0) / 2)
    result = interval(np.array([5.0, *range(-9, 91)]))  # observed 5, resamples -9..90
    assert result.observed == 5.0
    assert (result.low, result.high) == pytest.approx(np.percentile(np.arange(-9, 91), [2.5, 97.5]).tolist())
    assert result.share_above_zero == pytest.approx(0.9)


def test_runs_on_other_images_are_refused():
    with pytest.raises(ValueError, match="gradnorm \\(run 1\\)"):
        check_same_images({"gradnorm": [pack([HIT, MISS]), pack([MISS, HIT])]})


@pytest.fixture(scope="module")
def med_checkpoints(tmp_path_factory, med_root) -> tuple[dict[str, Path], Path]:
    """make_checkpoints' detect.pt and joint.pt (the same detector), and a split YAML whose test set is 3 patients."""
    tmp = tmp_path_factory.mktemp("bootstrap")
    images = sorted((med_root / "valid" / "images").glob("*.png"))
    by_patient: dict[str, list[Path]] = {}
    for path in images:
        by_patient.setdefault(path.name.split("-")[0], []).append(path)
    test = [p for patient in sorted(by_patient)[:3] for p in by_patient[patient]]
    (tmp / "test.txt").write_text("\n".join(map(str, test)) + "\n")
    data = tmp / "split.yaml"
    data.write_text(yaml.safe_dump({"train": str(tmp / "test.txt"), "val": str(tmp / "test.txt"),
                                    "test": str(tmp / "test.txt"), "names": MED_NAMES, "cls_names": MED_VIEWS}))
    return make_checkpoints(tmp / "weights"), data


def test_evaluate_keeps_per_image_matches_that_reproduce_its_figures(med_checkpoints):
    checkpoints, data = med_checkpoints
    settings = EvalSettings(imgsz=320, workers=0)
    kept: list = []
    with_matches = evaluate_checkpoint(checkpoints["joint"], data, settings, tasks=("test",), per_image={"test": kept})
    plain = evaluate_checkpoint(checkpoints["joint"], data, settings, tasks=("test",))
    assert with_matches == plain  # keeping the matches changes no figure
    assert "mAP50" not in plain and plain["test_mAP50"] > 0.1  # val skipped; a trained detector
    run = pack(kept)
    assert len(run.paths) == len(set(run.paths)) == len((data.parent / "test.txt").read_text().split())
    for match in kept:  # each image's matches are its own: the label classes of its label file
        label = read_label_file(img2label_paths([match.path])[0], nc=len(MED_NAMES), n_views=len(MED_VIEWS))
        assert sorted(match.target_cls.astype(int).tolist()) == sorted(label.boxes[:, 0].astype(int).tolist())
        assert match.view_true == label.view, match.path
    everything = np.arange(len(run.paths))
    assert map50(run, everything) == pytest.approx(plain["test_mAP50"], abs=1e-9)
    assert view_accuracy(run, everything) == pytest.approx(plain["test_view_accuracy"], abs=1e-9)


def fake_run(split_dir: Path, name: str, weights: Path) -> Path:
    run_dir = split_dir / name
    (run_dir / "weights").mkdir(parents=True)
    for file in ("best.pt", "last.pt"):
        shutil.copyfile(weights, run_dir / "weights" / file)
    (run_dir / "training_history.json").write_text(json.dumps({"epochs": [{"epoch": 0}]}))
    return run_dir


def test_benchmark_pairs_runs_on_the_same_patients_and_caches(med_checkpoints, tmp_path, capsys):
    checkpoints, data = med_checkpoints
    split_dir = tmp_path / "runs"
    fake_run(split_dir, "detection_only_s0", checkpoints["detect"])
    fake_run(split_dir, "view_only_s0", checkpoints["joint"])
    gradnorm = fake_run(split_dir, "gradnorm_s0", checkpoints["joint"])
    fake_run(split_dir, "fixed_w0.1_s0", checkpoints["joint"])
    (split_dir / "unfinished_s0").mkdir()
    argv = [str(split_dir), "--data", str(data), "--img", "320", "--epochs", "1", "--resamples", "40",
            "--workers", "0", "--out", str(tmp_path / "out")]
    patient_bootstrap.main(argv)
    table = pd.read_csv(tmp_path / "out" / "patient_bootstrap_best.csv")
    rows = {(r.strategy, r.comparison): r for r in table.itertuples()}
    # joint.pt holds detect.pt's detector: the same boxes, so every paired mAP50 difference is exactly 0
    same = rows[("gradnorm", "mAP50 - detection_only")]
    assert (same.observed, same.low, same.high, same.share_above_zero) == (0, 0, 0, 0)
    assert (same.low_seeds, same.high_seeds) == (0, 0)  # one seed each: drawing seeds changes nothing
    assert rows[("fixed_w0.1", "delta_m - gradnorm")].high == 0
    assert {s for s, _ in rows} == {"gradnorm", "fixed_w0.1"}
    assert "3 patients" in capsys.readouterr().out
    assert (tmp_path / "out" / "patient_bootstrap_best.png").stat().st_size > 0
    cache = gradnorm / "patient_bootstrap_best.npz"
    stamp = cache.stat().st_mtime_ns
    patient_bootstrap.main(argv)
    assert cache.stat().st_mtime_ns == stamp  # evaluated once

    # the run folder is gone (a fresh checkout) and its record keeps no matches: an error, not a smaller table
    records = tmp_path / "records"
    save_record(records / "gradnorm_s0", 1, {"best": {"status": "ok"}}, gradnorm)
    assert not list((records / "gradnorm_s0").glob("*.npz"))
    shutil.rmtree(gradnorm)
    with pytest.raises(SystemExit, match="cannot be bootstrapped"):
        patient_bootstrap.main([*argv, "--records", str(records)])


def bootstrap_row(strategy: str, comparison: str, observed: float, low: float, high: float, seeds: int = 3,
                  checkpoint: str = "best", split: str = "p") -> dict:
    return {"split": split, "checkpoint": checkpoint, "resamples": 1000, "groups": 17, "strategy": strategy,
            "seeds": seeds, "comparison": comparison, "observed": observed, "low": low, "high": high,
            "share_above_zero": 0.0, "low_seeds": low - 0.1, "high_seeds": high + 0.1, "share_above_zero_seeds": 0.0}


def test_conclusion_quotes_the_patient_intervals_of_the_strategies_it_turns_on():
    rows = [bootstrap_row("gradnorm", "mAP50 - detection_only", -0.079, -0.168, -0.016),
            bootstrap_row("gradnorm", "delta_m", -0.058, -0.166, 0.034),
            bootstrap_row("gradnorm_frozen", "delta_m - gradnorm", -0.054, -0.11, 0.0),
            bootstrap_row("fixed_w0.1", "delta_m - gradnorm", 0.106, 0.008, 0.157, seeds=1),
            bootstrap_row("fixed_w1", "delta_m - gradnorm", -0.3, -0.4, -0.2),  # not the val pick: not quoted
            bootstrap_row("gradnorm", "delta_m", 0.5, 0.4, 0.6, checkpoint="last"),  # another report's
            bootstrap_row("gradnorm", "delta_m", 0.5, 0.4, 0.6, split="other")]
    report = build_report(command="c", date="d", machine="m", settings={"name": "t", "epochs": 2, "seeds": [0, 1],
                          "extra": ""}, splits={"p": Path("p.yaml")}, strategies=STRATEGIES, rows=comparison_rows(),
                          stage_summaries={}, failures=[], plots={}, ceilings=CEILINGS, bootstrap_rows=rows)
    sentence = next(line for line in report.splitlines() if line.startswith("- Patient sampling"))
    assert "the 17 test patients redrawn 1000 times" in sentence
    assert ("gradnorm (3 seeds): mAP50 - detection_only -0.079 (-0.168 to -0.016; -0.268 to +0.084), delta_m -5.8 % "
            "(-16.6 to +3.4 %; -26.6 to +13.4 %) | gradnorm_frozen (3 seeds): delta_m - gradnorm -5.4 % (-11.0 to "
            "+0.0 %; -21.0 to +10.0 %) | fixed_w0.1 (1 seed): delta_m - gradnorm +10.6 % (+0.8 to +15.7 %; -9.2 to "
            "+25.7 %).") in sentence
    assert "fixed_w1" not in sentence and "+50.0" not in sentence
    assert not [line for line in build_report(
        command="c", date="d", machine="m", settings={"name": "t", "epochs": 2, "seeds": [0, 1], "extra": ""},
        splits={"p": Path("p.yaml")}, strategies=STRATEGIES, rows=comparison_rows(), stage_summaries={}, failures=[],
        plots={}).splitlines() if "Patient sampling" in line]  # no table, no sentence


def test_bootstrap_tables_are_checked_by_name(tmp_path):
    with pytest.raises(SystemExit, match="--patient-bootstrap .*nothing.csv: no such file"):
        read_bootstrap_tables([tmp_path / "nothing.csv"])
    wrong = tmp_path / "wrong.csv"
    pd.DataFrame([{"strategy": "gradnorm", "observed": 0.1}]).to_csv(wrong, index=False)
    with pytest.raises(SystemExit, match="wrong.csv: not a table of benchmarks/patient_bootstrap.py .*checkpoint"):
        read_bootstrap_tables([wrong])
    right = tmp_path / "right.csv"
    pd.DataFrame([bootstrap_row("gradnorm", "delta_m", -0.058, -0.166, 0.034)]).to_csv(right, index=False)
    assert read_bootstrap_tables([right])[0]["low"] == pytest.approx(-0.166)
