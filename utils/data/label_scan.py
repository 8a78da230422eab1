"""The label scan: every image and label of a split checked once, the usable samples kept, the result cached.

The cache is plain arrays (np.load with allow_pickle=False), beside the labels folder or under
runs/.cache/ when the dataset folder is read-only.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from multiprocessing.pool import ThreadPool
from pathlib import Path

import numpy as np
from tqdm import tqdm

from utils.data.labels import img2label_paths, read_label_file, verify_image
from utils.logger import LOGGER
from utils.paths import ROOT

CACHE_VERSION = "yolomed-labels-1"  # bump when the scan rules change: old caches are then rebuilt
CACHE_FALLBACK_DIR = ROOT / "runs" / ".cache"  # used when the dataset folder is read-only
NUM_THREADS = min(8, os.cpu_count() or 1)


@dataclass
class ScanResult:
    """The usable samples of a split and what was wrong with the others."""

    img_files: list[str] = field(default_factory=list)
    label_files: list[str] = field(default_factory=list)
    labels: list[np.ndarray] = field(default_factory=list)  # float32 [n, 5] cls cx cy w h
    shapes: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.int64))  # (w, h) as YOLOv5
    views: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # -1 = no view label
    n_found: int = 0  # label file present (including empty ones)
    n_missing: int = 0  # no label file: background image
    n_empty: int = 0  # label file without boxes: background image
    n_corrupt: int = 0
    n_duplicates: int = 0
    messages: list[str] = field(default_factory=list)
    cache_path: str | None = None
    from_cache: bool = False

    @property
    def n_backgrounds(self) -> int:
        return self.n_missing + self.n_empty


def _scan_hash(img_files: list[str], label_files: list[str], nc, n_views, single_cls: bool) -> str:
    """Fingerprint of the inputs of a scan: paths, sizes and mtimes, and the parsing options."""
    digest = hashlib.sha256(f"{CACHE_VERSION}|{nc}|{n_views}|{bool(single_cls)}".encode())
    for file in (*img_files, *label_files):
        try:
            stat = os.stat(file)
            digest.update(f"{file}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
        except OSError:
            digest.update(f"{file}|-\n".encode())
    return digest.hexdigest()


def _is_writable_dir(folder: Path) -> bool:
    """Writable, and not marked read-only: root may write anywhere, but must not write there."""
    try:
        return folder.is_dir() and os.access(folder, os.W_OK) and bool(folder.stat().st_mode & 0o222)
    except OSError:
        return False


def _cache_locations(label_files: list[str]) -> tuple[Path, Path]:
    """(beside the labels folder, fallback under runs/.cache) for this split's scan cache.

    The fallback is keyed by the file list too, so subsets of one read-only folder (image
    lists, patient-grouped splits) keep their own caches instead of overwriting each other.
    """
    labels_dir = Path(label_files[0]).parent
    beside = labels_dir.with_suffix(".cache")
    key = hashlib.sha1("\n".join([str(labels_dir), *label_files]).encode()).hexdigest()[:16]
    return beside, CACHE_FALLBACK_DIR / f"{key}.cache"


def _save_cache(path: Path, result: ScanResult, scan_hash: str) -> None:
    """Plain arrays only (np.load with allow_pickle=False reads it), written atomically."""
    counts = [len(box) for box in result.labels]
    arrays = {
        "version": np.array(CACHE_VERSION),
        "hash": np.array(scan_hash),
        "img_files": np.array(result.img_files, dtype=str),
        "label_files": np.array(result.label_files, dtype=str),
        "boxes": np.concatenate(result.labels, 0) if result.labels else np.zeros((0, 5), np.float32),
        "box_counts": np.array(counts, dtype=np.int64),
        "shapes": result.shapes.astype(np.int64),
        "views": result.views.astype(np.int64),
        "counts": np.array(
            [result.n_found, result.n_missing, result.n_empty, result.n_corrupt, result.n_duplicates], np.int64
        ),
        "messages": np.array(result.messages, dtype=str),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    with open(temporary, "wb") as file:
        np.savez(file, **arrays)
    os.replace(temporary, path)


def _load_cache(path: Path, scan_hash: str) -> ScanResult | None:
    """The cached scan if it exists, is readable and matches `scan_hash`; else None."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            if str(data["version"]) != CACHE_VERSION or str(data["hash"]) != scan_hash:
                return None
            boxes = data["boxes"].astype(np.float32)
            splits = np.cumsum(data["box_counts"])[:-1]
            counts = [int(c) for c in data["counts"]]
            return ScanResult(
                img_files=[str(f) for f in data["img_files"]],
                label_files=[str(f) for f in data["label_files"]],
                labels=[b.reshape(-1, 5) for b in np.split(boxes, splits)] if len(data["box_counts"]) else [],
                shapes=data["shapes"].astype(np.int64).reshape(-1, 2),
                views=data["views"].astype(np.int64),
                n_found=counts[0], n_missing=counts[1], n_empty=counts[2], n_corrupt=counts[3],
                n_duplicates=counts[4],
                messages=[str(m) for m in data["messages"]],
                cache_path=str(path),
                from_cache=True,
            )
    except Exception as error:  # truncated, foreign or old-format file: rebuild it
        LOGGER.warning(f"WARNING ⚠️ ignoring unreadable cache {path}: {error}")
        return None


