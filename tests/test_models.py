"""Tests for models/common.py and models/yolo.py: block sizes, YAML parsing, strides, decode, fusion."""
from __future__ import annotations

import dataclasses
import io
import math
from copy import deepcopy

import pytest
import torch
from torch import nn

from models.common import C3, SPPF, Bottleneck, Concat, Conv, autopad
from models.yolo import Detect, DetectionModel, ModelOutputs, parse_model

DEFAULT_ANCHORS = [[10, 13, 16, 30, 33, 23], [30, 61, 62, 45, 59, 119], [116, 90, 156, 198, 373, 326]]


@pytest.fixture(scope="module")
def yolov5n() -> DetectionModel:
    return DetectionModel("yolov5n.yaml")


@pytest.fixture(scope="module")
def yolov5n_nc4() -> DetectionModel:
    return DetectionModel("yolov5n.yaml", nc=4)


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def tiny_cfg(**overrides) -> dict:
    """A 3-level model small enough to build in milliseconds (yolov5n layout, tiny widths)."""
    cfg = {
        "nc": 2,
        "depth_multiple": 0.33,
        "width_multiple": 0.125,
        "anchors": deepcopy(DEFAULT_ANCHORS),
        "backbone": [
            [-1, 1, "Conv", [64, 6, 2, 2]],
            [-1, 1, "Conv", [128, 3, 2]],
            [-1, 1, "Conv", [256, 3, 2]],
            [-1, 1, "Conv", [512, 3, 2]],
            [-1, 1, "Conv", [1024, 3, 2]],
        ],
        "head": [[[2, 3, 4], 1, "Detect", ["nc", "anchors"]]],
    }
    cfg.update(overrides)
    return cfg


# ----------------------------------------------------------------------------- blocks


def test_autopad_same_padding():
    assert autopad(3) == 1
    assert autopad(1) == 0
    assert autopad(6, 2) == 2  # explicit padding wins
    assert autopad(3, None, 2) == 2  # dilated 3x3 acts like a 5x5
    assert autopad([3, 5]) == [1, 2]


def test_conv_parameters_and_shape():
    conv = Conv(3, 16, 6, 2, 2)
    assert n_params(conv) == 3 * 16 * 6 * 6 + 2 * 16  # conv weight (no bias) + BN weight/bias
    assert conv.conv.bias is None
    assert conv.bn.eps == 1e-3 and conv.bn.momentum == 0.03
    assert isinstance(conv.act, nn.SiLU)
    assert conv(torch.zeros(1, 3, 64, 48)).shape == (1, 16, 32, 24)
    assert isinstance(Conv(3, 4, act=False).act, nn.Identity)


def test_bottleneck_parameters_and_residual():
    block = Bottleneck(8, 8)  # hidden 4: 1x1 8->4, 3x3 4->8
    assert n_params(block) == (8 * 4 + 2 * 4) + (4 * 8 * 9 + 2 * 8)
    assert block.add and not Bottleneck(8, 16).add and not Bottleneck(8, 8, shortcut=False).add
    with torch.no_grad():  # make the residual branch output exactly SiLU(0) = 0
        block.cv2.bn.weight.zero_()
        block.cv2.bn.bias.zero_()
    x = torch.randn(2, 8, 5, 5)
    assert torch.equal(block.eval()(x), x)


def test_c3_parameters():
    block = C3(16, 16, n=2)  # hidden 8; bottlenecks 8->8 with e=1.0
    branches = 2 * (16 * 8 + 2 * 8)
    merge = 16 * 16 + 2 * 16
    bottleneck = (8 * 8 + 2 * 8) + (8 * 8 * 9 + 2 * 8)
    assert n_params(block) == branches + merge + 2 * bottleneck
    assert len(block.m) == 2
    assert block(torch.zeros(1, 16, 7, 7)).shape == (1, 16, 7, 7)


def test_sppf_parameters_and_pyramid():
    block = SPPF(16, 32, 5)
    assert n_params(block) == (16 * 8 + 2 * 8) + (32 * 32 + 2 * 32)
    x = torch.randn(1, 3, 20, 20)
    # Two chained 5x5 stride-1 pools equal one 9x9 pool (the SPPF shortcut for SPP(5, 9, 13)).
    assert torch.equal(block.m(block.m(x)), nn.MaxPool2d(9, 1, 4)(x))
    assert block(torch.zeros(1, 16, 9, 9)).shape == (1, 32, 9, 9)


def test_concat_channels():
    out = Concat()([torch.zeros(1, 2, 4, 4), torch.ones(1, 3, 4, 4)])
    assert out.shape == (1, 5, 4, 4) and out[:, 2:].eq(1).all()


# ----------------------------------------------------------------------------- parsing and sizes


def test_yolov5n_parameter_count_matches_yolov5(yolov5n):
    assert n_params(yolov5n) == 1_872_157  # YOLOv5's own summary figure


