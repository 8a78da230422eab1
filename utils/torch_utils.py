"""Small PyTorch helpers shared by train/val/detect: devices, seeds, optimizer, EMA, fusion, schedules."""
from __future__ import annotations

import math
import os
import random
import time
from copy import deepcopy
from typing import Any, Callable, Iterable

import numpy as np
import torch
from torch import nn

from utils.cli import OptionError
from utils.logger import LOGGER

# Order of the optimizer's parameter groups built by `smart_optimizer`; x/lr0 in results.csv is group 0.
PARAM_GROUP_NAMES = ("bias", "norm_weight", "weight")

_OPTIMIZER_NAMES = {"sgd": "SGD", "adam": "Adam", "adamw": "AdamW"}


def parse_device(device: str = "", cuda_count: int = 0) -> str | list[int]:
    """What a --device flag asks for: 'cpu', 'mps' or a list of CUDA indices, checked against cuda_count.

    '' means every visible GPU, or the CPU when there is none. Pure, so the rules are tested without
    GPUs; a bad flag raises OptionError naming the value.
    """
    flag = str(device).strip().lower().replace("cuda:", "").replace(" ", "")
    if flag in ("cpu", "mps"):
        return flag
    if flag in ("", "cuda"):
        if cuda_count == 0:
            if flag == "cuda":
                raise OptionError(f"Invalid CUDA --device '{device}' requested: CUDA is not available, use --device cpu")
            return "cpu"
        return list(range(cuda_count))
    try:
        indices = [int(part) for part in flag.split(",") if part != ""]
    except ValueError:
        raise OptionError(f"Invalid --device '{device}': expected '', 'cpu' or CUDA indices like '0' or '0,1'") from None
    if not indices:
        raise OptionError(f"Invalid --device '{device}': expected '', 'cpu' or CUDA indices like '0' or '0,1'")
    if any(i < 0 or i >= cuda_count for i in indices):
        raise OptionError(
            f"Invalid CUDA --device '{device}' requested, {cuda_count} CUDA device(s) visible; "
            "use --device cpu or valid CUDA indices"
        )
    if len(set(indices)) != len(indices):
        raise OptionError(f"Invalid --device '{device}': a GPU is listed twice")
    return indices


def visible_cuda_devices() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def select_device(device: str = "", batch_size: int = 0) -> torch.device:
    """Turn a --device flag ('', 'cpu', '0', '0,1', 'cuda:0') into a torch.device, failing clearly.

    With several GPUs listed the first is returned (multi-GPU training is driven elsewhere);
    the batch size must then split evenly over them.
    """
    version = f"YOLOv5-compatible 🚀 torch-{torch.__version__}"
    choice = parse_device(device, visible_cuda_devices())
    if choice == "cpu":
        LOGGER.info(f"{version} CPU")
        return torch.device("cpu")
    if choice == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise OptionError(f"Invalid --device '{device}': MPS is not available, use --device cpu")
        LOGGER.info(f"{version} MPS")
        return torch.device("mps")
    if str(device).strip().lower() in ("", "cuda"):
        choice = choice[:1]  # YOLOv5: no flag means the first GPU
    if len(choice) > 1 and batch_size > 0 and batch_size % len(choice) != 0:
        raise OptionError(f"--batch-size {batch_size} is not a multiple of the {len(choice)} GPUs in --device '{device}'")
    descriptions = []
    for i in choice:
        props = torch.cuda.get_device_properties(i)
        descriptions.append(f"CUDA:{i} ({props.name}, {props.total_memory / (1 << 20):.0f}MiB)")
    LOGGER.info(f"{version} " + ", ".join(descriptions))
    return torch.device(f"cuda:{choice[0]}")


def init_seeds(seed: int = 0, deterministic: bool = False) -> None:
    """Seed python, numpy and torch; optionally ask torch for deterministic kernels (warn where none exist)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)
    if deterministic:
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = ":4096:8"
        os.environ["PYTHONHASHSEED"] = str(seed)
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    torch.backends.cudnn.deterministic = deterministic
    if deterministic:
        torch.backends.cudnn.benchmark = False


def set_cudnn_benchmark(device: torch.device, fixed_shapes: bool, deterministic: bool = False) -> bool:
    """cuDNN autotuning on CUDA when every training batch has one shape (not --rect / --rect-shuffle).

    Autotuning times the convolution algorithms once per input shape and keeps the fastest: a gain when
    the shape repeats, a cost per new shape (rectangular batches), and it may pick non-deterministic
    kernels (--deterministic). Returns the setting; nothing changes off CUDA.
    """
    if device.type != "cuda":
        return False
    torch.backends.cudnn.benchmark = bool(fixed_shapes and not deterministic)
    return torch.backends.cudnn.benchmark


def de_parallel(model: nn.Module) -> nn.Module:
    """The bare model inside a DataParallel / DistributedDataParallel wrapper (or the model itself)."""
    wrappers = (nn.DataParallel, nn.parallel.DistributedDataParallel)
    return model.module if isinstance(model, wrappers) else model


def time_sync() -> float:
    """Wall time after waiting for queued CUDA work, so timings measure the work itself."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.time()


def count_parameters(model: nn.Module) -> int:
    """Total number of parameter elements (trainable or not)."""
    return sum(p.numel() for p in model.parameters())


