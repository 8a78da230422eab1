"""Gradient-interference metrics: cosine of known gradients, stages of yolov5n, the monitor on a joint model."""
from __future__ import annotations

import math

import pytest
import torch

from models.yolo_cls import JointModel, shared_parameters
from utils.training.interference import InterferenceMonitor, gradient_agreement, layer_stages, summarize_interference


def test_gradient_agreement_of_known_vectors():
    same = gradient_agreement(torch.tensor([1.0, 2.0]), torch.tensor([2.0, 4.0]))
    assert same["cosine"] == pytest.approx(1.0) and same["norm_ratio"] == pytest.approx(2.0)
    assert same["magnitude_similarity"] == pytest.approx(2 * math.sqrt(5) * math.sqrt(20) / 25)  # 0.8
    opposite = gradient_agreement(torch.tensor([1.0, 0.0]), torch.tensor([-3.0, 0.0]))
    assert opposite["cosine"] == pytest.approx(-1.0) and opposite["norm_ratio"] == pytest.approx(3.0)
    orthogonal = gradient_agreement(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 5.0]))
    assert orthogonal["cosine"] == pytest.approx(0.0)
    angle = gradient_agreement(torch.tensor([1.0, 0.0]), torch.tensor([-1.0, 1.0]))
    assert angle["cosine"] == pytest.approx(-1 / math.sqrt(2))
    zero = gradient_agreement(torch.zeros(3), torch.ones(3))
    assert zero["cosine"] == 0.0 and zero["norm_ratio"] == math.inf


def test_summary_counts_conflicts_per_stage():
    def rec(c_all, c_p3):
        return {"step": 0, "overall": {"cosine": c_all, "norm_ratio": 2.0},
                "stages": {"P3": {"cosine": c_p3, "norm_ratio": 4.0}}}
    summary = summarize_interference([rec(0.5, -0.2), rec(-0.1, -0.4), rec(0.3, 0.1), rec(0.1, -0.1)])
    assert summary["overall"]["conflict_fraction"] == pytest.approx(0.25)
    assert summary["P3"]["conflict_fraction"] == pytest.approx(0.75)
    assert summary["overall"]["mean_cosine"] == pytest.approx(0.2)
    assert summary["P3"]["median_norm_ratio"] == 4.0 and summary["P3"]["n"] == 4


def test_yolov5n_stages():
    stages = layer_stages(JointModel("yolov5n.yaml", nc=4, n_views=3))
    assert [stages[i] for i in range(10)] == ["P1", "P2", "P2", "P3", "P3", "P4", "P4", "P5", "P5", "P5"]
    assert all(stages[i] == "neck" for i in range(10, 24))


def test_monitor_measures_the_true_task_gradients():
    torch.manual_seed(0)
    model = JointModel("yolov5n.yaml", nc=4, n_views=3)
    x = torch.rand(2, 3, 64, 64)
    out = model(x)
    losses = {"det": sum(t.mean() for t in out.det), "view": out.view_logits[:, 0].sum()}
    monitor = InterferenceMonitor(model, ("det", "view"), every=5)
    assert monitor.due(10) and not monitor.due(11)
    assert {id(p) for p in monitor.params} == {id(p) for p in shared_parameters(model)}
    record = monitor.measure(losses, iteration=10, epoch=0)
    shared = shared_parameters(model)
    g_det = torch.cat([g.reshape(-1) for g in torch.autograd.grad(losses["det"], shared, retain_graph=True)])
    g_view = torch.cat([g.reshape(-1) for g in torch.autograd.grad(losses["view"], shared, retain_graph=True)])
    expected = torch.nn.functional.cosine_similarity(g_det, g_view, dim=0).item()
    assert record["overall"]["cosine"] == pytest.approx(expected, abs=1e-5)
    assert set(record["stages"]) == {"P1", "P2", "P3", "P4", "P5", "neck"}
    (losses["det"] + losses["view"]).backward()  # the graph is still there for the real backward
