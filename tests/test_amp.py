"""Mixed precision (utils/training/amp.py) proven on the CPU, where torch has float16 and bfloat16 autocast and a
gradient scaler: the same code path a CUDA run takes.

Two separate questions, two kinds of test:
- Is the scale handled by every reader of gradients (clipping, GradNorm, uncertainty weighting, PCGrad, the
  interference monitor)? Scaling alone (autocast off) by a power of two is exact in floating point, so a
  correct run equals the FP32 run bit for bit; a reader that forgot to unscale is off by 65536x.
- Does autocast training stay close to FP32? Real float16/bfloat16 autocast, a few steps, stated tolerances.
"""
from __future__ import annotations

import argparse
import contextlib
import json
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

import train
from models.yolo import ModelOutputs
from models.yolo_cls import build_model
from tests.helpers import med_subset_yaml
from tests.step_harness import STRATEGIES, build_parts, med_batches, run_steps
from utils.cli import OptionError
from utils.training.amp import FP32, Amp, amp_agrees, build_amp, resolve_amp, resolve_amp_dtype
from utils.training.gradnorm import GradNorm
from utils.training.step import StepState, train_step

STEPS = 3
# Measured with these parameters (1 thread): the first forward's loss items differ from FP32 by at most 0.094 %
# (float16) and 1.4 % (bfloat16); the later detection and view losses by at most 4.9 % (dual, bfloat16); the task
# weights by at most 4.9e-4 (GradNorm, bfloat16), while GradNorm's moved 0.049 and uncertainty's 0.015.
FIRST_FORWARD_RTOL = {"float16": 0.005, "bfloat16": 0.03}
LOSS_RTOL = 0.10
WEIGHT_ATOL = 0.005
SMALL_START_SCALE = 256.0  # so no step of the float16 runs overflows and the trajectories stay comparable


@pytest.fixture(scope="module")
def batches(tmp_path_factory, med_root):
    torch.set_num_threads(1)  # bitwise comparisons: one summation order
    return med_batches(tmp_path_factory.mktemp("amp"), med_root)


@pytest.fixture(scope="module")
def fp32_runs(batches):
    """Each strategy's FP32 run, computed once: (loss items per step, parts)."""
    runs = {}
    for strategy in STRATEGIES:
        parts = build_parts(strategy, FP32)
        runs[strategy] = (run_steps(parts, batches, STEPS), parts)
    return runs


def scaling_only(scale: float = 2.0 ** 16) -> Amp:
    """AMP's gradient scaling without autocast: everything is float32, only the scale is in the way."""
    amp = Amp(enabled=True, device_type="cpu", dtype="float16")
    amp.autocast = contextlib.nullcontext  # type: ignore[method-assign]
    amp.load_state_dict({**amp.scaler.state_dict(), "scale": scale})
    return amp


def _parameters(parts) -> list[torch.Tensor]:
    return [p.detach().clone() for p in parts.model.parameters()]


# ----------------------------------------------------------------------------------------- flags and the Amp object

def test_amp_defaults_on_for_cuda_and_off_for_the_cpu():
    cuda, cpu = torch.device("cuda", 0), torch.device("cpu")
    assert resolve_amp(None, cuda) is True and resolve_amp(None, cpu) is False
    assert resolve_amp(True, cpu) is True and resolve_amp(False, cuda) is False
    with pytest.raises(OptionError, match="--amp on mps"):
        resolve_amp(True, torch.device("mps"))
    assert resolve_amp_dtype(None, cuda) == "float16" and resolve_amp_dtype(None, cpu) == "bfloat16"
    assert train.parse_opt([]).amp is None
    assert train.parse_opt(["--amp", "--amp-dtype", "float16"]).amp is True
    assert train.parse_opt(["--no-amp"]).amp is False


def test_amp_off_is_exactly_the_fp32_path():
    loss, grad = torch.tensor(2.0, requires_grad=True), torch.ones(3)
    assert FP32.scale(loss) is loss and FP32.unscale(grad) is grad and FP32.grad_scale == 1.0
    assert isinstance(FP32.autocast(), contextlib.nullcontext) and FP32.state_dict() == {}


# ----------------------------------------------------------------------------------------- the scale, exactly

@pytest.mark.parametrize("strategy", STRATEGIES)
def test_every_gradient_reader_unscales_exactly(strategy, batches, fp32_runs):
    """With the loss scaled by 2^16 (autocast off) every loss, weight, parameter and statistic equals FP32's."""
    fp32_items, fp32_parts = fp32_runs[strategy]
    amp = scaling_only()
    parts = build_parts(strategy, amp)
    items = run_steps(parts, batches, STEPS)
    assert amp.grad_scale == 2.0 ** 16, "no step overflowed"
    for a, b in zip(items, fp32_items):
        assert torch.equal(a, b)
    assert torch.equal(parts.balancer.weights, fp32_parts.balancer.weights)
    assert all(torch.equal(a, b) for a, b in zip(_parameters(parts), _parameters(fp32_parts)))
    assert parts.history.data["steps"] == fp32_parts.history.data["steps"]  # GradNorm's norms, PCGrad's conflicts
    assert parts.history.data["interference"] == fp32_parts.history.data["interference"]


