"""make run's closing summary: it reports the epoch best.pt came from, not simply the last one."""
from __future__ import annotations

import json
from pathlib import Path

from utils.first_run import summary


def _epoch(epoch: int, fitness: float, map50: float, view_acc: float) -> dict:
    return {"epoch": epoch, "fitness": fitness, "validated": True, "task_weights": {"det": 1.7, "view": 0.3},
            "val": {"mAP_0.5": map50, "view_accuracy": view_acc, "view_balanced_accuracy": view_acc}}


def test_summary_names_folders_and_the_best_epochs_figures(tmp_path: Path):
    train, val, detect = (tmp_path / name for name in ("train", "val", "detect"))
    for folder, files in ((train, ["results.png", "labels.jpg"]), (val, ["confusion_matrix.png"]),
                          (detect, ["a.png", "b.png", "c.png"])):
        folder.mkdir()
        for name in files:
            (folder / name).write_bytes(b"")
    history = {"run": {"view_names": ["a", "b", "c"]},
               "epochs": [_epoch(0, 0.1, 0.2, 0.5), _epoch(1, 0.3, 0.6, 0.9), _epoch(2, 0.2, 0.5, 1.0)]}
    (train / "training_history.json").write_text(json.dumps(history))

    text = "\n".join(summary(train, val, detect))
    assert "epoch 1 of 3" in text
    assert "mAP50 0.600, view accuracy 0.900 (chance 0.33)" in text
    assert "3 in " + str(detect) in text and "2 in " + str(train) in text and "1 in " + str(val) in text
    assert "det 1.70, view 0.30" in text
