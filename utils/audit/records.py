"""Every image of every split read once: its labels, its size and its signature.

The audit only reads: images are decoded from their bytes and label files parsed with the training
loader's own rules (utils.data.labels), so the audit sees what training sees.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from multiprocessing.pool import ThreadPool
from pathlib import Path

import cv2
import numpy as np

from utils.audit.signatures import SIGNATURE_SIZE, standardise, thumbnail
from utils.data.labels import img2label_paths, read_label_file

SPLIT_ORDER = ("train", "val", "test")  # the order copies are kept in: the first split keeps its copy


@dataclass
class Record:
    """One image as listed by one split (the same file listed by two splits gives two records)."""

    index: int
    path: str  # absolute
    split: str
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 5), np.float32))  # cls cx cy w h, normalised
    view: int = -1  # index into cls_names, -1 = no view label
    shape: tuple[int, int] | None = None  # (h, w); None: the image could not be decoded
    label_problem: str | None = None  # why the label file was rejected (training skips the image)
    label_found: bool = True

    @property
    def name(self) -> str:
        return Path(self.path).name

    @property
    def order(self) -> tuple[int, str]:
        """Sort key: earlier split first, then the path; the first of a set of copies is the one kept."""
        return SPLIT_ORDER.index(self.split) if self.split in SPLIT_ORDER else len(SPLIT_ORDER), self.path


@dataclass
class AuditData:
    """What every check reads: the records, their signatures and the dataset's class names."""

    records: list[Record]
    signatures: np.ndarray  # [N, w*h] standardised, row i = records[i]
    names: dict[int, str]  # box classes
    cls_names: list[str] | None  # views, None without a view task
    root: str | None = None  # the dataset's `path`, for shorter file names in the outputs

    def splits(self) -> dict[str, list[str]]:
        """{split: image paths} in split order."""
        result: dict[str, list[str]] = {}
        for record in self.records:
            result.setdefault(record.split, []).append(record.path)
        return result


def _decode(path: str, size: tuple[int, int]) -> tuple[np.ndarray | None, tuple[int, int] | None]:
    """(signature thumbnail, (h, w)) of one image, or (None, None) when it cannot be decoded."""
    try:
        raw = np.fromfile(path, np.uint8)
    except OSError:
        return None, None
    grey = cv2.imdecode(raw, cv2.IMREAD_GRAYSCALE) if raw.size else None
    if grey is None:
        return None, None
    return thumbnail(grey, size), grey.shape[:2]


def load_records(
    splits: dict[str, list[str]], nc: int, n_views: int | None, size: tuple[int, int] = SIGNATURE_SIZE,
    workers: int | None = None,
) -> tuple[list[Record], np.ndarray]:
    """Records in split order (train, val, test; paths sorted) and their standardised signatures [N, w*h].

    A file listed by two splits is decoded once. An unreadable image gets shape None and an all-zero
    signature (it then matches nothing).
    """
    unique = sorted({path for paths in splits.values() for path in paths})
    workers = workers or min(4, os.cpu_count() or 1)
    cv2.setNumThreads(1)  # the pool already runs one decode per core
    with ThreadPool(workers) as pool:  # cv2 releases the GIL while it decodes
        decoded = dict(zip(unique, pool.starmap(_decode, [(p, size) for p in unique])))
    records: list[Record] = []
    vectors = []
    ordered = sorted(splits, key=lambda s: SPLIT_ORDER.index(s) if s in SPLIT_ORDER else len(SPLIT_ORDER))
    for split in ordered:
        paths = sorted(splits[split])
        for path, label_file in zip(paths, img2label_paths(paths)):
            parsed = read_label_file(label_file, nc=nc, n_views=n_views)
            vector, shape = decoded[path]
            records.append(Record(index=len(records), path=path, split=split, boxes=parsed.boxes, view=parsed.view,
                                  shape=shape, label_problem=parsed.corrupt, label_found=parsed.label_found))
            vectors.append(vector if vector is not None else np.zeros(size[0] * size[1], np.float32))
    signatures = standardise(np.stack(vectors)) if vectors else np.zeros((0, size[0] * size[1]))
    return records, signatures
