"""Multi-process training with PyTorch's own engine (torchrun + DistributedDataParallel).

    torchrun --nproc_per_node 2 train.py --data data/med.yaml --batch-size 32 ...

torchrun sets RANK, LOCAL_RANK and WORLD_SIZE; without them `DistContext` says "one process"
and every helper here is a no-op, so the single-process path pays nothing. Gloo runs on CPUs,
NCCL on CUDA. As in YOLOv5, --batch-size is the total over all processes and only rank 0
writes files, validates and logs; the other ranks train and wait.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Mapping

import torch
import torch.distributed as dist

from utils.cli import OptionError
from utils.logger import LOGGER
from utils.torch_utils import parse_device, visible_cuda_devices

# Rank 0 validates and saves between epochs while the others wait in the next all-reduce; a long
# validation must not trip the collective timeout (YOLOv5 allows 3 hours too).
COLLECTIVE_TIMEOUT = timedelta(hours=3)


@dataclass(frozen=True)
class DistContext:
    """Who this process is: rank among world_size processes (local_rank on its machine, -1 = no DDP)."""

    rank: int = 0
    local_rank: int = -1
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 (or the only process): the one that writes files and logs."""
        return self.rank == 0


def context_from_env(env: Mapping[str, str] | None = None) -> DistContext:
    """The process's place in a torchrun job, read from RANK / LOCAL_RANK / WORLD_SIZE."""
    env = os.environ if env is None else env
    try:
        world_size = int(env.get("WORLD_SIZE", 1))
        rank = int(env.get("RANK", 0))
        local_rank = int(env.get("LOCAL_RANK", -1))
    except ValueError as e:
        raise SystemExit(f"torchrun environment: {e} (RANK, LOCAL_RANK and WORLD_SIZE must be integers)") from None
    if world_size < 1 or not 0 <= rank < world_size:
        raise SystemExit(f"torchrun environment: RANK={rank} is not in 0..WORLD_SIZE-1 (WORLD_SIZE={world_size})")
    return DistContext(rank=rank, local_rank=local_rank if world_size > 1 else -1, world_size=world_size)


def per_rank_batch_size(total: int, ctx: DistContext) -> int:
    """--batch-size is the total over all processes (YOLOv5); each rank loads total / world_size."""
    if total % ctx.world_size:
        raise SystemExit(f"--batch-size {total} must be a multiple of WORLD_SIZE {ctx.world_size}")
    return total // ctx.world_size


def rank_device(device_flag: str, local_rank: int, cuda_count: int) -> torch.device:
    """This rank's device: the LOCAL_RANK-th GPU that --device lists (every GPU for ''), or the CPU.

    As in YOLOv5, `torchrun --nproc_per_node 2 train.py --device 2,3` trains on GPUs 2 and 3, not
    0 and 1, which on a shared machine may be somebody else's. Pure, so it is tested without GPUs.
    """
    choice = parse_device(device_flag, cuda_count)
    if choice == "cpu":
        return torch.device("cpu")
    if choice == "mps":
        raise OptionError(f"Invalid --device '{device_flag}' for torchrun: DDP runs on CUDA (NCCL) or the CPU (gloo)")
    if local_rank >= len(choice):
        listed = f"--device '{device_flag}' lists" if str(device_flag).strip() else "this machine has"
        raise OptionError(f"LOCAL_RANK {local_rank} has no GPU: {listed} {len(choice)}; "
                          f"use --nproc_per_node {len(choice)} or list more GPUs")
    return torch.device("cuda", choice[local_rank])


def setup_distributed(ctx: DistContext, device_flag: str, batch_size: int) -> torch.device:
    """Join the process group (NCCL on a CUDA device, gloo otherwise) and return this rank's device.

    On non-main ranks the logger keeps warnings only, so a run prints one log, not one per process.
    """
    per_rank_batch_size(batch_size, ctx)
    if not ctx.is_main:
        LOGGER.setLevel(logging.WARNING)
    device = rank_device(device_flag, max(ctx.local_rank, 0), visible_cuda_devices())
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=COLLECTIVE_TIMEOUT)
    LOGGER.info(f"DDP: {ctx.world_size} processes, backend {dist.get_backend()}, rank 0 on {device}, "
                f"batch {batch_size // ctx.world_size} per process")
    return device


