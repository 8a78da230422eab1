"""Mixed precision (AMP) for one run: autocast for the forward pass and a gradient scaler for the backward.

YOLOv5 trains under autocast with a gradient scaler on CUDA by default; so does this project (`--amp`,
`--no-amp`; default on for CUDA, off for the CPU, where float16/bfloat16 autocast is slower on most
chips). `Amp` is built once per run and handed to the step; disabled, every method is the plain FP32
path (no scaling, no autocast), so an FP32 run computes exactly what it did before AMP existed.

What stays in FP32 and why: the network's parameters and gradients (autocast only casts the inputs of
matmul-like ops), the view head (it pools the neck maps in FP32 and runs its MLP outside autocast: a
0.1 M-parameter head costs nothing and its logits keep full precision), and every loss (the detection
maps and view logits are cast to float32 before CIoU, BCE and cross-entropy: log-sigmoid and
log-softmax terms and the sums over thousands of cells lose digits or overflow in float16, whose
largest value is 65504). Whoever reads gradients (clipping, GradNorm, uncertainty weighting, PCGrad,
the interference monitor) reads them through `unscale` or after `unscale_`.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
from typing import ContextManager, Iterable

import torch

from models.yolo import ModelOutputs
from utils.cli import OptionError
from utils.logger import LOGGER

AMP_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}
AMP_DEVICE_TYPES = ("cuda", "cpu")  # where torch has both autocast and a gradient scaler
CHECK_TOLERANCE = 0.1  # relative L2 difference of autocast vs FP32 outputs above which AMP is refused
CHECK_IMAGE_SIZE = 128  # side of the fixed input the AMP check runs on (small: it only has to be representative)


def resolve_amp(requested: bool | None, device: torch.device) -> bool:
    """--amp / --no-amp, or None: on for CUDA (YOLOv5's default), off elsewhere (opt-in on the CPU)."""
    if requested is None:
        return device.type == "cuda"
    if requested and device.type not in AMP_DEVICE_TYPES:
        raise OptionError(f"--amp on {device.type}: mixed precision is supported on CUDA and the CPU; use --no-amp")
    return bool(requested)


def resolve_amp_dtype(requested: str | None, device: torch.device) -> str:
    """--amp-dtype, or None: float16 on CUDA (YOLOv5's choice), bfloat16 on the CPU (its fast low precision)."""
    if requested is None:
        return "float16" if device.type == "cuda" else "bfloat16"
    if requested not in AMP_DTYPES:
        raise OptionError(f"--amp-dtype {requested}: expected one of {', '.join(AMP_DTYPES)}")
    return requested


class Amp:
    """Autocast and gradient scaling of one run, or neither (enabled=False: the FP32 path, unchanged).

    `grad_scale` is the factor the gradients of the current optimizer step carry (1.0 when disabled).
    It only changes in `update()`, once per optimizer step, so every micro-batch of one accumulation
    window, and every reader of their gradients, sees the same value.
    """

    def __init__(self, enabled: bool = False, device_type: str = "cpu", dtype: str = "float16") -> None:
        self.enabled = bool(enabled)
        self.device_type = device_type
        self.dtype_name = dtype
        self.dtype = AMP_DTYPES[dtype]
        self.scaler = torch.amp.GradScaler(device_type, enabled=self.enabled) if self.enabled else None
        self.grad_scale = self.scaler.get_scale() if self.scaler is not None else 1.0

    def describe(self) -> dict:
        """What training_history.json records about the run's precision."""
        return {"enabled": self.enabled, "dtype": self.dtype_name if self.enabled else "float32"}

    def autocast(self) -> ContextManager:
        """The context the forward pass runs in: autocast to the AMP dtype, or nothing."""
        if not self.enabled:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def scale(self, loss: torch.Tensor) -> torch.Tensor:
        """The loss to backpropagate (times the scale, so small float16 gradients do not flush to zero)."""
        return self.scaler.scale(loss) if self.scaler is not None else loss

    def unscale(self, grad: torch.Tensor) -> torch.Tensor:
        """A gradient of a scaled loss back in true units (for readers that take their own autograd.grad)."""
        return grad / self.grad_scale if self.scaler is not None else grad

    def unscale_(self, optimizers: Iterable[torch.optim.Optimizer]) -> None:
        """Divide every optimizer's .grad by the scale in place, before clipping reads the norms."""
        if self.scaler is not None:
            for o in optimizers:
                self.scaler.unscale_(o)

    def step(self, optimizers: Iterable[torch.optim.Optimizer], grad_norms: list[torch.Tensor]) -> bool:
        """Step every optimizer, or (AMP) none when a gradient overflowed; True when they stepped.

        All or nothing: with two networks (train_dual.py) an overflow in one skips both, so a skipped
        step is one event for the EMA and the balancers. `grad_norms` are the unscaled norms clipping
        measured; a non-finite one is what the scaler's own inf check sees. In FP32 a non-finite gradient
        (with a finite loss) skips the step too, rather than writing NaN into every parameter.
        """
        finite = all(bool(torch.isfinite(n)) for n in grad_norms)
        if finite:
            for o in optimizers:
                self.scaler.step(o) if self.scaler is not None else o.step()
        return finite

    def update(self) -> None:
        """After each optimizer step (taken or skipped): the scaler halves the scale on an overflow, grows it
        after a run of finite steps."""
        if self.scaler is not None:
            self.scaler.update()
            self.grad_scale = self.scaler.get_scale()

    def state_dict(self) -> dict:
        """The scaler's state for the checkpoint (plain numbers; empty when AMP is off)."""
        return copy.deepcopy(self.scaler.state_dict()) if self.scaler is not None else {}

    def load_state_dict(self, state: dict | None) -> None:
        """Restore the scale and its growth tracker on --resume (nothing to do for FP32 or an FP32 checkpoint)."""
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)
            self.grad_scale = self.scaler.get_scale()


