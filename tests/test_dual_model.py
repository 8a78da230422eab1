"""Tests for the dual remedy: Classify, ClassificationModel (yolov5n-cls) and DualModel (nothing shared)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import nn

from models.common import Classify
from models.yolo import ClassificationModel, DetectionModel, ModelOutputs
from models.yolo_cls import DUAL_KEY, DualModel, JointModel, build_model, view_loss
from utils.paths import ROOT
from utils.training.loss import ComputeLoss

NC, N_VIEWS = 4, 3


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """These tiny forwards run faster on one thread, and far faster when other jobs share the CPU."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def dual() -> DualModel:
    torch.manual_seed(0)
    return DualModel("yolov5n.yaml", nc=NC, n_views=N_VIEWS)


@pytest.fixture(scope="module")
def hyp() -> dict:
    with open(ROOT / "data" / "hyps" / "hyp.scratch-low.yaml", encoding="utf-8") as f:
        return yaml.safe_load(f)


def batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Two 64x96 images, three boxes (image, class, cx, cy, w, h normalised) and a view label each."""
    generator = torch.Generator().manual_seed(1)
    images = torch.rand(2, 3, 64, 96, generator=generator)
    targets = torch.tensor([[0, 1, 0.5, 0.5, 0.3, 0.4], [0, 3, 0.2, 0.3, 0.1, 0.2], [1, 0, 0.7, 0.6, 0.4, 0.3]])
    views = torch.tensor([2, 0])
    return images, targets, views


def randomise_batch_norms(model: nn.Module) -> None:
    """Non-trivial BN statistics, so folding BN into the convolutions actually changes the weights."""
    generator = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=generator) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=generator) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=generator) + 0.5)


# ----------------------------------------------------------------------------- Classify / ClassificationModel


def test_classify_pools_then_linear():
    head = Classify(4, 3).eval()
    assert sum(p.numel() for p in head.parameters()) == 4 * 3 + 3
    flat = torch.ones(1, 4, 5, 5)
    uneven = torch.zeros(1, 4, 5, 5)
    uneven[..., :2, :] = 2.5  # per-channel mean 2.5 * 10 / 25 = 1, as for `flat`
    assert torch.allclose(head(flat), head(uneven))
    expected = head.linear.weight.sum(1) + head.linear.bias  # pooled vector is all ones
    assert torch.allclose(head(flat)[0], expected)
    assert head(torch.rand(2, 4, 3, 7)).shape == (2, 3)


def conv_params(c1: int, c2: int, k: int) -> int:
    return c1 * c2 * k * k + 2 * c2  # bias-free conv + BN weight and bias


def c3_params(c1: int, c2: int, n: int) -> int:
    hidden = c2 // 2
    bottlenecks = n * (conv_params(hidden, hidden, 1) + conv_params(hidden, hidden, 3))
    return 2 * conv_params(c1, hidden, 1) + conv_params(2 * hidden, c2, 1) + bottlenecks


def test_yolov5n_cls_parameter_count(dual):
    """yolov5n-cls with nc=3 has 1,047,139 parameters (measured).

    Cross-check by hand from the layer list: width 0.25 turns 64..1024 into 16..256 channels, depth 0.33
    turns C3 repeats 3/6/9/3 into 1/2/3/1, so the layers are
    Conv(3,16,6)=1760, Conv(16,32,3)=4672, C3(32,32,1)=4800, Conv(32,64,3)=18560, C3(64,64,2)=29184,
    Conv(64,128,3)=73984, C3(128,128,3)=156928, Conv(128,256,3)=295424, C3(256,256,1)=296448,
    SPPF(256,256)=164608 (1x1 256->128 and 1x1 512->256), Classify 256*3+3=771: total 1,047,139.
    The same backbone is layers 0-9 of the yolov5n detector, checked against it below.
    """
    model = ClassificationModel("yolov5n-cls.yaml")
    by_hand = (
        conv_params(3, 16, 6) + conv_params(16, 32, 3) + c3_params(32, 32, 1) + conv_params(32, 64, 3)
        + c3_params(64, 64, 2) + conv_params(64, 128, 3) + c3_params(128, 128, 3) + conv_params(128, 256, 3)
        + c3_params(256, 256, 1) + conv_params(256, 128, 1) + conv_params(512, 256, 1) + (256 * 3 + 3)
    )
    total = sum(p.numel() for p in model.parameters())
    assert total == by_hand == 1_047_139
    detector_backbone = sum(p.numel() for i in range(10) for p in dual.detector.model[i].parameters())
    assert total == detector_backbone + 771
    assert model.classify.linear.in_features == 256  # SPPF output, width-scaled
    assert model.classify.linear.out_features == 3  # nc, NOT width-scaled


def test_classification_model_nc_override_and_forward():
    model = ClassificationModel("yolov5n-cls", nc=5)
    assert model.yaml["nc"] == model.nc == 5 and len(model.names) == 5
    assert model(torch.rand(2, 3, 64, 96)).shape == (2, 5)
    rebuilt = ClassificationModel(model.yaml)
    assert rebuilt.state_dict().keys() == model.state_dict().keys()


def test_classification_model_rejects_a_detection_yaml():
    with pytest.raises(ValueError, match="Classify"):
        ClassificationModel("yolov5n.yaml")


def test_classification_info_counts_linear_once():
    """Conv FLOPs grow with image area, the Linear on the pooled vector does not: 2*256*3 FLOPs at any size."""
    model = ClassificationModel("yolov5n-cls.yaml")
    at_320, at_640 = model.info(320), model.info(640)
    linear_flops = 2 * 256 * 3 / 1e9
    # g(640) = 4 * conv(320) + linear and g(320) = conv(320) + linear  =>  g(640) - 4 g(320) = -3 * linear
    assert at_640["gflops"] - 4 * at_320["gflops"] == pytest.approx(-3 * linear_flops, abs=1e-12)
    assert at_320["parameters"] == at_320["gradients"] == 1_047_139
    assert model.info()["gflops"] == pytest.approx(model.info(224)["gflops"])  # 224 is the default


def test_classification_fuse_keeps_logits():
    torch.manual_seed(0)
    model = ClassificationModel("yolov5n-cls.yaml")
    randomise_batch_norms(model)
    model.eval()
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        before = model(x)
        assert model.fuse() is model
        after = model(x)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert torch.allclose(before, after, atol=1e-4)


# ----------------------------------------------------------------------------- DualModel: isolation


def test_parameters_and_buffers_are_disjoint(dual):
    detector_names = {f"detector.{n}" for n, _ in dual.detector.named_parameters()}
    classifier_names = {f"classifier.{n}" for n, _ in dual.classifier.named_parameters()}
    assert detector_names.isdisjoint(classifier_names)
    assert detector_names | classifier_names == {n for n, _ in dual.named_parameters()}

    def storages(module: nn.Module) -> set[int]:
        return {t.data_ptr() for t in [*module.parameters(), *module.buffers()] if t.numel()}

    assert storages(dual.detector).isdisjoint(storages(dual.classifier))
    n_tensors = sum(1 for t in [*dual.parameters(), *dual.buffers()] if t.numel())
    assert len(storages(dual)) == n_tensors  # no tensor aliased inside the model either


def task_gradients(model: DualModel, hyp: dict) -> tuple[torch.Tensor, torch.Tensor, list[nn.Parameter]]:
    images, targets, views = batch()
    model.train()
    outputs = model(images)
    det_loss, _ = ComputeLoss(model, hyp)(outputs.det, targets)
    return det_loss, view_loss(outputs.view_logits, views), list(model.parameters())


def is_zero(grad: torch.Tensor | None) -> bool:
    return grad is None or not grad.any()


def test_each_loss_reaches_only_its_own_network(dual, hyp):
    det_loss, cls_loss, _ = task_gradients(dual, hyp)
    detector, classifier = list(dual.detector.parameters()), list(dual.classifier.parameters())
    view_on_detector = torch.autograd.grad(cls_loss, detector, retain_graph=True, allow_unused=True)
    det_on_classifier = torch.autograd.grad(det_loss, classifier, retain_graph=True, allow_unused=True)
    assert all(is_zero(g) for g in view_on_detector)
    assert all(is_zero(g) for g in det_on_classifier)
    # ... while each loss does train its own network (so the checks above could fail)
    view_on_classifier = torch.autograd.grad(cls_loss, classifier, retain_graph=True, allow_unused=True)
    det_on_detector = torch.autograd.grad(det_loss, detector, allow_unused=True)
    assert not is_zero(view_on_classifier[-2])  # Classify.linear.weight
    assert sum(not is_zero(g) for g in det_on_detector) > len(detector) // 2


def test_one_backward_of_the_sum_equals_two_backwards(dual, hyp):
    det_loss, cls_loss, params = task_gradients(dual, hyp)
    separate_det = torch.autograd.grad(det_loss, params, retain_graph=True, allow_unused=True)
    separate_view = torch.autograd.grad(cls_loss, params, retain_graph=True, allow_unused=True)
    combined = torch.autograd.grad(det_loss + cls_loss, params, allow_unused=True)
    for param, g_det, g_view, g_sum in zip(params, separate_det, separate_view, combined):
        expected = torch.zeros_like(param)
        for g in (g_det, g_view):
            if g is not None:
                expected = expected + g
        got = torch.zeros_like(param) if g_sum is None else g_sum
        assert torch.allclose(got, expected, rtol=0, atol=1e-7)


# ----------------------------------------------------------------------------- DualModel: outputs and API


def test_outputs_structure(dual):
    images, _, _ = batch()
    outputs = dual(images)
    assert isinstance(outputs, ModelOutputs)
    assert [tuple(m.shape) for m in outputs.det] == [(2, 3, 8, 12, NC + 5), (2, 3, 4, 6, NC + 5), (2, 3, 2, 3, NC + 5)]
    assert outputs.view_logits.shape == (2, N_VIEWS)
    assert dual.detect is dual.detector.detect and dual.stride.tolist() == [8.0, 16.0, 32.0]
    assert dual.n_views == N_VIEWS and dual.detect.nc == NC
    assert [f.shape[1] for f in dual.forward_features(images)] == [64, 128, 256]


def test_cls_imgsz_resizes_the_classifier_input():
    torch.manual_seed(0)
    model = DualModel("yolov5n.yaml", nc=NC, n_views=N_VIEWS, cls_imgsz=32).eval()
    images, _, _ = batch()  # 64 x 96
    assert model.classifier_input(images).shape == (2, 3, 32, 32)
    square = torch.rand(1, 3, 32, 32)
    assert model.classifier_input(square) is square  # already the right size: untouched
    with torch.no_grad():
        outputs = model(images)
        by_hand = model.classifier(F.interpolate(images, size=(32, 32), mode="bilinear", align_corners=False))
    assert outputs.det[0].shape == (2, 3, 8, 12, NC + 5)  # the detector still sees the full batch
    assert torch.equal(outputs.view_logits, by_hand)
    with pytest.raises(ValueError, match="cls_imgsz"):
        DualModel("yolov5n.yaml", cls_imgsz=0)


def test_names_are_settable_and_live_on_the_detector(dual):
    dual.names = {0: "jet", 1: "a", 2: "b", 3: "c"}
    assert dual.detector.names[0] == "jet" and dual.names[0] == "jet"
    assert dual.view_names == {0: "view0", 1: "view1", 2: "view2"}


def test_build_model_round_trip(dual):
    assert set(dual.yaml) == {DUAL_KEY}
    assert yaml.safe_load(yaml.safe_dump(dual.yaml)) == dual.yaml  # plain data only
    rebuilt = build_model(dual.yaml)
    assert isinstance(rebuilt, DualModel)
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in dual.state_dict().items()}
    assert rebuilt.yaml == dual.yaml
    overridden = build_model(dual.yaml, nc=2, n_views=5, cls_imgsz=64)
    assert overridden.detect.nc == 2 and overridden.n_views == 5 and overridden.cls_imgsz == 64
    assert overridden.yaml[DUAL_KEY]["cls_imgsz"] == 64
    with pytest.raises(TypeError, match="anchors"):
        build_model(dual.yaml, anchors=3)


def test_build_model_keeps_the_other_cases():
    assert type(build_model("yolov5n.yaml", nc=NC)) is DetectionModel
    assert type(build_model("yolov5n.yaml", nc=NC, n_views=N_VIEWS)) is JointModel


def test_fuse_keeps_outputs():
    torch.manual_seed(0)
    model = DualModel("yolov5n.yaml", nc=NC, n_views=N_VIEWS, cls_imgsz=32)
    randomise_batch_norms(model)
    model.eval()
    images, _, _ = batch()
    with torch.no_grad():
        before = model(images)
        assert model.fuse() is model
        after = model(images)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    for p, q in zip(before.det, after.det):
        assert torch.allclose(p, q, atol=1e-4)
    assert torch.allclose(before.view_logits, after.view_logits, atol=1e-4)


def test_default_classifier_is_the_thin_one_counted_by_hand():
    """yolov5n-cls-thin: width 0.125 turns 64..1024 into 8..128 channels, same depths as yolov5n-cls."""
    model = DualModel("yolov5n.yaml", nc=NC, n_views=3).classifier
    by_hand = (
        conv_params(3, 8, 6) + conv_params(8, 16, 3) + c3_params(16, 16, 1) + conv_params(16, 32, 3)
        + c3_params(32, 32, 2) + conv_params(32, 64, 3) + c3_params(64, 64, 3) + conv_params(64, 128, 3)
        + c3_params(128, 128, 1) + conv_params(128, 64, 1) + conv_params(256, 128, 1) + (128 * 3 + 3)
    )
    assert model.yaml_file == "yolov5n-cls-thin"
    assert sum(p.numel() for p in model.parameters()) == by_hand == 263_731


def test_info_reports_both_networks():
    model = DualModel("yolov5n.yaml", nc=NC, n_views=N_VIEWS, cls_imgsz=64)
    summary = model.info(128)
    assert summary["detector"]["parameters"] == sum(p.numel() for p in model.detector.parameters())
    assert summary["classifier"]["parameters"] == 263_731  # the default thin classifier
    assert summary["parameters"] == sum(p.numel() for p in model.parameters())
    assert summary["gflops"] == pytest.approx(summary["detector"]["gflops"] + summary["classifier"]["gflops"])
    assert summary["detector"]["gflops"] == pytest.approx(model.detector.info(128)["gflops"])
    assert summary["classifier"]["gflops"] == pytest.approx(model.classifier.info(64)["gflops"])  # at cls_imgsz
