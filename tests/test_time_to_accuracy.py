"""benchmarks/time_to_accuracy.py: the curves it draws come from the right epochs and checkpoints."""
from __future__ import annotations

from pathlib import Path

from benchmarks.time_to_accuracy import curve, saved_checkpoints


def _history(epochs: list[int]) -> dict:
    return {"run": {}, "epochs": [{"epoch": e, "elapsed_s": 60.0 * (e + 1), "validated": e % 2 == 1,
                                   "val": {"mAP_0.5": 0.1 * e, "mAP_0.5:0.95": 0.05 * e}} for e in epochs]}


def test_valid_curve_keeps_validated_epochs_in_minutes():
    rows = curve(_history([0, 1, 2, 3]))
    assert [(r["epoch"], r["elapsed_min"]) for r in rows] == [(1, 2.0), (3, 4.0)]


def test_a_run_that_shared_the_cpu_can_be_put_on_a_clock_measured_alone():
    history = _history([0, 1, 2, 3])
    history["epochs"][3]["elapsed_s"] = 999.0  # its own clock counted another job's time
    rows = curve(history, minutes_per_epoch=0.5)
    assert [(r["epoch"], r["elapsed_min"]) for r in rows] == [(1, 1.0), (3, 2.0)]


def test_saved_checkpoints_are_the_periodic_ones_in_epoch_order_then_last(tmp_path: Path):
    weights = tmp_path / "weights"
    weights.mkdir()
    for name in ("epoch20.pt", "epoch10.pt", "epoch0.pt", "last.pt", "best.pt", "epochX.pt"):
        (weights / name).write_bytes(b"")
    assert [(e, p.name) for e, p in saved_checkpoints(tmp_path, _history(list(range(25))))] == \
        [(0, "epoch0.pt"), (10, "epoch10.pt"), (20, "epoch20.pt"), (24, "last.pt")]
    # the final epoch saved periodically: last.pt is the same weights, not evaluated twice
    assert [e for e, _ in saved_checkpoints(tmp_path, _history(list(range(21))))] == [0, 10, 20]
