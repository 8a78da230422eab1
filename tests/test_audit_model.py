"""The model-based audit end to end: --weights scores only the splits the checkpoint did not train on,
--folds trains tiny models on patient-grouped folds and scores every image; neither writes into the
dataset folder. The model is untrained or barely trained, so what cleanlab flags is not asserted here
(tests/test_audit_checks.py plants label errors for that); the plumbing is."""
from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest

from models.yolo_cls import build_model
from tests.audit_data import NAMES, VIEWS, planted_dataset, snapshot
from utils.audit.cli import main
from utils.checkpoints import build_checkpoint, save_checkpoint

MODEL_KINDS = {"view_issue", "box_overlooked", "box_swap", "box_badloc"}


def _checkpoint(path: Path, data: Path, nc: int = 4, views: list[str] = VIEWS) -> Path:
    model = build_model("models/yolov5n.yaml", nc=nc, n_views=len(views))
    names = dict(enumerate(NAMES)) if nc == 4 else {i: f"c{i}" for i in range(nc)}
    save_checkpoint(build_checkpoint(model_yaml=model.yaml, model_state=model.state_dict(), names=names, epoch=0,
                                     best_fitness=0.0, opt={"data": str(data), "imgsz": 64},
                                     extra={"view_names": views}), path)
    return path


def _model_rows(out: Path) -> list[dict]:
    with open(out / "issues.csv", newline="", encoding="utf-8") as f:
        return [r for r in csv.DictReader(f) if r["kind"] in MODEL_KINDS]


def test_weights_scores_the_splits_it_did_not_train_on(tmp_path):
    root = tmp_path / "planted"
    data = planted_dataset(root)
    weights = _checkpoint(tmp_path / "w.pt", data)
    before = snapshot(root)
    out = main(["--data", str(data), "--project", str(tmp_path / "runs"), "--name", "w", "--weights", str(weights)])
    assert snapshot(root) == before
    report = (out / "report.md").read_text()
    assert "Images scored: val 5." in report and f"`--weights {weights}` at 64 px" in report
    assert all(r["split"] == "val" for r in _model_rows(out))
    with pytest.raises(SystemExit, match="ERROR: --weights .* its classes"):
        main(["--data", str(data), "--project", str(tmp_path / "runs"), "--weights",
              str(_checkpoint(tmp_path / "coco.pt", data, nc=80))])
    with pytest.raises(SystemExit, match=r"ERROR: --weights .* its views \['A2C', 'A4C'\] are not the dataset's"):
        main(["--data", str(data), "--project", str(tmp_path / "runs"), "--weights",
              str(_checkpoint(tmp_path / "a2c.pt", data, views=["A2C", "A4C"]))])


def test_folds_score_every_image_out_of_fold(tmp_path, monkeypatch):
    """Two folds of 1 epoch at 64 px on 20 images; two trainer processes start, train, validate and save,
    which is why this test is slower than the rest (see the timing in docs/audit.md)."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the children inherit it: no OpenMP spin-waits on busy cores
    root = tmp_path / "planted"
    data = planted_dataset(root)
    os.chmod(data, 0o644)
    before = snapshot(root)
    out = main(["--data", str(data), "--project", str(tmp_path / "runs"), "--name", "f", "--folds", "2", "--",
                "--cfg", "models/yolov5n.yaml", "--img", "64", "--epochs", "1", "--batch-size", "4",
                "--workers", "0", "--noplots", "--noautoanchor", "--no-channels-last"])
    assert snapshot(root) == before, "a fold's trainer wrote into the dataset folder"
    for fold in (0, 1):
        run = out / "folds" / f"fold{fold}"
        assert (run / "run" / "weights" / "last.pt").is_file()
        lists = [Path(run / "data" / f"{s}.txt").read_text().split() for s in ("train", "val")]
        assert all(str(out / "folds" / "links") in p for p in lists[0] + lists[1])  # links, not the dataset
    held = [set(Path(out / "folds" / f"fold{i}" / "data" / "val.txt").read_text().split()) for i in (0, 1)]
    assert not held[0] & held[1] and len(held[0] | held[1]) == 20
    patients = [{Path(p).name.split("-")[0] for p in h} for h in held]
    assert not patients[0] & patients[1], "a patient is in both held-out folds"
    report = (out / "report.md").read_text()
    assert "Images scored: train 15, val 5." in report and "out-of-fold, 2 folds by patients" in report
    assert "- the predictions' view accuracy: " in report
    predictions = (out / "predictions.csv").read_text().splitlines()
    assert predictions[0] == "file,split,p_PSAX,p_PLAX,p_A4C,boxes" and len(predictions) == 21

    # --reuse-folds predicts with the folds' last.pt again and trains nothing
    log = out / "folds" / "fold0" / "train_stdout.log"
    stamp = log.stat().st_mtime_ns
    reused = main(["--data", str(data), "--project", str(tmp_path / "runs"), "--name", "f", "--exist-ok", "--folds",
                   "2", "--reuse-folds", "--", "--img", "64"])
    assert log.stat().st_mtime_ns == stamp and (reused / "predictions.csv").read_text().splitlines() == predictions

    # a fold's checkpoint as --weights: only its held-out fold is scored (its lists name links, not the files)
    held_real = [os.path.realpath(p) for p in held[0]]
    expected = {s: sum(f"/{folder}/images/" in p for p in held_real) for s, folder in (("train", "train"),
                                                                                        ("val", "valid"))}
    again = main(["--data", str(data), "--project", str(tmp_path / "runs"), "--name", "w", "--weights",
                  str(out / "folds" / "fold0" / "run" / "weights" / "last.pt")])
    scored = ", ".join(f"{s} {n}" for s, n in expected.items() if n)
    assert f"Images scored: {scored}." in (again / "report.md").read_text()
