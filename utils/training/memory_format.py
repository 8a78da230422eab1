"""NHWC (channels_last) or NCHW for training: chosen by timing both on the device in use.

The memory format changes how convolutions run, not what they compute (up to float rounding), so it is a
lever that does not change what is learned; which one is faster depends on the device and its kernels
(oneDNN on CPUs, cuDNN on GPUs). --channels-last / --no-channels-last choose it by hand.
"""
from __future__ import annotations

import copy
import time
from typing import NamedTuple

import torch

from utils.logger import LOGGER
from utils.training.amp import FP32, Amp

PROBE_BATCH = 2  # images per timed step: the ratio of the two formats, not the absolute time, is what counts
PROBE_REPEATS = 3  # timed steps per format, after one warm-up each; the fastest counts (noise only adds time)
REQUIRED_GAIN = 0.95  # NHWC must be at least 5 % faster to be chosen


class MemoryFormatChoice(NamedTuple):
    channels_last: bool
    nchw_ms: float | None  # None when chosen by hand
    nhwc_ms: float | None


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _step_ms(model: torch.nn.Module, images: torch.Tensor, amp: Amp = FP32) -> float:
    """Milliseconds of one forward and backward pass (a stand-in loss over every output), in the run's precision."""
    _sync(images.device)
    start = time.perf_counter()
    with amp.autocast():
        outputs = model(images)
    loss = sum(level.float().mean() for level in outputs.det)
    if outputs.view_logits is not None:
        loss = loss + outputs.view_logits.float().mean()
    loss.backward()
    _sync(images.device)
    return (time.perf_counter() - start) * 1e3


def time_memory_formats(model: torch.nn.Module, imgsz: int, device: torch.device,
                        amp: Amp = FP32) -> tuple[float, float]:
    """(NCHW ms, NHWC ms): the fastest of PROBE_REPEATS forward+backward steps each, formats alternating.

    Under AMP the steps run in autocast, as training will (tensor-core kernels often prefer NHWC).

    Runs on a copy of the model with the random state restored, so the run itself is untouched
    (BatchNorm statistics, dropout draws and gradients of the real model stay as they were).
    """
    probe = copy.deepcopy(model).train()
    images = torch.full((PROBE_BATCH, 3, imgsz, imgsz), 0.5, device=device)
    times: dict[bool, list[float]] = {False: [], True: []}
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        for round_index in range(PROBE_REPEATS + 1):
            for nhwc in (False, True):
                memory_format = torch.channels_last if nhwc else torch.contiguous_format
                probe.to(memory_format=memory_format)
                elapsed = _step_ms(probe, images.contiguous(memory_format=memory_format), amp)
                probe.zero_grad(set_to_none=True)
                if round_index:  # the first round warms both formats up
                    times[nhwc].append(elapsed)
    return min(times[False]), min(times[True])


def choose_memory_format(requested: bool | None, model: torch.nn.Module, imgsz: int,
                         device: torch.device, amp: Amp = FP32) -> MemoryFormatChoice:
    """--channels-last (True), --no-channels-last (False), or None: time both and take NHWC if clearly faster."""
    if requested is not None:
        return MemoryFormatChoice(bool(requested), None, None)
    nchw_ms, nhwc_ms = time_memory_formats(model, imgsz, device, amp)
    channels_last = nhwc_ms <= REQUIRED_GAIN * nchw_ms
    LOGGER.info(f"Memory format: NHWC {nhwc_ms:.0f} ms vs NCHW {nchw_ms:.0f} ms per forward+backward of "
                f"{PROBE_BATCH} images at {imgsz} on {device.type}: training in {'NHWC' if channels_last else 'NCHW'} "
                f"(--channels-last / --no-channels-last to choose)")
    return MemoryFormatChoice(channels_last, round(nchw_ms, 2), round(nhwc_ms, 2))