def _check_sample(args: tuple) -> tuple:
    """Worker: verify one image and parse its label file."""
    img_file, label_file, nc, n_views = args
    shape_hw, reason = verify_image(img_file)
    parsed = read_label_file(label_file, nc, n_views)
    return img_file, label_file, shape_hw, parsed, reason or parsed.corrupt


def _summary(prefix: str, where: Path, result: ScanResult) -> str:
    kept = len(result.img_files)
    return f"{prefix}Scanning {where}... {kept} images, {result.n_backgrounds} backgrounds, {result.n_corrupt} corrupt"


def _run_scan(img_files, label_files, nc, n_views, single_cls, prefix, labels_dir) -> ScanResult:
    result = ScanResult()
    shapes, views = [], []
    jobs = [(img, lbl, None if single_cls else nc, n_views) for img, lbl in zip(img_files, label_files)]
    with ThreadPool(NUM_THREADS) as pool:
        bar = tqdm(pool.imap(_check_sample, jobs), total=len(jobs), desc=f"{prefix}Scanning {labels_dir}...")
        for img_file, label_file, shape_hw, parsed, reason in bar:
            if reason:
                result.n_corrupt += 1
                result.messages.append(f"{img_file}: ignoring corrupt image/label: {reason}")
            else:
                boxes = parsed.boxes.copy()
                if single_cls and len(boxes):
                    boxes[:, 0] = 0
                result.img_files.append(img_file)
                result.label_files.append(label_file)
                result.labels.append(boxes)
                shapes.append((shape_hw[1], shape_hw[0]))
                views.append(parsed.view)
                result.n_found += parsed.label_found
                result.n_missing += not parsed.label_found
                result.n_empty += parsed.label_found and not len(boxes)
                result.n_duplicates += parsed.duplicates_removed
                result.messages.extend(parsed.warnings)
            bar.set_description(_summary(prefix, labels_dir, result), refresh=False)
        bar.close()
    result.shapes = np.array(shapes, dtype=np.int64).reshape(-1, 2)
    result.views = np.array(views, dtype=np.int64)
    return result


def scan_labels(
    img_files: list[str],
    nc: int | None = None,
    n_views: int | None = None,
    single_cls: bool = False,
    prefix: str = "",
) -> ScanResult:
    """Check every image and label once (or reuse a matching cache) and keep the usable samples.

    The cache goes beside the labels folder (labels.cache) when that folder is writable,
    else under runs/.cache/. Corrupt samples are logged as
    `{image}: ignoring corrupt image/label: {reason}` and left out. Never raises for bad files.
    """
    img_files = [str(f) for f in img_files]
    label_files = img2label_paths(img_files)
    if not img_files:
        return ScanResult()
    labels_dir = Path(label_files[0]).parent
    scan_hash = _scan_hash(img_files, label_files, nc, n_views, single_cls)
    beside, fallback = _cache_locations(label_files)

    result = None
    for candidate in (beside, fallback):
        result = _load_cache(candidate, scan_hash)
        if result is not None:
            break
    if result is None:
        result = _run_scan(img_files, label_files, nc, n_views, single_cls, prefix, labels_dir)
        target = beside if _is_writable_dir(beside.parent) else fallback
        try:
            _save_cache(target, result, scan_hash)
            result.cache_path = str(target)
            if target == fallback:
                LOGGER.info(f"{prefix}{beside.parent} is read-only, label cache saved to {target}")
            else:
                LOGGER.info(f"{prefix}New cache created: {target}")
        except OSError as error:
            LOGGER.warning(f"{prefix}WARNING ⚠️ cache not saved to {target}: {error}")

    for message in result.messages:
        LOGGER.warning(f"{prefix}WARNING ⚠️ {message}")
    LOGGER.info(_summary(prefix, Path(result.cache_path) if result.from_cache else labels_dir, result))
    if result.img_files and result.n_found == 0:
        LOGGER.warning(f"{prefix}WARNING ⚠️ no label files found for {labels_dir}: training will learn nothing")
    return result
