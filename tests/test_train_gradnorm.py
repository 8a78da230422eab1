"""train_gradnorm.py end to end: same engine and flags as train.py, GradNorm state and logs."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

import train_gradnorm
from tests.helpers import med_subset_yaml
from utils.training.task import VIEW_RESULTS_KEYS

ARGS = ["--cfg", "models/yolov5n.yaml", "--img", "96", "--batch-size", "2", "--workers", "0", "--noautoanchor",
        "--hyp", "hyp.medical.yaml", "--gradnorm-alpha", "1.0", "--gradnorm-lr", "0.05"]


def test_gradnorm_run_logs_weights_and_resumes(tmp_path: Path, med_root: Path):
    data = med_subset_yaml(tmp_path, med_root, with_views=True)
    result = train_gradnorm.main(train_gradnorm.parse_opt(
        ["--data", str(data), "--epochs", "2", "--project", str(tmp_path / "runs"), *ARGS]))
    save_dir = Path(result["save_dir"])
    history = json.loads((save_dir / "training_history.json").read_text())
    assert history["run"]["balancer"] == "GradNorm"
    steps = history["steps"]
    assert len(steps) >= 2, "with batch 2 and nominal batch 64, warmup accumulates; several optimizer steps still happen"
    for record in steps:
        assert set(record) >= {"weights", "loss", "grad_norm", "inverse_rate"}
        assert sum(record["weights"].values()) == pytest.approx(2.0, abs=1e-5)
    header = [c.strip() for c in (save_dir / "results.csv").read_text().splitlines()[0].split(",")]
    assert header[-len(VIEW_RESULTS_KEYS):] == list(VIEW_RESULTS_KEYS)
    assert (save_dir / "gradnorm_weights.png").is_file()
    opt_yaml = yaml.safe_load((save_dir / "opt.yaml").read_text())
    assert opt_yaml["gradnorm_alpha"] == 1.0 and opt_yaml["gradnorm_lr"] == 0.05
    last = torch.load(save_dir / "weights" / "last.pt", weights_only=True)
    assert last["balancer"]["task_names"] == ["det", "view"]


def test_refuses_dataset_without_views(tmp_path: Path, med_root: Path):
    data = med_subset_yaml(tmp_path, med_root, with_views=False)
    with pytest.raises(SystemExit, match="declares no cls_names"):
        train_gradnorm.main(train_gradnorm.parse_opt(
            ["--data", str(data), "--epochs", "1", "--project", str(tmp_path / "runs"), *ARGS]))


def test_bad_gradnorm_flag_is_one_sentence(tmp_path: Path, med_root: Path):
    data = med_subset_yaml(tmp_path, med_root, with_views=True)
    with pytest.raises(SystemExit, match="--gradnorm-min-weight"):
        train_gradnorm.main(train_gradnorm.parse_opt(
            ["--data", str(data), "--epochs", "1", "--project", str(tmp_path / "runs"), *ARGS,
             "--gradnorm-min-weight", "0"]))
