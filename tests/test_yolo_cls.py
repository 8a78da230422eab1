"""Tests for models/yolo_cls.py: JointModel outputs and gradients, view_loss, build_model, shared layers."""
from __future__ import annotations

import math

import pytest
import torch
import yaml
from torch import nn

from models.common import C3
from models.yolo import Detect, DetectionModel, ModelOutputs
from models.yolo_cls import (
    DEFAULT_VIEW_LEVELS,
    JointModel,
    ViewHead,
    build_model,
    last_shared_layer,
    last_shared_weight,
    shared_parameters,
    view_loss,
)
from utils.paths import ROOT
from utils.training.loss import ComputeLoss

N_VIEWS = 3
YOLOV5N_LEVEL_CHANNELS = [64, 128, 256]  # P3, P4, P5 neck outputs of yolov5n


@pytest.fixture(scope="module")
def joint() -> JointModel:
    torch.manual_seed(0)
    return JointModel("yolov5n.yaml", nc=4, n_views=N_VIEWS)


@pytest.fixture(scope="module")
def hyp() -> dict:
    with open(ROOT / "data" / "hyps" / "hyp.scratch-low.yaml", encoding="utf-8") as f:
        return yaml.safe_load(f)


def view_head_params(model: JointModel) -> list[nn.Parameter]:
    return list(model.view_head.parameters())


# ----------------------------------------------------------------------------- ViewHead


def test_view_head_shapes_and_size():
    head = ViewHead([8, 16], n_views=3, hidden=32, dropout=0.0)
    logits = head([torch.randn(2, 8, 5, 7), torch.randn(2, 16, 3, 4)])
    assert logits.shape == (2, 3)
    assert head.hidden.in_features == 24
    assert sum(p.numel() for p in head.parameters()) == (24 * 32 + 32) + (32 * 3 + 3)


def test_view_head_pools_globally():
    """Two maps with the same per-channel mean must give the same logits (only the average matters)."""
    head = ViewHead([2], n_views=2, hidden=4, dropout=0.0).eval()
    flat = torch.ones(1, 2, 4, 4)
    uneven = torch.zeros(1, 2, 4, 4)
    uneven[..., :2, :] = 2.0  # mean 1 per channel as well
    assert torch.allclose(head([flat]), head([uneven]))


def test_view_head_rejects_wrong_map_count_and_bad_args():
    head = ViewHead([8, 16], n_views=3)
    with pytest.raises(ValueError, match="2 feature maps"):
        head([torch.randn(1, 8, 2, 2)])
    with pytest.raises(ValueError):
        ViewHead([], n_views=3)
    with pytest.raises(ValueError):
        ViewHead([8], n_views=3, dropout=1.0)


# ----------------------------------------------------------------------------- JointModel outputs