def test_yolov5s_parameter_count_matches_yolov5():
    assert n_params(DetectionModel("yolov5s.yaml")) == 7_235_389


@pytest.mark.parametrize("size, fused_params", [("m", 21_172_173), ("l", 46_533_693), ("x", 86_705_005)])
def test_larger_models_fused_parameter_counts(size, fused_params):
    """YOLOv5 publishes the fused (BN folded) counts for m/l/x in its val logs: compare against those."""
    model = DetectionModel(f"yolov5{size}.yaml").eval().fuse()
    assert n_params(model) == fused_params


def test_layer_attributes_and_save_list(yolov5n):
    assert yolov5n.save == [4, 6, 10, 14, 17, 20, 23]
    assert len(yolov5n.model) == 25
    for index, layer in enumerate(yolov5n.model):
        assert layer.i == index
        assert layer.np == n_params(layer)
    assert yolov5n.model[12].f == [-1, 6] and yolov5n.model[12].type == "Concat"
    assert yolov5n.model[24].f == [17, 20, 23] and yolov5n.model[24].type == "Detect"
    # depth 0.33: the 9-repeat C3 gets round(2.97) = 3 bottlenecks; width 0.25: 1024 -> 256 channels
    assert len(yolov5n.model[6].m) == 3
    assert yolov5n.model[9].cv2.conv.out_channels == 256
    assert isinstance(yolov5n.model[11], nn.Upsample) and yolov5n.model[11].mode == "nearest"


def test_parse_model_rejects_unknown_module():
    cfg = tiny_cfg()
    cfg["backbone"][1][2] = "os.system"
    with pytest.raises(ValueError, match="os.system"):
        parse_model(cfg, [3])


def test_parse_model_accepts_yolov5_style_none_string():
    """Original YOLOv5 YAMLs write `None`, which PyYAML reads as the string 'None'."""
    cfg = tiny_cfg()
    cfg["head"].insert(0, [-1, 1, "nn.Upsample", ["None", 2, "nearest"]])
    cfg["head"][-1][0] = [2, 3, 5]
    model, _ = parse_model(cfg, [3])
    assert model[5].size is None and model[5].scale_factor == 2.0


def test_strides_and_grid_unit_anchors(yolov5n):
    assert yolov5n.stride.tolist() == [8.0, 16.0, 32.0]
    pixels = yolov5n.detect.anchors * yolov5n.stride.view(-1, 1, 1)
    assert torch.allclose(pixels, torch.tensor(DEFAULT_ANCHORS, dtype=torch.float32).view(3, 3, 2))


def test_reversed_anchors_are_flipped_to_match_strides():
    model = DetectionModel(tiny_cfg(anchors=deepcopy(DEFAULT_ANCHORS[::-1])))
    pixels = model.detect.anchors * model.stride.view(-1, 1, 1)
    assert pixels[0].tolist() == [[10, 13], [16, 30], [33, 23]]


def test_anchor_count_only_builds_positive_placeholders():
    model = DetectionModel(tiny_cfg(anchors=3))
    assert model.detect.anchors.shape == (3, 3, 2)
    assert (model.detect.anchors > 0).all()