def fuse_conv_and_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A single Conv2d equal to conv followed by bn in eval mode (BN folded into weight and bias)."""
    fused = nn.Conv2d(
        conv.in_channels,
        conv.out_channels,
        kernel_size=conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        dilation=conv.dilation,
        groups=conv.groups,
        bias=True,
    ).to(device=conv.weight.device)
    with torch.no_grad():
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)  # per output channel
        fused.weight.copy_(conv.weight * scale.view(-1, 1, 1, 1))
        conv_bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
        fused.bias.copy_((conv_bias - bn.running_mean) * scale + bn.bias)
    fused.requires_grad_(False)
    return fused.to(dtype=conv.weight.dtype)


def copy_attr(a: Any, b: Any, include: Iterable[str] = (), exclude: Iterable[str] = ()) -> None:
    """Copy b's public attributes onto a (only `include` ones if given, never `exclude` ones)."""
    include, exclude = tuple(include), tuple(exclude)
    for key, value in b.__dict__.items():
        if (include and key not in include) or key.startswith("_") or key in exclude:
            continue
        setattr(a, key, value)


def smart_optimizer(
    model: nn.Module, name: str = "SGD", lr: float = 0.001, momentum: float = 0.9, decay: float = 1e-5
) -> torch.optim.Optimizer:
    """Optimizer with groups (biases, norm weights, other weights); only the last one gets weight decay.

    Group order follows PARAM_GROUP_NAMES. Every parameter lands in exactly one group; any parameter
    that is neither a bias nor a norm-layer weight counts as an "other weight".
    """
    canonical = _OPTIMIZER_NAMES.get(str(name).lower())
    if canonical is None:
        raise ValueError(f"Unknown --optimizer '{name}': choose one of {', '.join(_OPTIMIZER_NAMES.values())}")
    norm_types = tuple(v for k, v in vars(nn).items() if "Norm" in k and isinstance(v, type))
    biases: list[nn.Parameter] = []
    norm_weights: list[nn.Parameter] = []
    weights: list[nn.Parameter] = []
    seen: set[int] = set()
    for module in model.modules():
        for param_name, param in module.named_parameters(recurse=False):
            if id(param) in seen:
                continue
            seen.add(id(param))
            if param_name == "bias":
                biases.append(param)
            elif param_name == "weight" and isinstance(module, norm_types):
                norm_weights.append(param)
            else:
                weights.append(param)
    groups = [
        {"params": biases, "weight_decay": 0.0},
        {"params": norm_weights, "weight_decay": 0.0},
        {"params": weights, "weight_decay": decay},
    ]
    if canonical == "SGD":
        optimizer: torch.optim.Optimizer = torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=momentum > 0)
    elif canonical == "Adam":
        optimizer = torch.optim.Adam(groups, lr=lr, betas=(momentum, 0.999))
    else:
        optimizer = torch.optim.AdamW(groups, lr=lr, betas=(momentum, 0.999))
    LOGGER.info(
        f"optimizer: {canonical}(lr={lr}) with parameter groups "
        f"{len(norm_weights)} weight(decay=0.0), {len(weights)} weight(decay={decay}), {len(biases)} bias"
    )
    return optimizer


class ModelEMA:
    """Exponential moving average of a model's state, with a decay that ramps up over the first updates.

    decay(updates) = decay * (1 - exp(-updates / tau)): early updates follow the model closely.
    """

    def __init__(self, model: nn.Module, decay: float = 0.9999, tau: float = 2000, updates: int = 0) -> None:
        self.ema = deepcopy(de_parallel(model)).eval()
        self.ema.requires_grad_(False)
        self.updates = updates
        self.decay_max = decay
        self.tau = tau

    def decay(self, updates: int) -> float:
        """Weight kept from the EMA at a given update count."""
        return self.decay_max * (1 - math.exp(-updates / self.tau))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move every floating-point entry of the EMA state toward the model's."""
        self.updates += 1
        d = self.decay(self.updates)
        model_state = de_parallel(model).state_dict()
        for key, ema_value in self.ema.state_dict().items():
            if ema_value.dtype.is_floating_point:
                ema_value.mul_(d).add_(model_state[key].detach(), alpha=1 - d)

    def update_attr(self, model: nn.Module, include: Iterable[str] = (), exclude: Iterable[str] = ("process_group", "reducer")) -> None:
        """Copy plain attributes (names, yaml, ...) from the model onto the EMA."""
        copy_attr(self.ema, de_parallel(model), include, exclude)

    def state_dict(self) -> dict[str, Any]:
        """Plain-data state: EMA weights plus the update count that drives the decay ramp."""
        return {"ema": self.ema.state_dict(), "updates": self.updates, "decay": self.decay_max, "tau": self.tau}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.ema.load_state_dict(state["ema"])
        self.updates = int(state["updates"])
        self.decay_max = float(state.get("decay", self.decay_max))
        self.tau = float(state.get("tau", self.tau))


def one_cycle(y1: float = 0.0, y2: float = 1.0, steps: int = 100) -> Callable[[float], float]:
    """Cosine ramp from y1 (step 0) to y2 (step `steps`); the --cos-lr schedule factor."""
    return lambda x: ((1 - math.cos(x * math.pi / steps)) / 2) * (y2 - y1) + y1


def linear_lr(lrf: float, epochs: int) -> Callable[[float], float]:
    """Linear schedule factor: 1 at epoch 0 down to lrf at epoch `epochs`."""
    return lambda x: (1 - x / epochs) * (1.0 - lrf) + lrf
