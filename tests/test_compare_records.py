"""Run records (utils/compare/records.py): a comparison's finished runs outlive their run folders."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.test_compare_run_rows import _fake_run, _scored_by_name
from utils.compare.cli import Collected, collect_runs, finished_seeds, main
from utils.compare.comparison_csv import write_csv
from utils.compare.evaluation import EvalSettings
from utils.compare import records
from utils.compare.records import (ROWS_FILE, csv_cell, read_record, record_dir, recorded, recorded_row,
                                   records_from_csv, save_record, this_machine)
from utils.compare.runs import COST_FILE, Plan
from utils.compare.strategies import strategy_spec

ROW = {"split": "med", "strategy": "gradnorm", "seed": 0, "status": "ok", "mAP50": 0.25, "test_mAP50": 0.125,
       "view_accuracy": 0.5, "best_epoch": 3, "run_dir": "/gone/gradnorm_s0", "trained_now": True, "error": None}


def test_a_record_keeps_both_rows_and_the_small_files_but_not_the_run_local_keys(tmp_path, monkeypatch):
    run_dir = _fake_run(tmp_path / "runs" / "gradnorm_s0", [0.1, 0.2])
    (run_dir / COST_FILE).write_text(json.dumps({"rc": 0, "train_time_s": 12.0}))
    record = record_dir(tmp_path / "records", "med", "gradnorm", 0)
    assert record == tmp_path / "records" / "med" / "gradnorm_s0"
    save_record(record, 40, {"best": ROW}, run_dir)
    assert recorded(record, 40) and not recorded(record, 20), "another --epochs is another run"
    assert recorded_row(record, "last") is None
    save_record(record, 40, {"last": {**ROW, "mAP50": 0.2}})  # a report at last.pt adds its row
    best, last = recorded_row(record, "best"), recorded_row(record, "last")
    assert best["mAP50"] == 0.25 and last["mAP50"] == 0.2, "the second save merged, not replaced"
    assert best["run_dir"] == str(record) and best["trained_now"] is False
    assert "run_dir" not in read_record(record)["rows"]["best"], "where it ran once is not part of the record"
    assert json.loads((record / COST_FILE).read_text())["train_time_s"] == 12.0
    assert read_record(record)["machine"] == this_machine(), "recorded from its run folder: where it was trained"
    monkeypatch.setattr(records, "this_machine", lambda: "another CPU")
    save_record(record, 40, {"best": ROW}, run_dir)
    assert read_record(record)["machine"] != "another CPU", "a later report elsewhere keeps the training machine"
    assert (record / "training_history.json").is_file() and not (record / "weights").exists()
    with pytest.raises(ValueError):
        save_record(record, 40, {"epoch7": ROW})


def test_a_failed_or_missing_record_does_not_count(tmp_path):
    record = tmp_path / "med" / "gradnorm_s0"
    assert not recorded(record, 40) and not recorded(None, 40)
    save_record(record, 40, {"best": {**ROW, "status": "eval_failed"}})
    assert not recorded(record, 40)
    (record / ROWS_FILE).write_text("{half")
    assert not recorded(record, 40) and read_record(record) is None


def test_csv_cells_are_read_back_as_the_report_wrote_them():
    assert [csv_cell(v) for v in ("", "True", "False", "3", "0.25", "1e-05", "ok", "fixed_w0.3")] == \
        [None, True, False, 3, 0.25, 1e-05, "ok", "fixed_w0.3"]


def test_records_from_a_report_pair_hold_its_figures(tmp_path):
    rows = [ROW, {**ROW, "strategy": "dual"}, {**ROW, "strategy": "view_only", "status": "not_run"}]
    write_csv(tmp_path / "best.csv", rows)
    write_csv(tmp_path / "last.csv", [{**r, "mAP50": 0.2} for r in rows[:1]] + rows[1:])
    written = records_from_csv(tmp_path / "best.csv", tmp_path / "last.csv", tmp_path / "records", 40)
    assert [p.name for p in written] == ["gradnorm_s0", "dual_s0"], "runs that were not ok are not recorded"
    best, last = (recorded_row(tmp_path / "records" / "med" / "gradnorm_s0", c) for c in ("best", "last"))
    assert (best["mAP50"], best["test_mAP50"], best["best_epoch"], best["seed"]) == (0.25, 0.125, 3, 0)
    assert last["mAP50"] == 0.2 and best["error"] is None
    assert records_from_csv(tmp_path / "best.csv", tmp_path / "last.csv", tmp_path / "records", 40) == [], \
        "a record already there is left alone"


def _plan(tmp_path: Path, run_dir: Path, record: Path) -> Plan:
    (tmp_path / "d.yaml").write_text("val: images\n")  # the evaluation key hashes the data YAML
    return Plan("med", tmp_path / "d.yaml", strategy_spec("gradnorm"), 0, run_dir, ["python", "train_gradnorm.py"],
                record=record)


def test_a_finished_run_is_recorded_at_both_checkpoints_then_reported_from_its_record(tmp_path, monkeypatch):
    calls = _scored_by_name(monkeypatch)
    run_dir = _fake_run(tmp_path / "runs" / "gradnorm_s0", [0.1, 0.3, 0.2])
    record = tmp_path / "records" / "med" / "gradnorm_s0"
    plan = _plan(tmp_path, run_dir, record)
    labels = {run_dir: "[1/1]"}
    live = collect_runs([plan], {run_dir: {"rc": 0}}, 3, EvalSettings(), labels).rows[0]
    assert sorted(calls) == ["best.pt", "last.pt"], "each checkpoint evaluated once, the other row from the cache"
    assert recorded(record, 3)
    assert recorded_row(record, "best")["mAP50"] == 0.5 and recorded_row(record, "last")["mAP50"] == 0.4
    assert "machine" not in recorded_row(record, "best"), "the machine is the record's, not a CSV column"

    for path in sorted(run_dir.rglob("*"), reverse=True):  # the run folder is gone (a fresh checkout)
        path.unlink() if path.is_file() else path.rmdir()
    calls.clear()
    again = collect_runs([plan], {}, 3, EvalSettings(), labels).rows[0]
    at_last = collect_runs([plan], {}, 3, EvalSettings(), labels, "last").rows[0]
    assert calls == [], "nothing evaluated: there is nothing left to evaluate"
    assert {k: again[k] for k in live if k not in ("run_dir", "trained_now")} == \
        {k: v for k, v in live.items() if k not in ("run_dir", "trained_now")}
    assert at_last["mAP50"] == 0.4 and at_last["checkpoint"] == "last.pt"


def test_a_record_without_the_asked_checkpoint_is_a_failure_named_in_the_report(tmp_path):
    record = tmp_path / "records" / "med" / "gradnorm_s0"
    save_record(record, 3, {"best": ROW})
    collected: Collected = collect_runs([_plan(tmp_path, tmp_path / "gone", record)], {}, 3, EvalSettings(),
                                        {tmp_path / "gone": "[1/1]"}, "last")
    assert collected.rows[0]["status"] == "eval_failed" and "no row scored at last.pt" in collected.rows[0]["error"]
    assert len(collected.failures) == 1


def test_recorded_runs_are_planned_as_done_and_their_extra_seeds_counted(tmp_path, capsys):
    records = tmp_path / "records"
    for seed in (0, 3):
        save_record(record_dir(records, "med", "gradnorm", seed), 3, {"best": {**ROW, "seed": seed}})
    assert finished_seeds(tmp_path / "none", ["gradnorm"], [0], 3, records / "med") == [3]
    assert finished_seeds(tmp_path / "none", ["gradnorm"], [0], 5, records / "med") == [], "another --epochs"
    main(["--data", "data/med.yaml", "--epochs", "3", "--seeds", "0", "1", "--strategies", "gradnorm",
          "--project", str(tmp_path), "--name", "cmp", "--records", str(records), "--dry-run", "--",
          "--img", "64", "--workers", "0"])
    planned = capsys.readouterr().out.splitlines()
    assert len(planned) == 3, planned
    assert planned[0].startswith("# complete, not retrained: ") and "--seed 0" in planned[0]
    assert not planned[1].startswith("#") and "--seed 1" in planned[1], "seed 1 is not recorded: it is trained"
    assert planned[2].startswith("# complete, not retrained: ") and "--seed 3" in planned[2]