def test_the_exact_check_catches_a_reader_that_forgets_to_unscale(batches, fp32_runs):
    """The test above can fail: GradNorm reading scaled norms learns different weights."""
    amp = scaling_only()
    amp.unscale = lambda grad: grad  # type: ignore[method-assign]
    parts = build_parts("gradnorm", amp)
    run_steps(parts, batches, STEPS)
    assert not torch.equal(parts.balancer.weights, fp32_runs["gradnorm"][1].balancer.weights)


# ----------------------------------------------------------------------------------------- autocast, approximately

def _task_losses(items: torch.Tensor) -> torch.Tensor:
    return torch.stack((items[:3].sum(), items[3]))  # detection (box + obj + cls), view


@pytest.mark.parametrize("strategy,dtype", [("fixed", "float16"), ("uncertainty", "bfloat16"), ("pcgrad", "float16"),
                                            ("gradnorm", "bfloat16"), ("gradnorm", "float16"), ("dual", "bfloat16")])
def test_autocast_training_stays_close_to_fp32(strategy, dtype, batches, fp32_runs):
    fp32_items, fp32_parts = fp32_runs[strategy]
    amp = Amp(enabled=True, device_type="cpu", dtype=dtype)
    amp.load_state_dict({**amp.scaler.state_dict(), "scale": SMALL_START_SCALE})
    parts = build_parts(strategy, amp)
    items = run_steps(parts, batches, STEPS)
    assert all(x is not None and torch.isfinite(x).all() for x in items)
    assert amp.grad_scale == SMALL_START_SCALE, "no step was skipped"
    torch.testing.assert_close(items[0], fp32_items[0], rtol=FIRST_FORWARD_RTOL[dtype], atol=1e-5)
    for a, b in zip(items[1:], fp32_items[1:]):
        torch.testing.assert_close(_task_losses(a), _task_losses(b), rtol=LOSS_RTOL, atol=0)
    torch.testing.assert_close(parts.balancer.weights, fp32_parts.balancer.weights, rtol=0, atol=WEIGHT_ATOL)
    if strategy in ("gradnorm", "uncertainty"):  # the weights moved well beyond the tolerance: the check has teeth
        start = 0.5 if strategy == "uncertainty" else 1.0
        assert (fp32_parts.balancer.weights - start).abs().max() > 2 * WEIGHT_ATOL


# ----------------------------------------------------------------------------------------- overflow

def test_a_forced_overflow_is_skipped_counted_apart_and_the_scale_drops(batches):
    """A scale of 2^126 overflows every gradient: the step is skipped, nothing learns from it, the scale halves."""
    amp = Amp(enabled=True, device_type="cpu", dtype="bfloat16")
    amp.load_state_dict({**amp.scaler.state_dict(), "scale": 2.0 ** 126})
    parts = build_parts("gradnorm", amp)
    state, before = StepState(accumulate=1), _parameters(parts)
    (items,) = run_steps(parts, batches, 1, state)
    assert items is not None and torch.isfinite(items).all(), "the loss itself was finite"
    assert (state.amp_skipped_steps, state.skipped_steps) == (1, 0), "an overflow is not a non-finite loss"
    assert amp.grad_scale == 2.0 ** 125
    assert all(torch.equal(a, b) for a, b in zip(_parameters(parts), before)), "no parameter moved"
    gradnorm = parts.balancer
    assert parts.ema.updates == 0 and gradnorm.initial_losses is None and gradnorm.weights.tolist() == [1.0, 1.0]
    assert parts.history.data["steps"] == [] and parts.history.data["interference"] == []
    assert all(p.grad is None or not p.grad.abs().sum() for p in parts.model.parameters()), "gradients cleared"

    amp.load_state_dict({**amp.scaler.state_dict(), "scale": SMALL_START_SCALE})  # then training goes on
    for ni in (1, 2):
        assert train_step(parts, state, *batches[ni % 2], ni=ni, epoch=0, batch_index=ni) is not None
    assert state.amp_skipped_steps == 1 and parts.ema.updates == 2 and gradnorm.initial_losses is not None
    assert gradnorm.weights.tolist() != [1.0, 1.0]


