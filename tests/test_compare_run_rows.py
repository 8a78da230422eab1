"""A comparison row per run (utils/compare/run_rows.py, evaluation.py): the cached evaluation, the checkpoint
scored (best.pt, or last.pt with --checkpoint last) and the step time."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from utils.compare import evaluation
from utils.compare.evaluation import EVAL_FILE, LAST_EVAL_FILE, EvalSettings, cached_evaluation
from utils.compare.run_rows import collect_row, median_step_ms
from utils.compare.runs import Plan, parse_train_iterations
from utils.compare.strategies import Strategy


def _fake_run(run_dir: Path, fitness: list[float], best_pt: bool = True) -> Path:
    """A finished run folder: last.pt, best.pt (unless not), and a history whose epochs carry these fitnesses."""
    (run_dir / "weights").mkdir(parents=True)
    (run_dir / "weights" / "last.pt").write_bytes(b"the final epoch")
    if best_pt:
        (run_dir / "weights" / "best.pt").write_bytes(b"the epoch picked on val")
    epochs = [{"epoch": e, "time_s": 2.0, "fitness": f, "val": {"view_accuracy": f}} for e, f in enumerate(fitness)]
    (run_dir / "training_history.json").write_text(json.dumps({"run": {}, "epochs": epochs, "interference": []}))
    return run_dir


def _scored_by_name(monkeypatch) -> list[str]:
    """Replace the evaluation by one that records the checkpoint's file name and scores best.pt 0.5, others 0.4."""
    calls: list[str] = []
    monkeypatch.setattr(evaluation, "evaluate_checkpoint",
                        lambda w, d, s: calls.append(w.name) or {"mAP50": 0.5 if w.name == "best.pt" else 0.4})
    return calls


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


def test_collect_row_scores_best_pt_or_last_pt_and_caches_each_apart(tmp_path, monkeypatch):
    scored = _scored_by_name(monkeypatch)
    run_dir = _fake_run(tmp_path / "fixed_w1_s0", [0.1, 0.3, 0.2])
    plan = Plan("split", tmp_path / "data.yaml", Strategy("fixed_w1", "train.py", 1.0, 1.0), 0, run_dir, [])
    plan.data.write_text("val: a\n")
    settings = EvalSettings(imgsz=64)
    best, _ = collect_row(plan, 3, {}, settings, trained_now=False)
    assert (best["checkpoint"], best["best_epoch"], best["mAP50"]) == ("best.pt", 1, 0.5)
    assert best["last_mAP50"] == 0.4, "best.pt's row also carries last.pt's headline figures"
    last, _ = collect_row(plan, 3, {}, settings, trained_now=False, checkpoint="last")
    assert (last["checkpoint"], last["mAP50"]) == ("last.pt", 0.4) and "best_epoch" not in last
    assert last["view_accuracy_peak"] == 0.3 and last["view_peak_epoch"] == 1, "the peak is the run's, either way"
    assert (run_dir / EVAL_FILE).is_file() and (run_dir / LAST_EVAL_FILE).is_file()
    collect_row(plan, 3, {}, settings, trained_now=False)
    collect_row(plan, 3, {}, settings, trained_now=False, checkpoint="last")
    assert scored == ["best.pt", "last.pt"], "switching between the two does not evaluate either again"


def test_collect_row_falls_back_to_last_pt_without_best_pt(tmp_path, monkeypatch):
    _scored_by_name(monkeypatch)
    run_dir = _fake_run(tmp_path / "fixed_w1_s0", [0.1, 0.3], best_pt=False)
    plan = Plan("split", tmp_path / "data.yaml", Strategy("fixed_w1", "train.py", 1.0, 1.0), 0, run_dir, [])
    plan.data.write_text("val: a\n")
    row, _ = collect_row(plan, 2, {}, EvalSettings(imgsz=64), trained_now=False)
    assert (row["checkpoint"], row["mAP50"], row["last_mAP50"]) == ("last.pt", 0.4, 0.4) and "best_epoch" not in row


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
