"""CUDA-clean code paths, checked without a GPU: no tensor is created on the CPU by accident.

On a GPU run, a tensor factory called without `device=` (torch.zeros(n), torch.tensor([...]),
torch.arange(k), ...) makes a CPU tensor, and the first operation that mixes it with a CUDA
tensor crashes (or, for a 0-d tensor, silently copies every step). On the CPU nothing shows. So
the check is not "which device did it land on" but "did our code say which device": a
TorchFunctionMode sees every factory call with its arguments, and the caller's frame tells
whether the call is in this project's code (torch's own internals choose their devices
themselves). Factories given a tensor (torch.as_tensor(t)) keep that tensor's device and are not
counted; `x.new_zeros(...)`, `torch.zeros_like(x)` and explicit `device=` are the clean forms.

Inside one training step of every strategy (with AMP on, so the scaler paths run too), the
losses, balancers, interference monitor, EMA and optimizer step, and inside validation with
its metrics, the only device-less factories allowed are the host-side ones listed in
HOST_SIDE, each with the reason it is meant to be on the CPU.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._device import _device_constructors

from tests.step_harness import STRATEGIES, build_parts, med_batches, med_loader
from utils.evaluation.validation import evaluate
from utils.training.amp import Amp
from utils.training.gradnorm import GradNorm
from utils.training.step import StepState, train_step

ROOT = Path(__file__).resolve().parents[1]

# (file, function, factory): why it is meant to be a CPU tensor even when the model is on a GPU
HOST_SIDE = {
    ("utils/training/gradnorm.py", "step", "tensor"):
        "the micro-step count joins GradNorm's host-side sums; all_reduce_sum copies them to NCCL's device",
    ("utils/training/gradnorm.py", "combine", "zeros"):
        "the norm of an unused W, beside the other norms GradNorm keeps on the host (.cpu())",
    ("utils/training/distributed.py", "any_rank", "tensor"):
        "a Python bool as a tensor for the all-reduce, which copies it to NCCL's device",
    ("utils/evaluation/validation.py", "_save_txt", "tensor"): "--save-txt rows from .tolist() values",
    ("utils/evaluation/validation.py", "_preds_to_targets", "full"): "plot rows, after .cpu()",
    ("utils/evaluation/validation.py", "_preds_to_targets", "zeros"): "plot rows, after .cpu()",
}
HOST_SIDE_FOLDERS = {  # whole folders that work on the host by design
    "utils/data/": "the loader builds batches on the host; the loops copy them to the device (pinned, non-blocking)",
}


def _is_project_code(path: Path) -> bool:
    """The repository's own files: not the tests, not a virtual environment or package installed inside it."""
    if not path.is_relative_to(ROOT) or path.is_relative_to(ROOT / "tests"):
        return False
    parts = path.relative_to(ROOT).parts
    return not any(part in ("site-packages", "dist-packages") or part.startswith(".") for part in parts)


class DevicelessFactories(TorchFunctionMode):
    """Records (file, function, factory) for every tensor factory this project's code calls without a device."""

    def __init__(self) -> None:
        super().__init__()
        self.sites: set[tuple[str, str, str]] = set()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _device_constructors() and kwargs.get("device") is None and not (
                args and isinstance(args[0], torch.Tensor)):
            caller = sys._getframe(1).f_code
            path = Path(caller.co_filename).resolve()
            if _is_project_code(path):
                self.sites.add((path.relative_to(ROOT).as_posix(), caller.co_name, func.__name__))
        return func(*args, **kwargs)


@pytest.fixture(scope="module")
def batches(tmp_path_factory, med_root):
    return med_batches(tmp_path_factory.mktemp("clean"), med_root)


def _unexplained(sites: set) -> list:
    return sorted(site for site in sites if site not in HOST_SIDE and not site[0].startswith(tuple(HOST_SIDE_FOLDERS)))


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_training_step_creates_no_tensor_without_a_device(strategy, batches):
    amp = Amp(enabled=True, device_type="cpu", dtype="bfloat16")
    parts = build_parts(strategy, amp)
    state = StepState(accumulate=2)  # micro-steps that only accumulate and one that steps
    recorder = DevicelessFactories()
    with recorder:
        for ni in range(3):
            assert train_step(parts, state, *batches[ni % 2], ni=ni, epoch=0, batch_index=ni) is not None
    assert state.last_opt_step == 1, "iteration 1 stepped, 0 and 2 only accumulated"
    assert _unexplained(recorder.sites) == []


def test_validation_and_metrics_create_no_tensor_without_a_device(tmp_path, med_root):
    parts = build_parts("gradnorm")
    loader = med_loader(tmp_path, med_root)
    recorder = DevicelessFactories()
    with recorder:
        for training, extra in ((True, {"amp_dtype": torch.bfloat16}),
                                (False, {"plots": True, "save_txt": True, "save_conf": True, "save_json": True})):
            evaluate(parts.model, loader, names={0: "AR", 1: "MR", 2: "PR", 3: "TR"}, device=torch.device("cpu"),
                     compute_loss=parts.compute_loss, save_dir=tmp_path, training=training,
                     view_names=["PSAX", "PLAX", "A4C"], conf_thres=0.0, **extra)
    assert _unexplained(recorder.sites) == []


def test_the_recorder_sees_a_device_less_factory_in_project_code():
    """The check has teeth: GradNorm's host-side step count is found (and the same call from a test is not)."""
    w = torch.nn.Parameter(torch.ones(2))
    balancer = GradNorm(("det", "view"), w)
    balancer.combine({"det": w.sum(), "view": (2 * w).sum()})
    recorder = DevicelessFactories()
    with recorder:
        balancer.step()
        torch.zeros(3)
    assert recorder.sites == {("utils/training/gradnorm.py", "step", "tensor")}
