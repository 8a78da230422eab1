"""Tests for utils/torch_utils.py: devices, seeds, optimizer groups, EMA, fusion, schedules."""
from __future__ import annotations

import io
import math
import random

import numpy as np
import pytest
import torch
from torch import nn

from utils.torch_utils import (
    PARAM_GROUP_NAMES,
    ModelEMA,
    copy_attr,
    count_parameters,
    de_parallel,
    fuse_conv_and_bn,
    init_seeds,
    linear_lr,
    one_cycle,
    select_device,
    smart_optimizer,
    time_sync,
)


class Small(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.head = nn.Linear(4, 2)
        self.scale = nn.Parameter(torch.ones(1))  # neither bias nor norm weight: an "other weight"


# ----------------------------------------------------------------------------- devices and seeds


def test_select_device_cpu():
    assert select_device("cpu") == torch.device("cpu")
    assert select_device(" CPU ") == torch.device("cpu")


def test_select_device_default_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert select_device("") == torch.device("cpu")


@pytest.mark.parametrize("flag", ["0", "0,1", "cuda:0"])
def test_select_device_cuda_unavailable_names_the_value(monkeypatch, flag):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    with pytest.raises(ValueError, match=f"'{flag}'"):
        select_device(flag)


def test_select_device_rejects_out_of_range_and_garbage():
    with pytest.raises(ValueError, match="'99'"):
        select_device("99")
    with pytest.raises(ValueError, match="'gpu-please'"):
        select_device("gpu-please")


@pytest.mark.parametrize("script, args", [("train", []), ("val", ["--weights", "never-read.pt"]),
                                          ("detect", ["--weights", "never-read.pt", "--source", "never-read.png"])])
def test_bad_device_flag_ends_the_script_with_one_line(script, args, tmp_path):
    """A flag's bad value is a user error: one 'ERROR: ...' line naming flag and value, no traceback."""
    module = __import__(script)
    project = tmp_path / "runs"
    with pytest.raises(SystemExit) as exit_info:
        module.main(module.parse_opt([*args, "--device", "gpu-please", "--project", str(project)]))
    assert not project.exists()  # nothing written: no empty run folder left behind
    assert str(exit_info.value) == "ERROR: Invalid --device 'gpu-please': expected '', 'cpu' or CUDA indices like '0' or '0,1'"


def test_init_seeds_repeats_random_streams():
    def draw() -> tuple:
        return random.random(), float(np.random.rand()), float(torch.rand(1))

    init_seeds(3)
    first = draw()
    init_seeds(3)
    assert draw() == first
    init_seeds(4)
    assert draw() != first


def test_init_seeds_deterministic_toggle():
    try:
        init_seeds(0, deterministic=True)
        assert torch.are_deterministic_algorithms_enabled()
    finally:
        init_seeds(0, deterministic=False)
    assert not torch.are_deterministic_algorithms_enabled()


# ----------------------------------------------------------------------------- optimizer


def test_smart_optimizer_groups():
    model = Small()
    optimizer = smart_optimizer(model, "SGD", lr=0.01, momentum=0.937, decay=5e-4)
    assert PARAM_GROUP_NAMES == ("bias", "norm_weight", "weight")
    groups = [{id(p) for p in g["params"]} for g in optimizer.param_groups]
    assert groups[0] == {id(model.bn.bias), id(model.head.bias)}
    assert groups[1] == {id(model.bn.weight)}
    assert groups[2] == {id(model.conv.weight), id(model.head.weight), id(model.scale)}
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.0, 0.0, 5e-4]
    assert all(g["nesterov"] and g["momentum"] == 0.937 and g["lr"] == 0.01 for g in optimizer.param_groups)


def test_smart_optimizer_every_parameter_exactly_once():
    from models.yolo import DetectionModel

    model = DetectionModel("yolov5n.yaml", nc=4)
    optimizer = smart_optimizer(model, "SGD", lr=0.01, momentum=0.9, decay=5e-4)
    ids = [id(p) for g in optimizer.param_groups for p in g["params"]]
    assert len(ids) == len(set(ids))
    assert set(ids) == {id(p) for p in model.parameters() if p.requires_grad}
    # v6 layout: 57 Conv blocks (each a conv weight + BN weight/bias) plus 3 Detect convs with bias
    assert [len(g["params"]) for g in optimizer.param_groups] == [60, 57, 60]