def cleanup_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _collective_device() -> torch.device:
    """NCCL reduces CUDA tensors only; gloo reduces CPU tensors."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """The element-wise sum of `tensor` over all ranks (a new tensor on tensor's device; itself in one process)."""
    if not is_distributed():
        return tensor
    work = tensor.detach().to(_collective_device(), copy=True)
    dist.all_reduce(work, op=dist.ReduceOp.SUM)
    return work.to(tensor.device)


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """The element-wise mean of `tensor` over all ranks."""
    if not is_distributed():
        return tensor
    return all_reduce_sum(tensor) / dist.get_world_size()


def any_rank(flag: bool) -> bool:
    """True when `flag` is true on any rank; every rank gets the same answer (e.g. 'skip this step')."""
    if not is_distributed():
        return bool(flag)
    return bool(all_reduce_sum(torch.tensor([1.0 if flag else 0.0])).item() > 0)


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank src's `obj` on every rank (picklable objects: a run folder, a stop decision)."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src, device=_collective_device())
    return box[0]


def check_ranks_agree(tensor: torch.Tensor, what: str) -> None:
    """Raise when ranks hold different values of something that must be identical (weights, task weights).

    A silent divergence would make rank 0's checkpoint describe a model the other ranks are not
    training; this turns it into an error at the epoch where it happens.
    """
    if not is_distributed():
        return
    local = tensor.detach().double().reshape(-1).to(_collective_device())
    gathered = [torch.empty_like(local) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, local)
    for rank, other in enumerate(gathered[1:], start=1):
        if not torch.equal(other, gathered[0]):
            diff = (other - gathered[0]).abs().max().item()
            raise RuntimeError(f"DDP ranks disagree on {what}: rank {rank} differs from rank 0 by up to {diff:.3g}")


def parameter_checksum(module: torch.nn.Module) -> torch.Tensor:
    """Two numbers that change with any parameter: the sum and the sum of squares of all parameters."""
    with torch.no_grad():
        flat = [p.detach().double().reshape(-1) for p in module.parameters()]
        values = torch.cat(flat) if flat else torch.zeros(1, dtype=torch.float64)
        return torch.stack((values.sum(), values.pow(2).sum()))


def sync_batchnorm(model: torch.nn.Module, requested: bool, ctx: DistContext, device: torch.device) -> torch.nn.Module:
    """--sync-bn: BatchNorm statistics over the whole global batch instead of each rank's share.

    PyTorch's SyncBatchNorm runs on CUDA only (DDP refuses it on CPU), so elsewhere the flag is
    reported and ignored, and each rank normalises over its own batch / world_size images.
    """
    if not requested:
        return model
    if not ctx.enabled or device.type != "cuda":
        why = "it needs torchrun with 2+ processes" if not ctx.enabled else "SyncBatchNorm runs on CUDA only"
        LOGGER.warning(f"WARNING ⚠️ --sync-bn ignored: {why}")
        return model
    LOGGER.info("Using SyncBatchNorm()")
    return torch.nn.SyncBatchNorm.convert_sync_batchnorm(model).to(device)


def wrap_distributed(model: torch.nn.Module, ctx: DistContext, device: torch.device) -> torch.nn.Module:
    """The module the training forward pass runs through: DDP under torchrun, the model itself otherwise.

    Wrapping copies rank 0's parameters and buffers (anchors included) to every rank, so each
    rank may initialise with its own seed; the optimizer, EMA, loss and checkpoints keep using
    the bare model.
    """
    if not ctx.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids, output_device=ids[0] if ids else None)
