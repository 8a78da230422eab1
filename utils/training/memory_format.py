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

PROBE_BATCH = 1  # images per timed step: the ratio of the two formats, not the absolute time, is what counts
PROBE_REPEATS = 3  # timed steps per format, after one warm-up each; the fastest counts (noise only adds time)
TIE_BAND = 0.05  # timings within 5 % of each other are a tie: the device's usual format wins (stable choices)
NHWC_WHEN_TIED = {"cpu": True}  # oneDNN's preferred layout on CPUs; elsewhere NCHW, YOLOv5's format


class MemoryFormatChoice(NamedTuple):
    channels_last: bool
    nchw_ms: float | None  # None when chosen by hand
    nhwc_ms: float | None


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _step_ms(model: torch.nn.Module, images: torch.Tensor, amp: Amp = FP32) -> float:
    """Milliseconds of one forward and backward pass (a stand-in loss over every output), in the run's precision.

    On a CPU this is the process's CPU time, measured on one thread: other programs sharing the
    machine stretch wall time by far more than they change the work done, which made wall-time
    choices flip on a busy machine (measured: 3166 vs 2774 ms under load, 118 vs 145 ms idle).
    On a GPU it is wall time between synchronisations.
    """
    cpu = images.device.type == "cpu"
    clock = time.process_time if cpu else time.perf_counter
    _sync(images.device)
    start = clock()
    with amp.autocast():
        outputs = model(images)
    loss = sum(level.float().mean() for level in outputs.det)
    if outputs.view_logits is not None:
        loss = loss + outputs.view_logits.float().mean()
    loss.backward()
    _sync(images.device)
    return (clock() - start) * 1e3


def time_memory_formats(model: torch.nn.Module, imgsz: int, device: torch.device,
                        amp: Amp = FP32) -> tuple[float, float]:
    """(NCHW ms, NHWC ms): the fastest of PROBE_REPEATS forward+backward steps each, formats alternating (on a
    CPU: CPU time on one thread, see _step_ms). Under AMP the steps run in autocast, as training will
    (tensor-core kernels often prefer NHWC).

    Runs on a copy of the model with the random state restored, so the run itself is untouched
    (BatchNorm statistics, dropout draws and gradients of the real model stay as they were).
    """
    probe = copy.deepcopy(model).train()
    images = torch.full((PROBE_BATCH, 3, imgsz, imgsz), 0.5, device=device)
    times: dict[bool, list[float]] = {False: [], True: []}
    threads = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(1)  # CPU time of one thread: no spin-waiting threads, little noise from other programs
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            for round_index in range(PROBE_REPEATS + 1):
                for nhwc in (False, True):
                    memory_format = torch.channels_last if nhwc else torch.contiguous_format
                    probe.to(memory_format=memory_format)
                    elapsed = _step_ms(probe, images.contiguous(memory_format=memory_format), amp)
                    probe.zero_grad(set_to_none=True)
                    if round_index:  # the first round warms both formats up
                        times[nhwc].append(elapsed)
    finally:
        torch.set_num_threads(threads)
    return min(times[False]), min(times[True])


def choose_memory_format(requested: bool | None, model: torch.nn.Module, imgsz: int,
                         device: torch.device, amp: Amp = FP32, deterministic: bool = False) -> MemoryFormatChoice:
    """--channels-last (True), --no-channels-last (False), or None: time both and take the clearly faster one;
    a tie (within TIE_BAND) keeps the device's usual format, so a noisy machine does not flip the choice.

    deterministic (--deterministic): no timing, the device's usual format. The two formats round differently,
    and a timed choice can differ between two runs of the same command on a busy machine.
    """
    if requested is not None:
        return MemoryFormatChoice(bool(requested), None, None)
    if deterministic:
        channels_last = NHWC_WHEN_TIED.get(device.type, False)
        LOGGER.info(f"Memory format: {'NHWC' if channels_last else 'NCHW'}, the usual format on {device.type}, not "
                    f"timed under --deterministic (a timed choice could differ between runs)")
        return MemoryFormatChoice(channels_last, None, None)
    nchw_ms, nhwc_ms = time_memory_formats(model, imgsz, device, amp)
    ratio = nhwc_ms / nchw_ms
    tied = abs(ratio - 1) <= TIE_BAND
    channels_last = NHWC_WHEN_TIED.get(device.type, False) if tied else ratio < 1
    clock = "CPU time on one thread" if device.type == "cpu" else "wall time"
    LOGGER.info(f"Memory format: NHWC {nhwc_ms:.0f} ms vs NCHW {nchw_ms:.0f} ms ({clock}) per forward+backward of "
                f"{PROBE_BATCH} image(s) at {imgsz} on {device.type}: training in "
                f"{'NHWC' if channels_last else 'NCHW'}{' (a tie: the usual format here)' if tied else ''} "
                f"(--channels-last / --no-channels-last to choose)")
    return MemoryFormatChoice(channels_last, round(nchw_ms, 2), round(nhwc_ms, 2))
