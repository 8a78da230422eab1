"""benchmarks/gpu_check.py's own verdicts, without a GPU (a whole CPU dry run takes minutes: docs/gpu.md)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from benchmarks import gpu_check
from utils.training.run_files import append_results_row
from utils.training.task import RESULTS_KEYS, VIEW_RESULTS_KEYS


def _fake_run(folder: Path, amp: bool, loss: float, scaler: dict | None) -> Path:
    (folder / "weights").mkdir(parents=True)
    keys = RESULTS_KEYS + VIEW_RESULTS_KEYS
    append_results_row(folder / "results.csv", 0, [loss] + [0.5] * (len(keys) - 1), keys)
    (folder / "opt.yaml").write_text(yaml.safe_dump({"amp": amp, "amp_dtype": "float16"}))
    torch.save({"amp_scaler": scaler, "amp_skipped_steps": 2}, folder / "weights" / "last.pt")
    return folder


def test_a_good_amp_run_passes_with_its_figures(tmp_path):
    run = _fake_run(tmp_path / "ok", True, 0.08, {"scale": 32768.0})
    figures = gpu_check.training_figures(run)
    assert "float16 AMP" in figures and "box_loss=0.0800" in figures and "scale=32768" in figures
    assert "amp_skipped_steps=2" in figures


@pytest.mark.parametrize("amp,loss,scaler,why", [(False, 0.08, {"scale": 1.0}, "amp: False"),
                                                  (True, float("nan"), {"scale": 1.0}, "non-finite"),
                                                  (True, 0.08, {}, "no gradient-scaler state")])
def test_a_bad_run_fails_and_says_why(tmp_path, amp, loss, scaler, why):
    with pytest.raises(AssertionError, match=why):
        gpu_check.training_figures(_fake_run(tmp_path / "bad", amp, loss, scaler))


def test_export_is_skipped_while_export_py_is_missing(tmp_path, monkeypatch):
    monkeypatch.setattr(gpu_check, "ROOT", tmp_path)  # a checkout without export.py
    report = gpu_check.Report(None)
    gpu_check.export_check(report, None, tmp_path / "best.pt", None)
    assert report.lines == ["SKIP export (export.py not present)"] and report.counts["SKIP"] == 1