@pytest.mark.parametrize("height, width", [(320, 320), (256, 320)])
def test_output_shapes(yolov5n, height, width):
    out = yolov5n(torch.zeros(1, 3, height, width))
    assert [tuple(m.shape) for m in out.det] == [(1, 3, height // s, width // s, 85) for s in (8, 16, 32)]


def test_forward_features_are_p3_p4_p5(yolov5n):
    features = yolov5n.forward_features(torch.zeros(2, 3, 128, 96))
    assert [tuple(f.shape) for f in features] == [(2, 64, 16, 12), (2, 128, 8, 6), (2, 256, 4, 3)]


def test_nc_override_changes_detect_channels(yolov5n_nc4):
    detect = yolov5n_nc4.detect
    assert detect.nc == 4 and detect.no == 9
    assert [conv.out_channels for conv in detect.m] == [27, 27, 27]
    assert yolov5n_nc4.yaml["nc"] == 4
    assert yolov5n_nc4.names == {0: "class0", 1: "class1", 2: "class2", 3: "class3"}
    assert yolov5n_nc4(torch.zeros(1, 3, 64, 64)).det[0].shape[-1] == 9


def test_model_outputs_is_named_and_frozen(yolov5n):
    assert [f.name for f in dataclasses.fields(ModelOutputs)] == ["det", "view_logits"]
    out = yolov5n(torch.zeros(1, 3, 64, 64))
    assert isinstance(out, ModelOutputs) and out.view_logits is None and len(out.det) == 3
    with pytest.raises(dataclasses.FrozenInstanceError):
        out.det = []


def test_detect_bias_priors(yolov5n):
    detect = yolov5n.detect
    for conv, stride in zip(detect.m, (8, 16, 32)):
        bias = conv.bias.detach().view(3, 85)
        bound = 1 / math.sqrt(conv.in_channels)  # default Conv2d bias init range before the prior is added
        assert torch.all((bias[:, 4] - math.log(8 / (640 / stride) ** 2)).abs() <= bound)
        assert torch.all((bias[:, 5:] - math.log(0.6 / (80 - 0.99999))).abs() <= bound)


def test_norm_and_activation_defaults(yolov5n):
    norms = [m for m in yolov5n.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(norms) == 57
    assert all(m.eps == 1e-3 and m.momentum == 0.03 for m in norms)
    assert all(m.inplace for m in yolov5n.modules() if isinstance(m, nn.SiLU))


def test_bare_name_lookup_and_missing_file():
    assert n_params(DetectionModel("yolov5n")) == 1_872_157
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        DetectionModel("nope.yaml")


def test_rebuild_from_yaml_dict_and_safe_checkpoint(yolov5n_nc4):
    """A checkpoint of plain data (yaml dict + state dict) must load with weights_only=True and rebuild the model."""
    buffer = io.BytesIO()
    torch.save({"yaml": yolov5n_nc4.yaml, "model": yolov5n_nc4.state_dict()}, buffer)
    buffer.seek(0)
    checkpoint = torch.load(buffer, weights_only=True)
    rebuilt = DetectionModel(checkpoint["yaml"])
    rebuilt.load_state_dict(checkpoint["model"])
    x = torch.randn(1, 3, 64, 64)
    a, b = yolov5n_nc4.eval()(x).det, rebuilt.eval()(x).det
    assert all(torch.equal(p, q) for p, q in zip(a, b))


# ----------------------------------------------------------------------------- fusion, info, decode


def test_fuse_keeps_outputs():
    model = DetectionModel("yolov5n.yaml", nc=4)
    generator = torch.Generator().manual_seed(0)
    for m in model.modules():  # non-trivial BN statistics, so the fold actually does something
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=generator) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=generator) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=generator) + 0.5)
    model.eval()
    x = torch.rand(1, 3, 96, 64)
    with torch.no_grad():
        before = model(x).det
        fused = model.fuse()
        after = fused(x).det
    assert fused is model
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    for p, q in zip(before, after):
        assert torch.allclose(p, q, atol=1e-4)


def test_info_reports_gflops(yolov5n):
    summary = yolov5n.info(640)
    assert summary["layers"] == 214
    assert summary["parameters"] == summary["gradients"] == 1_872_157
    assert 4.2 <= summary["gflops"] <= 4.8
    assert yolov5n.info(320)["gflops"] == pytest.approx(summary["gflops"] / 4)


def test_decode_hand_computed_values():
    detect = Detect(nc=2, anchors=[[10, 13, 16, 30]], ch=[4])
    detect.stride.fill_(8.0)
    detect.anchors /= 8.0
    raw = torch.zeros(1, 2, 2, 3, 7)  # [B, na, ny, nx, 5 + nc]; zero logits -> sigmoid 0.5
    raw[0, 1, 1, 2] = torch.tensor([0.0, math.log(3), 0.0, -math.log(3), 0.0, math.log(4), -math.log(4)])
    out = detect.decode([raw])
    assert out.shape == (1, 12, 7)
    # anchor 0, cell (0, 0): xy = (2*0.5 - 0.5 + 0) * 8 = 4; wh = (2*0.5)^2 * (10, 13)
    assert torch.allclose(out[0, 0], torch.tensor([4.0, 4.0, 10.0, 13.0, 0.5, 0.5, 0.5]))
    # anchor 1, cell x=2, y=1 -> row 1*6 + 1*3 + 2 = 11
    # x = (1 - 0.5 + 2) * 8 = 20; y = (1.5 - 0.5 + 1) * 8 = 16; w = 1 * 16; h = 0.5^2 * 30 = 7.5
    assert torch.allclose(out[0, 11], torch.tensor([20.0, 16.0, 16.0, 7.5, 0.5, 0.8, 0.2]), atol=1e-6)


def test_decode_caches_grid_per_shape(yolov5n):
    maps = yolov5n(torch.zeros(1, 3, 64, 96)).det
    detect = yolov5n.detect
    detect._cell_offsets.clear()
    first = detect.decode(maps)
    cached = dict(detect._cell_offsets)
    second = detect.decode(maps)
    assert len(cached) == 3 and all(detect._cell_offsets[k] is v for k, v in cached.items())
    assert torch.equal(first, second)
    assert first.shape == (1, 3 * (8 * 12 + 4 * 6 + 2 * 3), 85)
    assert (first[..., 4:] >= 0).all() and (first[..., 4:] <= 1).all()


def test_detect_forward_does_not_modify_inputs():
    detect = Detect(nc=1, anchors=[[1, 1]], ch=[2])
    xs = [torch.zeros(1, 2, 3, 3)]
    maps = detect(xs)
    assert xs[0].shape == (1, 2, 3, 3) and maps[0].shape == (1, 1, 3, 3, 6)
