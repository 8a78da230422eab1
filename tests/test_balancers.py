"""Balancer interface (fixed weights) and training_history.json."""
from __future__ import annotations

import json

import pytest
import torch

from utils.training.balancers import FixedWeights, fixed_weights_from_hyp
from utils.training.history import TrainingHistory


def test_fixed_weights_combine_is_weighted_sum():
    balancer = fixed_weights_from_hyp({"det_task": 1.0, "view_task": 0.3}, ("det", "view"))
    losses = {"det": torch.tensor(2.0, requires_grad=True), "view": torch.tensor(5.0, requires_grad=True)}
    total = balancer.combine(losses)
    assert total.item() == pytest.approx(2.0 + 0.3 * 5.0)
    total.backward()
    assert losses["view"].grad.item() == pytest.approx(0.3)
    assert balancer.weight_dict() == pytest.approx({"det": 1.0, "view": 0.3})


def test_missing_task_loss_is_an_error_and_state_round_trips():
    balancer = FixedWeights(("det", "view"), {"view": 2.0})
    with pytest.raises(KeyError, match="view"):
        balancer.combine({"det": torch.tensor(1.0)})
    other = FixedWeights(("det", "view"))
    other.load_state_dict(balancer.state_dict())
    assert other.weights.tolist() == [1.0, 2.0]
    with pytest.raises(ValueError, match="tasks"):
        FixedWeights(("det",)).load_state_dict(balancer.state_dict())


def test_history_rewrites_file_and_resumes(tmp_path):
    path = tmp_path / "training_history.json"
    history = TrainingHistory(path, {"script": "train.py"})
    history.log_epoch({"epoch": 0, "train_loss": {"box_loss": 0.1}})
    history.log_epoch({"epoch": 1, "train_loss": {"box_loss": 0.05}})
    assert [r["epoch"] for r in json.loads(path.read_text())["epochs"]] == [0, 1]
    resumed = TrainingHistory(path, {"resumed": True})
    resumed.log_epoch({"epoch": 1, "train_loss": {"box_loss": 0.04}})  # epoch 1 re-run after a crash replaces the old one
    data = json.loads(path.read_text())
    assert [r["epoch"] for r in data["epochs"]] == [0, 1]
    assert data["epochs"][1]["train_loss"]["box_loss"] == 0.04
    assert data["run"] == {"script": "train.py", "resumed": True}
