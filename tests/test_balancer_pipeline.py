"""train.py --balancer uncertainty|pcgrad and --interference-every, end to end on a few real med images."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import train
from tests.test_joint_pipeline import _joint_yaml


@pytest.mark.parametrize("balancer", ["uncertainty", "pcgrad"])
def test_balancer_trains_and_logs_interference(balancer: str, tmp_path: Path, med_root: Path):
    data = _joint_yaml(tmp_path, med_root, n=4)
    result = train.main(train.parse_opt([
        "--data", str(data), "--cfg", "models/yolov5n.yaml", "--img", "64", "--epochs", "1", "--batch-size", "2",
        "--workers", "0", "--project", str(tmp_path / "runs"), "--balancer", balancer, "--interference-every", "1"]))
    save_dir = Path(result["save_dir"])
    history = json.loads((save_dir / "training_history.json").read_text())
    assert history["run"]["balancer"] == {"uncertainty": "UncertaintyWeighting", "pcgrad": "PCGrad"}[balancer]
    assert len(history["interference"]) == 2  # 4 images / batch 2, every iteration
    record = history["interference"][0]
    assert -1.0 <= record["overall"]["cosine"] <= 1.0 and set(record["stages"]) >= {"P3", "P4", "P5", "neck"}
    assert history["steps"], "per-step balancer statistics are logged"
    assert (save_dir / "interference.png").is_file() and (save_dir / "gradnorm_weights.png").is_file()
    assert result["skipped_steps"] == 0


def test_train_gradnorm_refuses_another_balancer():
    import train_gradnorm

    with pytest.raises(SystemExit):
        train_gradnorm.parse_opt(["--balancer", "pcgrad"])