def test_fp32_skips_a_non_finite_gradient_behind_a_finite_loss(batches):
    """FP32: a NaN gradient with a finite loss is skipped and counted, rather than written into every parameter."""
    parts = build_parts("fixed")
    first_weight = next(parts.model.parameters())
    hook = first_weight.register_hook(lambda grad: torch.full_like(grad, float("nan")))
    state, before = StepState(accumulate=1), _parameters(parts)
    (items,) = run_steps(parts, batches, 1, state)
    assert items is not None and torch.isfinite(items).all(), "the loss itself was finite"
    assert (state.skipped_steps, state.amp_skipped_steps) == (1, 0)
    assert all(torch.equal(a, b) for a, b in zip(_parameters(parts), before)), "no parameter moved"
    assert parts.ema.updates == 0
    hook.remove()
    assert train_step(parts, state, *batches[1], ni=1, epoch=0, batch_index=1) is not None
    assert parts.ema.updates == 1 and not all(torch.equal(a, b) for a, b in zip(_parameters(parts), before))


def test_gradnorm_skip_step_forgets_what_it_gathered():
    w = nn.Parameter(torch.tensor([1.0, 2.0]))
    balancer = GradNorm(("det", "view"), w)
    balancer.combine({"det": (w * 3).sum(), "view": w.sum()})
    balancer.skip_step()
    balancer.step()
    assert balancer.initial_losses is None and balancer._optimizer_steps == 0
    balancer.combine({"det": (w * 3).sum(), "view": w.sum()})
    balancer.step()
    assert balancer.initial_losses.tolist() == [9.0, 3.0]


# ----------------------------------------------------------------------------------------- YOLOv5's AMP check

class _BrokenUnderAutocast(nn.Module):
    """A stand-in for a GPU whose float16 kernels return garbage: NaN whenever autocast is on."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)

    def forward(self, x: torch.Tensor) -> ModelOutputs:
        y = self.conv(x)
        return ModelOutputs(det=[y * float("nan") if torch.is_autocast_enabled("cpu") else y])


def test_the_amp_check_passes_a_sound_model_and_falls_back_to_fp32_otherwise(caplog):
    torch.manual_seed(0)
    model = build_model("models/yolov5n.yaml", nc=4, n_views=3)
    for dtype, worst in (("float16", 0.005), ("bfloat16", 0.02)):  # measured 0.0002 and 0.002
        agree, difference = amp_agrees(model, torch.device("cpu"), dtype)
        assert agree and difference < worst
    assert amp_agrees(_BrokenUnderAutocast(), torch.device("cpu"), "float16") == (False, float("inf"))

    opt = argparse.Namespace(amp=True, amp_dtype="float16")
    assert build_amp(opt, torch.device("cpu"), (True, 0.001)).enabled and opt.amp
    amp = build_amp(opt, torch.device("cpu"), (False, float("inf")))
    assert not amp.enabled and opt.amp is False and "AMP check failed" in caplog.text


# ----------------------------------------------------------------------------------------- a whole run, resumed

def test_an_amp_run_records_its_precision_and_resume_restores_the_scaler(tmp_path: Path, med_root: Path, monkeypatch):
    """train.py --amp on the CPU; a crash after epoch 0; the saved scaler state (set to an unusual one) continues."""
    from utils.training import engine

    data = med_subset_yaml(tmp_path, med_root, n=4)
    args = ["--data", str(data), "--cfg", "models/yolov5n.yaml", "--img", "64", "--epochs", "2", "--batch-size", "4",
            "--workers", "0", "--noplots", "--noautoanchor", "--no-channels-last", "--amp",
            "--project", str(tmp_path / "runs")]
    real_save = engine.save_checkpoint

    def save_then_crash(ckpt, path):
        if Path(path).name == "last.pt" and ckpt["epoch"] == 0:
            assert ckpt["amp_scaler"]["scale"] == 2.0 ** 16 and ckpt["amp_skipped_steps"] == 0
            ckpt = {**ckpt, "amp_scaler": {**ckpt["amp_scaler"], "scale": 1024.0, "_growth_tracker": 5}}
            real_save(ckpt, path)
            raise KeyboardInterrupt("simulated crash after epoch 0")
        real_save(ckpt, path)

    monkeypatch.setattr(engine, "save_checkpoint", save_then_crash)
    with pytest.raises(KeyboardInterrupt):
        train.main(train.parse_opt(args))
    monkeypatch.setattr(engine, "save_checkpoint", real_save)
    (save_dir,) = (tmp_path / "runs").iterdir()
    opt_yaml = yaml.safe_load((save_dir / "opt.yaml").read_text())
    assert (opt_yaml["amp"], opt_yaml["amp_dtype"]) == (True, "bfloat16")

    train.main(train.parse_opt(["--resume", str(save_dir / "weights" / "last.pt")]))
    final = torch.load(save_dir / "weights" / "last.pt", weights_only=True)
    # one optimizer step in epoch 1 (one batch, accumulation 1 in warmup), from the restored state, not a fresh one
    assert final["amp_scaler"]["scale"] == 1024.0 and final["amp_scaler"]["_growth_tracker"] == 6
    history = json.loads((save_dir / "training_history.json").read_text())
    assert history["run"]["amp"] == {"enabled": True, "dtype": "bfloat16"}
    assert [e["amp_skipped_steps"] for e in history["epochs"]] == [0, 0]