@pytest.mark.parametrize("name, cls", [("Adam", torch.optim.Adam), ("AdamW", torch.optim.AdamW), ("adamw", torch.optim.AdamW)])
def test_smart_optimizer_adam_betas(name, cls):
    optimizer = smart_optimizer(Small(), name, lr=0.001, momentum=0.85, decay=1e-4)
    assert type(optimizer) is cls
    assert all(g["betas"] == (0.85, 0.999) for g in optimizer.param_groups)
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.0, 0.0, 1e-4]


def test_smart_optimizer_unknown_name():
    with pytest.raises(ValueError, match="Lion"):
        smart_optimizer(Small(), "Lion")


# ----------------------------------------------------------------------------- EMA


def test_ema_follows_model_with_ramped_decay():
    model = Small()
    ema = ModelEMA(model, decay=0.9999, tau=2000)
    assert not ema.ema.training and not any(p.requires_grad for p in ema.ema.parameters())
    start = ema.ema.head.weight.clone()
    with torch.no_grad():
        model.head.weight.add_(1.0)
    model.bn.num_batches_tracked += 5
    ema.update(model)
    d = 0.9999 * (1 - math.exp(-1 / 2000))
    expected = d * start + (1 - d) * model.head.weight
    assert torch.allclose(ema.ema.head.weight, expected)
    assert ema.updates == 1
    assert ema.ema.bn.num_batches_tracked.item() == 0  # integer buffers are not averaged
    gap_before = (model.head.weight - ema.ema.head.weight).abs().mean()
    for _ in range(50):
        ema.update(model)
    assert (model.head.weight - ema.ema.head.weight).abs().mean() < gap_before


def test_ema_state_dict_round_trip():
    model = Small()
    ema = ModelEMA(model)
    with torch.no_grad():
        model.head.weight.mul_(3)
    for _ in range(7):
        ema.update(model)
    buffer = io.BytesIO()
    torch.save(ema.state_dict(), buffer)
    buffer.seek(0)
    restored = ModelEMA(Small())
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    assert restored.updates == 7
    for key, value in ema.ema.state_dict().items():
        assert torch.equal(restored.ema.state_dict()[key], value)


def test_ema_update_attr_and_de_parallel():
    model = Small()
    model.names = {0: "a"}
    model._private = 1
    wrapped = nn.DataParallel(model)
    assert de_parallel(wrapped) is model and de_parallel(model) is model
    ema = ModelEMA(wrapped)
    model.names = {0: "b"}
    ema.update_attr(wrapped)
    assert ema.ema.names == {0: "b"}


def test_copy_attr_include_exclude():
    class Holder:
        pass

    src, dst = Holder(), Holder()
    src.a, src.b, src._c = 1, 2, 3
    copy_attr(dst, src, exclude=("b",))
    assert dst.a == 1 and not hasattr(dst, "b") and not hasattr(dst, "_c")
    dst2 = Holder()
    copy_attr(dst2, src, include=("b",))
    assert dst2.b == 2 and not hasattr(dst2, "a")


# ----------------------------------------------------------------------------- small helpers


def test_fuse_conv_and_bn_matches_sequence():
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2, bias=True)
    bn = nn.BatchNorm2d(6, eps=1e-3)
    with torch.no_grad():
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-1, 1)
    bn.eval()
    fused = fuse_conv_and_bn(conv, bn)
    x = torch.randn(2, 4, 9, 9)
    assert fused.stride == (2, 2) and fused.groups == 2 and fused.bias is not None
    assert torch.allclose(fused(x), bn(conv(x)), atol=1e-5)


def test_count_parameters():
    assert count_parameters(nn.Linear(3, 2)) == 3 * 2 + 2


def test_schedules():
    cosine = one_cycle(1.0, 0.01, 100)
    assert cosine(0) == pytest.approx(1.0)
    assert cosine(50) == pytest.approx(0.505)
    assert cosine(100) == pytest.approx(0.01)
    linear = linear_lr(0.01, 100)
    assert linear(0) == pytest.approx(1.0)
    assert linear(25) == pytest.approx(0.7525)  # (1 - 0.25) * 0.99 + 0.01
    assert linear(100) == pytest.approx(0.01)


def test_time_sync_advances():
    t0 = time_sync()
    assert time_sync() >= t0
