"""DataLoaders: samplers (shuffled, sharded for DDP, aspect-grouped) and create_dataloader.

A batch is (images uint8 [B,3,H,W] RGB, targets float32 [N,6] = (image index, cls, cx, cy,
w, h) normalised, views long [B] with -1 = no view label, paths, shapes).
"""
from __future__ import annotations

import os
import random
from collections.abc import Sized
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, distributed

from utils.data.dataset import LoadImagesAndLabels
from utils.logger import LOGGER

PIN_MEMORY = torch.cuda.is_available()  # the default when the caller does not say which device the batches go to


def seed_worker(worker_id: int) -> None:
    """Give each worker's numpy and random generators a seed derived from torch's (reproducible)."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


class AspectBatchSampler(torch.utils.data.Sampler):
    """Shuffled batches of images that share one rectangular shape (--rect-shuffle).

    YOLOv5's --rect sorts the images by aspect ratio and turns shuffling off, so every epoch
    sees the same batches in the same order. Here each image keeps its own letterbox shape
    (longest side = imgsz, the other rounded up to the stride) and, every epoch, the images of
    each shape are shuffled, cut into batches, and the batches shuffled: no square padding and
    still a fresh order per epoch. The last batch of a shape may be smaller.
    """

    def __init__(self, shapes: np.ndarray, batch_size: int, seed: int = 0) -> None:
        self.batch_size, self.seed, self.epoch = int(batch_size), int(seed), 0
        keys = [tuple(int(v) for v in shape) for shape in shapes]
        self.groups: dict[tuple, list[int]] = {}
        for index, key in enumerate(keys):
            self.groups.setdefault(key, []).append(index)

    def set_epoch(self, epoch: int) -> None:
        """Order of the given epoch (the training loop calls this, so a resumed run repeats the order)."""
        self.epoch = int(epoch)

    def __iter__(self):
        rng = np.random.default_rng(self.seed + self.epoch)
        self.epoch += 1
        batches = []
        for key in sorted(self.groups):
            members = np.array(self.groups[key])[rng.permutation(len(self.groups[key]))]
            batches += [members[i:i + self.batch_size].tolist() for i in range(0, len(members), self.batch_size)]
        for b in rng.permutation(len(batches)):
            yield batches[b]

    def __len__(self) -> int:
        return sum(-(-len(m) // self.batch_size) for m in self.groups.values())


def train_sampler(dataset: Sized, shuffle: bool, seed: int, world_size: int = 1,
                  rank: int = 0) -> distributed.DistributedSampler:
    """One shuffling rule for one process and for N: a permutation seeded by seed + epoch (set_epoch).

    Rank r takes every N-th index of it, starting at r, so N processes with batch B/N see the same
    global batches as one process with batch B; and a resumed run sees each epoch's original order.
    """
    return distributed.DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=shuffle, seed=seed)


def create_dataloader(
    path: str | Path | list,
    imgsz: int,
    batch_size: int,
    stride: int,
    single_cls: bool = False,
    hyp: dict | None = None,
    augment: bool = False,
    cache: str | None = None,
    pad: float = 0.0,
    rect: bool = False,
    workers: int = 8,
    shuffle: bool = False,
    prefix: str = "",
    seed: int = 0,
    n_views: int | None = None,
    nc: int | None = None,
    rect_shuffle: bool = False,
    shard: bool = False,
    pin_memory: bool | None = None,
) -> tuple[DataLoader, LoadImagesAndLabels]:
    """A DataLoader over LoadImagesAndLabels; the same seed gives the same order and augmentations.

    shard: under DDP, give each rank its own share of the images (the training loader); a loader
    that rank 0 alone uses (validation) keeps every image. pin_memory: batches in page-locked memory,
    so `.to(cuda, non_blocking=True)` overlaps the copy with compute (True when they go to a GPU).
    """
    distributed_run = shard and torch.distributed.is_available() and torch.distributed.is_initialized()
    if rect_shuffle and distributed_run:
        LOGGER.warning(f"{prefix}WARNING ⚠️ --rect-shuffle is not supported with DDP yet, using square batches")
        rect_shuffle = False
    if rect and shuffle and not rect_shuffle:
        LOGGER.warning(f"{prefix}WARNING ⚠️ --rect is incompatible with DataLoader shuffle, setting shuffle=False")
        shuffle = False
    dataset = LoadImagesAndLabels(
        path, imgsz, batch_size, augment=augment, hyp=hyp, rect=rect, cache_images=cache,
        single_cls=single_cls, stride=int(stride), pad=pad, prefix=prefix, n_views=n_views, nc=nc,
        rect_shuffle=rect_shuffle,
    )
    batch_size = min(batch_size, len(dataset))
    processes_here = max(int(os.environ.get("LOCAL_WORLD_SIZE", 1)), 1)  # torchrun: the CPUs are shared
    n_workers = min(max((os.cpu_count() or 1) // processes_here, 1), batch_size if batch_size > 1 else 0, workers)
    rank = torch.distributed.get_rank() if distributed_run else 0
    generator = torch.Generator()
    generator.manual_seed(seed + rank)  # augmentations differ between ranks
    if rect_shuffle:  # the batch sampler decides batch size and order
        batching = {"batch_sampler": AspectBatchSampler(dataset.image_shapes, batch_size, seed)}
    elif shuffle or distributed_run:
        world = torch.distributed.get_world_size() if distributed_run else 1
        batching = {"batch_size": batch_size, "sampler": train_sampler(dataset, shuffle, seed, world, rank)}
    else:
        batching = {"batch_size": batch_size, "shuffle": False}
    loader = DataLoader(
        dataset,
        **batching,
        num_workers=n_workers,
        pin_memory=PIN_MEMORY if pin_memory is None else pin_memory,
        collate_fn=LoadImagesAndLabels.collate_fn,
        worker_init_fn=seed_worker,
        generator=generator,
        persistent_workers=n_workers > 0,
    )
    return loader, dataset
