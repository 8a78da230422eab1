"""Uncertainty weighting (Kendall et al. 2018) and PCGrad (Yu et al. 2020): their core formulas by hand."""
from __future__ import annotations

import math
import random

import pytest
import torch

from utils.training.balancers import PCGrad, UncertaintyWeighting, pcgrad_combine

TASKS = ("det", "view")


def test_uncertainty_loss_and_log_variance_gradient_by_hand():
    balancer = UncertaintyWeighting(TASKS, lr=0.1, initial_log_var=0.0)
    balancer.log_vars.data = torch.tensor([0.0, math.log(4.0)])
    losses = {"det": torch.tensor(3.0), "view": torch.tensor(8.0)}
    total = balancer.combine(losses)
    # ½·e^0·3 + ½·0 + ½·e^(-ln 4)·8 + ½·ln 4 = 1.5 + 1 + ln 2
    assert total.item() == pytest.approx(1.5 + 1.0 + math.log(2.0))
    total.backward()
    # d/ds (½ e^{-s} L + ½ s) = ½ (1 - e^{-s} L): det ½(1-3) = -1; view ½(1 - 8/4) = -0.5
    assert balancer.log_vars.grad.tolist() == pytest.approx([-1.0, -0.5])


def test_uncertainty_log_variance_moves_to_log_of_the_loss():
    """The minimum of ½e^{-s}L + ½s is at s = ln L: with constant losses s converges there."""
    balancer = UncertaintyWeighting(TASKS, lr=0.05)
    losses = {"det": torch.tensor(3.0), "view": torch.tensor(20.0)}
    for _ in range(1500):
        balancer.combine(losses).backward()
        balancer.step()
    assert balancer.log_vars.detach().tolist() == pytest.approx([math.log(3.0), math.log(20.0)], abs=0.02)
    assert balancer.weights.tolist() == pytest.approx([0.5 / 3.0, 0.5 / 20.0], rel=0.03)


def test_uncertainty_state_round_trips():
    a = UncertaintyWeighting(TASKS, lr=0.1)
    a.combine({"det": torch.tensor(2.0), "view": torch.tensor(5.0)}).backward()
    a.step()
    b = UncertaintyWeighting(TASKS, lr=0.1)
    b.load_state_dict(a.state_dict())
    assert torch.equal(a.log_vars.detach(), b.log_vars.detach()) and torch.equal(a.weights, b.weights)


def test_pcgrad_projects_conflicting_gradients_by_hand():
    g1, g2 = torch.tensor([1.0, 0.0]), torch.tensor([-1.0, 1.0])  # g1·g2 = -1 < 0: conflict
    combined, projections = pcgrad_combine([g1, g2], random.Random(0))
    # g1' = g1 - (-1/2) g2 = (0.5, 0.5); g2' = g2 - (-1/1) g1 = (0, 1); sum (0.5, 1.5)
    assert combined.tolist() == pytest.approx([0.5, 1.5])
    assert projections == 2
    assert torch.dot(combined, g1) >= 0 and torch.dot(combined, g2) >= 0  # no task is pushed uphill


def test_pcgrad_leaves_agreeing_gradients_alone():
    g1, g2 = torch.tensor([1.0, 2.0]), torch.tensor([3.0, 0.5])
    combined, projections = pcgrad_combine([g1, g2])
    assert combined.tolist() == pytest.approx([4.0, 2.5]) and projections == 0


def test_pcgrad_backward_edits_only_shared_parameters():
    torch.manual_seed(0)
    shared = torch.nn.Parameter(torch.tensor([1.0, 0.0]))
    head_a, head_b = torch.nn.Parameter(torch.tensor(2.0)), torch.nn.Parameter(torch.tensor(3.0))
    losses = {"det": (shared * torch.tensor([1.0, 0.0])).sum() * head_a,   # d/dshared = (2, 0)
              "view": (shared * torch.tensor([-1.0, 1.0])).sum() * head_b}  # d/dshared = (-3, 3)
    balancer = PCGrad(TASKS, [shared], [shared, head_a, head_b])
    balancer.backward(balancer.combine(losses), losses)
    expected, _ = pcgrad_combine([torch.tensor([2.0, 0.0]), torch.tensor([-3.0, 3.0])])
    assert shared.grad.tolist() == pytest.approx(expected.tolist())
    assert head_a.grad.item() == pytest.approx(1.0) and head_b.grad.item() == pytest.approx(-1.0)  # untouched
    balancer.step()
    assert balancer.last_stats["conflict_fraction"] == 1.0


def test_pcgrad_refuses_a_model_without_shared_parameters():
    p = torch.nn.Parameter(torch.zeros(1))
    with pytest.raises(ValueError, match="shares none"):
        PCGrad(TASKS, [], [p])