@pytest.mark.parametrize(
    "levels, size",
    [((2,), (64, 64)), ((0, 1, 2), (64, 64)), ((0, 1, 2), (64, 128)), ((2,), (96, 64))],
)
def test_joint_outputs(levels, size):
    model = JointModel("yolov5n.yaml", nc=4, n_views=N_VIEWS, view_levels=levels)
    assert model.view_levels == tuple(levels)
    assert model.view_head.hidden.in_features == sum(YOLOV5N_LEVEL_CHANNELS[i] for i in levels)
    height, width = size
    out = model(torch.zeros(2, 3, height, width))
    assert isinstance(out, ModelOutputs) and not isinstance(out, tuple)
    assert out.view_logits.shape == (2, N_VIEWS)
    assert len(out.det) == 3
    for level, stride in enumerate((8, 16, 32)):
        assert out.det[level].shape == (2, 3, height // stride, width // stride, 4 + 5)


def test_default_levels_and_properties(joint):
    assert DEFAULT_VIEW_LEVELS == (0, 1, 2)
    assert joint.view_levels == DEFAULT_VIEW_LEVELS
    assert joint.n_views == N_VIEWS
    assert joint.yaml["view_head"] == {"n_views": N_VIEWS, "levels": [0, 1, 2], "hidden": 256, "dropout": 0.2}
    assert isinstance(joint, DetectionModel)


def test_joint_rejects_bad_config():
    with pytest.raises(ValueError, match="n_views"):
        JointModel("yolov5n.yaml")
    with pytest.raises(ValueError, match="view levels"):
        JointModel("yolov5n.yaml", n_views=3, view_levels=(3,))
    with pytest.raises(ValueError, match="view levels"):
        JointModel("yolov5n.yaml", n_views=3, view_levels=(1, 1))


def test_yaml_view_head_used_and_explicit_args_override(joint):
    from_yaml = JointModel(joint.yaml)
    assert (from_yaml.n_views, from_yaml.view_levels) == (N_VIEWS, (0, 1, 2))
    overridden = JointModel(joint.yaml, n_views=5, view_levels=(1,), view_hidden=16, view_dropout=0.0)
    assert overridden.yaml["view_head"] == {"n_views": 5, "levels": [1], "hidden": 16, "dropout": 0.0}
    assert overridden.view_head.classifier.out_features == 5
    assert overridden.view_head.hidden.out_features == 16
    assert joint.yaml["view_head"]["n_views"] == N_VIEWS  # the source dict was not modified


# ----------------------------------------------------------------------------- gradients


def test_view_loss_reaches_backbone_and_head(joint):
    joint.train()
    joint.zero_grad()
    out = joint(torch.randn(2, 3, 64, 64))
    view_loss(out.view_logits, torch.tensor([0, 2])).backward()
    first_conv_grad = joint.model[0].conv.weight.grad
    assert first_conv_grad is not None and first_conv_grad.abs().sum() > 0
    for param in view_head_params(joint):
        assert param.grad is not None and param.grad.abs().sum() > 0
    for param in joint.detect.parameters():  # and nothing flows into Detect
        assert param.grad is None or param.grad.abs().sum() == 0


def test_detection_loss_does_not_reach_view_head(joint, hyp):
    joint.train()
    joint.zero_grad()
    out = joint(torch.randn(2, 3, 64, 64))
    targets = torch.tensor([[0, 1, 0.5, 0.5, 0.3, 0.4], [1, 3, 0.3, 0.6, 0.2, 0.2]])
    total, _ = ComputeLoss(joint, hyp)(out.det, targets)
    total.backward()
    assert joint.model[0].conv.weight.grad.abs().sum() > 0
    for param in view_head_params(joint):
        assert param.grad is None or param.grad.abs().sum() == 0


# ----------------------------------------------------------------------------- view_loss


def _hand_ce(logits: list[float], target: int) -> float:
    return math.log(sum(math.exp(z) for z in logits)) - logits[target]


def test_view_loss_hand_computed():
    rows = [[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]]
    # sample 0: log(e^2 + 1 + e^-1) - 2 = 0.16985; sample 1: log(2 + e) - 1 = 0.55144
    expected = (_hand_ce(rows[0], 0) + _hand_ce(rows[1], 1)) / 2
    assert expected == pytest.approx((0.169846 + 0.551444) / 2, abs=1e-5)
    loss = view_loss(torch.tensor(rows), torch.tensor([0, 1]))
    assert loss.item() == pytest.approx(expected, abs=1e-6)


def test_view_loss_ignores_unlabelled_samples():
    rows = [[2.0, 0.0, -1.0], [5.0, -3.0, 1.0]]
    mixed = view_loss(torch.tensor(rows), torch.tensor([0, -1]))
    alone = view_loss(torch.tensor(rows[:1]), torch.tensor([0]))
    assert mixed.item() == pytest.approx(alone.item(), abs=1e-7)
    assert mixed.item() == pytest.approx(_hand_ce(rows[0], 0), abs=1e-6)
    smoothed_mixed = view_loss(torch.tensor(rows), torch.tensor([0, -1]), label_smoothing=0.1)
    smoothed_alone = view_loss(torch.tensor(rows[:1]), torch.tensor([0]), label_smoothing=0.1)
    assert smoothed_mixed.item() == pytest.approx(smoothed_alone.item(), abs=1e-7)


def test_view_loss_all_unlabelled_is_exact_zero_with_graph():
    logits = torch.randn(3, N_VIEWS, requires_grad=True)
    loss = view_loss(logits, torch.full((3,), -1, dtype=torch.long))
    assert loss.item() == 0.0 and math.isfinite(loss.item())
    assert loss.requires_grad
    loss.backward()
    assert logits.grad is not None and torch.equal(logits.grad, torch.zeros_like(logits))


def test_view_loss_label_smoothing_by_hand():
    row, target, eps = [2.0, 0.0, -1.0], 0, 0.1
    log_z = math.log(sum(math.exp(z) for z in row))
    neg_log_p = [log_z - z for z in row]
    # target distribution: (1 - eps) on the true class + eps / K on every class
    expected = (1 - eps) * neg_log_p[target] + eps / len(row) * sum(neg_log_p)
    loss = view_loss(torch.tensor([row]), torch.tensor([target]), label_smoothing=eps)
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    assert loss.item() > view_loss(torch.tensor([row]), torch.tensor([target])).item()  # confident + right -> up


def test_view_loss_rejects_bad_inputs():
    logits = torch.zeros(2, 3)
    with pytest.raises(ValueError, match=r"\[B, K\]"):
        view_loss(torch.zeros(2), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="views shaped"):
        view_loss(logits, torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="views shaped"):
        view_loss(logits, torch.tensor([[0], [1]]))
    with pytest.raises(ValueError, match="integer"):
        view_loss(logits, torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="view index 3"):
        view_loss(logits, torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="view index -2"):
        view_loss(logits, torch.tensor([0, -2]))


# ----------------------------------------------------------------------------- build_model


def test_build_model_picks_the_class(joint):
    plain = build_model("yolov5n.yaml", nc=4)
    assert type(plain) is DetectionModel
    assert isinstance(plain(torch.zeros(1, 3, 64, 64)).view_logits, type(None))
    explicit = build_model("yolov5n.yaml", nc=4, n_views=3)
    assert isinstance(explicit, JointModel) and explicit.n_views == 3
    assert explicit.yaml_file == "yolov5n"  # a path keeps its display name
    from_yaml = build_model(joint.yaml)  # n_views=None, the yaml's view_head decides
    assert isinstance(from_yaml, JointModel)


def test_build_model_round_trips_yaml(joint):
    rebuilt = build_model(joint.yaml)
    ours = {k: v.shape for k, v in joint.state_dict().items()}
    theirs = {k: v.shape for k, v in rebuilt.state_dict().items()}
    assert ours == theirs
    rebuilt.load_state_dict(joint.state_dict())  # strict load works
    joint.eval(), rebuilt.eval()
    x = torch.randn(1, 3, 64, 64)
    assert torch.allclose(joint(x).view_logits, rebuilt(x).view_logits)


def test_detection_state_dict_loads_into_joint_model():
    detector = DetectionModel("yolov5n.yaml", nc=4)
    joint_model = JointModel("yolov5n.yaml", nc=4, n_views=N_VIEWS)
    result = joint_model.load_state_dict(detector.state_dict(), strict=False)
    assert result.unexpected_keys == []
    assert result.missing_keys and all(key.startswith("view_head.") for key in result.missing_keys)
    assert set(result.missing_keys) == {k for k in joint_model.state_dict() if k.startswith("view_head.")}
    assert torch.equal(joint_model.model[0].conv.weight, detector.model[0].conv.weight)
    # and back: the detector part of a joint model loads into a DetectionModel
    back = DetectionModel("yolov5n.yaml", nc=4).load_state_dict(joint_model.state_dict(), strict=False)
    assert back.missing_keys == [] and all(k.startswith("view_head.") for k in back.unexpected_keys)


# ----------------------------------------------------------------------------- fuse / info


def test_fuse_keeps_outputs():
    model = JointModel("yolov5n.yaml", nc=4, n_views=N_VIEWS).eval()
    for module in model.modules():  # non-trivial BN statistics so that fusing actually changes weights
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        before = model(x)
        assert model.fuse() is model
        after = model(x)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert torch.allclose(before.view_logits, after.view_logits, atol=1e-4)
    for a, b in zip(before.det, after.det):
        assert torch.allclose(a, b, atol=1e-3)


def test_info_counts_view_head(joint):
    summary = joint.info(64)
    head_params = sum(p.numel() for p in joint.view_head.parameters())
    detector_params = sum(p.numel() for p in DetectionModel("yolov5n.yaml", nc=4).parameters())
    assert summary["parameters"] == detector_params + head_params
    assert summary["gflops"] > 0


# ----------------------------------------------------------------------------- shared layers


def test_shared_parameters_default_levels(joint):
    shared = {id(p) for p in shared_parameters(joint)}
    assert not shared & {id(p) for p in joint.detect.parameters()}
    assert not shared & {id(p) for p in joint.view_head.parameters()}
    expected = {id(p) for layer in joint.model if not isinstance(layer, Detect) for p in layer.parameters()}
    assert shared == expected  # with all three levels every non-Detect layer feeds both heads


def test_shared_parameters_level_zero_skips_deeper_neck():
    model = JointModel("yolov5n.yaml", nc=4, n_views=N_VIEWS, view_levels=(0,))
    shared = {id(p) for p in shared_parameters(model)}
    assert {id(p) for p in model.model[17].parameters()} <= shared
    assert {id(p) for p in model.model[9].parameters()} <= shared  # SPPF feeds P3 through the top-down path
    for index in (18, 20, 23):  # the P4/P5 outputs only serve detection
        assert not shared & {id(p) for p in model.model[index].parameters()}


def test_last_shared_weight_default_levels(joint):
    layer = last_shared_layer(joint)
    assert isinstance(layer, nn.Conv2d)
    assert isinstance(joint.model[23], C3)
    assert layer is joint.model[23].cv3.conv  # the conv whose output is P5, not one inside the bottlenecks
    assert last_shared_weight(joint) is joint.model[23].cv3.conv.weight
    assert last_shared_weight(joint).shape[0] == YOLOV5N_LEVEL_CHANNELS[2]


def test_last_shared_weight_level_zero():
    model = JointModel("yolov5n.yaml", nc=4, n_views=N_VIEWS, view_levels=(0,))
    weight = last_shared_weight(model)
    assert weight is model.model[17].cv3.conv.weight
    assert any(weight is p for p in model.model[17].parameters())


def test_shared_helpers_reject_detection_model():
    with pytest.raises(TypeError, match="JointModel"):
        shared_parameters(DetectionModel("yolov5n.yaml"))
