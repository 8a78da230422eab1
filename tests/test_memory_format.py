"""The memory format is chosen by timing both on the device in use, without touching the run's model or RNG."""
from __future__ import annotations

import torch

from models.yolo_cls import build_model
from utils.paths import ROOT
from utils.training.memory_format import MemoryFormatChoice, choose_memory_format, time_memory_formats


def _joint_model() -> torch.nn.Module:
    return build_model(ROOT / "models" / "yolov5n.yaml", nc=4, n_views=3).train()


def test_a_flag_decides_without_timing(monkeypatch):
    monkeypatch.setattr("utils.training.memory_format.time_memory_formats", lambda *a: (_ for _ in ()).throw(
        AssertionError("timed although the flag decided")))
    model = _joint_model()
    assert choose_memory_format(True, model, 64, torch.device("cpu")) == MemoryFormatChoice(True, None, None)
    assert choose_memory_format(False, model, 64, torch.device("cpu")) == MemoryFormatChoice(False, None, None)
    # --deterministic: the device's usual format, never a timed choice that may differ between two runs
    assert choose_memory_format(None, model, 64, torch.device("cpu"), deterministic=True) == \
        MemoryFormatChoice(True, None, None)
    assert choose_memory_format(None, model, 64, torch.device("meta"), deterministic=True) == \
        MemoryFormatChoice(False, None, None)


def test_probe_leaves_the_model_and_the_random_state_untouched():
    model = _joint_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(7)
    nchw_ms, nhwc_ms = time_memory_formats(model, 64, torch.device("cpu"))
    after_probe = torch.rand(3)
    torch.manual_seed(7)
    assert torch.equal(after_probe, torch.rand(3))  # dropout draws inside the probe did not move the RNG
    assert nchw_ms > 0 and nhwc_ms > 0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # BatchNorm statistics too
    assert all(p.grad is None for p in model.parameters())
    assert all(p.is_contiguous() for p in model.parameters())  # still NCHW: the probe worked on a copy


def test_auto_takes_the_clearly_faster_format_and_the_usual_one_on_a_tie(monkeypatch):
    model = _joint_model()
    cases = [((100.0, 90.0), "cpu", True), ((100.0, 110.0), "cpu", False), ((100.0, 97.0), "cpu", True),
             ((100.0, 104.0), "cpu", True), ((100.0, 97.0), "cuda", False), ((100.0, 90.0), "cuda", True)]
    for timings, device_type, expected in cases:
        monkeypatch.setattr("utils.training.memory_format.time_memory_formats", lambda *a, t=timings: t)
        device = torch.device(device_type)
        assert choose_memory_format(None, model, 64, device) == MemoryFormatChoice(expected, *timings), timings