FP32 = Amp(enabled=False)  # the default for callers that never use mixed precision


def float32_outputs(outputs: ModelOutputs) -> ModelOutputs:
    """The model's outputs in float32 for the losses (the very same tensors when they already are: FP32 runs)."""
    view = outputs.view_logits
    return ModelOutputs(det=[m.float() for m in outputs.det], view_logits=None if view is None else view.float())


def _outputs_as_tensors(outputs: ModelOutputs) -> list[torch.Tensor]:
    """Every tensor a model returned (detection maps, then view logits), as float32."""
    outputs = float32_outputs(outputs)
    return list(outputs.det) + ([outputs.view_logits] if outputs.view_logits is not None else [])


@torch.no_grad()
def amp_agrees(model: torch.nn.Module, device: torch.device, dtype: str, imgsz: int = CHECK_IMAGE_SIZE,
               tolerance: float = CHECK_TOLERANCE) -> tuple[bool, float]:
    """YOLOv5-style AMP check: one FP32 and one autocast forward of a fixed input must agree.

    Some GPUs and drivers give NaN or garbage under float16; training then silently learns nothing.
    The input is a fixed smooth pattern (no random numbers are drawn), the model runs in eval mode on a
    copy (the run's BatchNorm statistics and weights are untouched). Returns (agree, the largest
    relative L2 difference over the outputs).
    """
    probe = copy.deepcopy(model).eval()
    side = torch.linspace(0, 6.28, imgsz, device=device)
    image = 0.5 + 0.25 * (torch.sin(side)[None, :] + torch.cos(2 * side)[:, None])
    x = image.expand(1, 3, imgsz, imgsz).contiguous()
    reference = _outputs_as_tensors(probe(x))
    with torch.autocast(device.type, dtype=AMP_DTYPES[dtype]):
        mixed = _outputs_as_tensors(probe(x))
    worst = 0.0
    for a, b in zip(reference, mixed):
        if not torch.isfinite(b).all():
            return False, float("inf")
        worst = max(worst, float((a - b).norm() / a.norm().clamp_min(1e-12)))
    return worst <= tolerance, worst


def resolve_precision(opt: argparse.Namespace, device: torch.device) -> None:
    """Set opt.amp and opt.amp_dtype to what the run uses on `device`; opt.yaml records these resolved values."""
    opt.amp = resolve_amp(getattr(opt, "amp", None), device)
    opt.amp_dtype = resolve_amp_dtype(getattr(opt, "amp_dtype", None), device)


def build_amp(opt: argparse.Namespace, device: torch.device, verdict: tuple[bool, float] | None = None) -> Amp:
    """The run's Amp from the resolved opt.amp / opt.amp_dtype and rank 0's `amp_agrees` verdict (None: unchecked).

    A failed check trains in FP32 with a warning, as YOLOv5 does, and sets opt.amp to False.
    """
    if not opt.amp:
        return Amp(enabled=False)
    if verdict is not None:
        agree, difference = verdict
        if not agree:
            LOGGER.warning(f"WARNING ⚠️ AMP check failed: {opt.amp_dtype} autocast differs from FP32 by "
                           f"{difference:.3g} (relative L2) on {device.type}; training in FP32")
            opt.amp = False
            return Amp(enabled=False)
        LOGGER.info(f"AMP: checks passed ✅ ({opt.amp_dtype} autocast within {difference:.2g} of FP32; gradient "
                    f"scaler on)")
    return Amp(enabled=True, device_type=device.type, dtype=opt.amp_dtype)
