"""Image discovery, label scanning (with a cache), the training/validation dataset, batching,
and the --source iterator for detect.py.

A batch is (images uint8 [B,3,H,W] RGB, targets float32 [N,6] = (image index, cls, cx, cy,
w, h) normalised, views long [B] with -1 = no view label, paths, shapes).
"""
from __future__ import annotations

import glob
import hashlib
import os
import random
from collections.abc import Sized
from dataclasses import dataclass, field
from multiprocessing.pool import ThreadPool
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, distributed
from tqdm import tqdm

from utils.augmentations import augment_hsv, letterbox, mixup, random_perspective
from utils.boxes import xywhn2xyxy, xyxy2xywhn
from utils.labels import IMAGE_SUFFIXES, img2label_paths, read_label_file, verify_image
from utils.logger import LOGGER
from utils.paths import ROOT

IMG_FORMATS = IMAGE_SUFFIXES
VID_FORMATS = ("asf", "avi", "gif", "m4v", "mkv", "mov", "mp4", "mpeg", "mpg", "ts", "wmv")
CACHE_VERSION = "yolomed-labels-1"  # bump when the scan rules change: old caches are then rebuilt
CACHE_FALLBACK_DIR = ROOT / "runs" / ".cache"  # used when the dataset folder is read-only
NUM_THREADS = min(8, os.cpu_count() or 1)
PIN_MEMORY = torch.cuda.is_available()

# Augmentation settings used when a dataset is built with augment=True and an incomplete hyp
# (the values of hyp.scratch-low.yaml).
DEFAULT_AUG_HYP = {
    "hsv_h": 0.015, "hsv_s": 0.7, "hsv_v": 0.4,
    "degrees": 0.0, "translate": 0.1, "scale": 0.5, "shear": 0.0, "perspective": 0.0,
    "flipud": 0.0, "fliplr": 0.5, "mosaic": 1.0, "mixup": 0.0,
}


# ----------------------------------------------------------------------------- discovery

def _suffix(path: str) -> str:
    return os.path.splitext(path)[1][1:].lower()


def _expand_source(source: str | Path | list | tuple) -> list[str]:
    """All files named by a folder (recursive), a .txt list, a glob, a file, or a list of these."""
    if isinstance(source, (list, tuple)):
        return [f for item in source for f in _expand_source(item)]
    text = str(source)
    if any(char in text for char in "*?["):
        return sorted(glob.glob(text, recursive=True))
    path = Path(os.path.abspath(text))  # absolute, but symlinked files keep their own names
    if path.is_dir():
        return sorted(str(p) for p in path.rglob("*") if p.is_file())
    if path.is_file() and path.suffix.lower() == ".txt":  # one image path per line
        base = str(path.parent)
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        return [base + line[1:] if line.startswith("./") else line for line in lines]
    if path.is_file():
        return [str(path)]
    raise FileNotFoundError(f"{text} does not exist")


def find_images(path: str | Path | list) -> list[str]:
    """Sorted image files under `path`; raises FileNotFoundError naming what was missing or empty."""
    images = sorted(f for f in _expand_source(path) if _suffix(f) in IMG_FORMATS)
    if not images:
        raise FileNotFoundError(f"no images found in {path} (supported formats: {', '.join(IMG_FORMATS)})")
    return images


# ----------------------------------------------------------------------------- label scan

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


# ----------------------------------------------------------------------------- dataset

def _rect_batch_shapes(hw_ratios: np.ndarray, batch_index: np.ndarray, img_size: int, stride: int, pad: float):
    """Per batch (h, w) in pixels: the longest side = img_size, the other fits every image's aspect."""
    shapes = []
    for b in range(int(batch_index[-1]) + 1):
        ratios = hw_ratios[batch_index == b]
        low, high = ratios.min(), ratios.max()
        if high < 1:  # all landscape: full width, height of the tallest
            shapes.append([high, 1.0])
        elif low > 1:  # all portrait: full height, width of the widest
            shapes.append([1.0, 1.0 / low])
        else:
            shapes.append([1.0, 1.0])
    return np.ceil(np.array(shapes) * img_size / stride + pad).astype(int) * stride


class LoadImagesAndLabels(Dataset):
    """Images, boxes and view labels of one split, with YOLOv5's augmentations and rect batching.

    A sample mixed from several files (mosaic, mixup) has no meaningful image-level label,
    so its view is -1; trainers switch mosaic and mixup off for the view task anyway.
    cache_images='disk' stores decoded images as .npy under runs/.cache/images/, because the
    shared datasets are read-only.
    """

    def __init__(
        self,
        path: str | Path | list,
        img_size: int = 640,
        batch_size: int = 16,
        augment: bool = False,
        hyp: dict | None = None,
        rect: bool = False,
        cache_images: str | None = None,
        single_cls: bool = False,
        stride: int = 32,
        pad: float = 0.0,
        prefix: str = "",
        n_views: int | None = None,
        nc: int | None = None,
        min_items: int = 0,
        rect_shuffle: bool = False,
    ) -> None:
        self.img_size = img_size
        self.augment = augment
        self.hyp = {**DEFAULT_AUG_HYP, **(hyp or {})}
        self.rect_shuffle = rect_shuffle  # each image its own rect shape; AspectBatchSampler groups equal shapes
        rect = rect or rect_shuffle
        self.rect = rect
        self.stride = stride
        self.pad = pad
        self.prefix = prefix
        self.n_views = n_views
        self.mosaic = bool(augment and not rect and self.hyp["mosaic"] > 0)
        self.mosaic_border = (-img_size // 2, -img_size // 2)

        scan = scan_labels(find_images(path), nc, n_views, single_cls, prefix)
        if not scan.img_files:
            raise FileNotFoundError(f"{prefix}no usable images in {path}: {scan.n_corrupt} corrupt, see warnings above")
        keep = [i for i, boxes in enumerate(scan.labels) if len(boxes) >= min_items]
        if min_items and len(keep) < len(scan.labels):
            LOGGER.info(f"{prefix}{len(scan.labels) - len(keep)} images with fewer than {min_items} boxes left out")
        self.img_files = [scan.img_files[i] for i in keep]
        self.label_files = [scan.label_files[i] for i in keep]
        self.labels = [scan.labels[i] for i in keep]
        self.shapes = scan.shapes[keep].reshape(-1, 2)  # (w, h)
        self.views = scan.views[keep]
        self.scan = scan
        self.n = len(self.img_files)
        self.indices = np.arange(self.n)
        self.batch = np.floor(np.arange(self.n) / batch_size).astype(int)
        self.batch_shapes = None
        self.image_shapes = None
        if rect_shuffle:
            hw_ratios = self.shapes[:, 1] / self.shapes[:, 0]
            self.image_shapes = _rect_batch_shapes(hw_ratios, np.arange(self.n), self.img_size, self.stride, self.pad)
        elif rect:
            self._sort_for_rect(batch_size)

        self.ims: list[np.ndarray | None] = [None] * self.n
        self.im_hw0: list[tuple[int, int] | None] = [None] * self.n
        self.im_hw: list[tuple[int, int] | None] = [None] * self.n
        self.npy_files: list[Path] | None = None
        if cache_images == "ram":
            self._cache_in_ram()
        elif cache_images == "disk":
            self._cache_on_disk()
        elif cache_images:
            raise ValueError(f"cache_images must be 'ram', 'disk' or None, got {cache_images!r}")

    def __len__(self) -> int:
        return self.n

    def _sort_for_rect(self, batch_size: int) -> None:
        """Order images by aspect ratio so each batch needs little padding; fix each batch's shape."""
        hw_ratios = self.shapes[:, 1] / self.shapes[:, 0]
        order = hw_ratios.argsort(kind="stable")
        self.img_files = [self.img_files[i] for i in order]
        self.label_files = [self.label_files[i] for i in order]
        self.labels = [self.labels[i] for i in order]
        self.shapes = self.shapes[order]
        self.views = self.views[order]
        self.batch_shapes = _rect_batch_shapes(hw_ratios[order], self.batch, self.img_size, self.stride, self.pad)

    def _cache_in_ram(self) -> None:
        total = 0
        with ThreadPool(NUM_THREADS) as pool:
            bar = tqdm(pool.imap(self._read_resized, range(self.n)), total=self.n, desc=f"{self.prefix}Caching images")
            for i, (im, hw0, hw) in enumerate(bar):
                self.ims[i], self.im_hw0[i], self.im_hw[i] = im, hw0, hw
                total += im.nbytes
                bar.set_description(f"{self.prefix}Caching images ({total / 1e9:.1f}GB ram)", refresh=False)
            bar.close()
        LOGGER.info(f"{self.prefix}Cached {self.n} images in RAM: {total / 1e9:.2f}GB")

    def _cache_on_disk(self) -> None:
        folder = CACHE_FALLBACK_DIR / "images"
        folder.mkdir(parents=True, exist_ok=True)
        self.npy_files = []
        for file in self.img_files:
            stat = os.stat(file)
            key = hashlib.sha1(f"{file}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:20]
            self.npy_files.append(folder / f"{Path(file).stem}-{key}.npy")
        total = 0
        bar = tqdm(zip(self.img_files, self.npy_files), total=self.n, desc=f"{self.prefix}Caching images (disk)")
        for file, npy in bar:
            if not npy.exists():
                im = cv2.imread(file)
                if im is None:
                    raise FileNotFoundError(f"image not found or unreadable: {file}")
                np.save(npy, im)
            total += npy.stat().st_size
        LOGGER.info(f"{self.prefix}Cached {self.n} images on disk in {folder}: {total / 1e9:.2f}GB")

    def _read_resized(self, i: int) -> tuple[np.ndarray, tuple[int, int], tuple[int, int]]:
        """Decode image i and resize it so its long side is img_size."""
        npy = self.npy_files[i] if self.npy_files else None
        im = np.load(npy) if npy is not None and npy.exists() else cv2.imread(self.img_files[i])
        if im is None:
            raise FileNotFoundError(f"image not found or unreadable: {self.img_files[i]}")
        h0, w0 = im.shape[:2]
        scale = self.img_size / max(h0, w0)
        if scale != 1:
            shrink_only = not self.augment and scale < 1
            interpolation = cv2.INTER_AREA if shrink_only else cv2.INTER_LINEAR
            size = (max(1, round(w0 * scale)), max(1, round(h0 * scale)))
            im = cv2.resize(im, size, interpolation=interpolation)
        return im, (h0, w0), im.shape[:2]

    def load_image(self, i: int) -> tuple[np.ndarray, tuple[int, int], tuple[int, int]]:
        """(BGR image with long side img_size, (h0, w0) original, (h, w) resized); RAM cache first."""
        if self.ims[i] is not None:
            return self.ims[i], self.im_hw0[i], self.im_hw[i]
        return self._read_resized(i)

    def load_mosaic(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Four images around a random centre on a 2s x 2s canvas, warped and cropped back to s x s."""
        size = self.img_size
        canvas_size = 2 * size
        centre_y, centre_x = (int(random.uniform(-border, 2 * size + border)) for border in self.mosaic_border)
        tiles = [index] + random.choices(list(self.indices), k=3)
        random.shuffle(tiles)
        canvas = np.full((canvas_size, canvas_size, 3), 114, dtype=np.uint8)
        all_labels = []
        for corner, tile in enumerate(tiles):  # 0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right
            im, _, (h, w) = self.load_image(tile)
            left = centre_x - w if corner in (0, 2) else centre_x  # where the image's origin lands
            top = centre_y - h if corner in (0, 1) else centre_y
            x1, y1 = max(left, 0), max(top, 0)
            x2, y2 = min(left + w, canvas_size), min(top + h, canvas_size)
            canvas[y1:y2, x1:x2] = im[y1 - top:y2 - top, x1 - left:x2 - left]
            labels = self.labels[tile].astype(np.float64)
            if len(labels):
                labels[:, 1:] = xywhn2xyxy(labels[:, 1:], w, h, padw=left, padh=top)
            all_labels.append(labels)
        labels = np.concatenate(all_labels, 0)
        labels[:, 1:] = labels[:, 1:].clip(0, canvas_size)
        hyp = self.hyp
        return random_perspective(
            canvas, labels, degrees=hyp["degrees"], translate=hyp["translate"], scale=hyp["scale"],
            shear=hyp["shear"], perspective=hyp["perspective"], border=self.mosaic_border,
        )

    def __getitem__(self, index: int):
        """(img uint8 [3,H,W] RGB, labels [n,6] (0, cls, cx, cy, w, h), view long, path, shapes or None)."""
        index = int(self.indices[index])
        hyp = self.hyp
        mixed = False
        if self.mosaic and random.random() < hyp["mosaic"]:
            img, labels = self.load_mosaic(index)
            shapes = None
            mixed = True
            if random.random() < hyp["mixup"]:
                img, labels = mixup(img, labels, *self.load_mosaic(int(random.choice(self.indices))))
        else:
            img, (h0, w0), (h, w) = self.load_image(index)
            if self.image_shapes is not None:
                shape = self.image_shapes[index]
            else:
                shape = self.batch_shapes[self.batch[index]] if self.rect else self.img_size
            img, ratio, pad = letterbox(img, shape, auto=False, scaleup=self.augment)
            shapes = (h0, w0), ((h / h0, w / w0), pad)  # for mapping predictions back (val)
            labels = self.labels[index].astype(np.float64)
            if len(labels):
                labels[:, 1:] = xywhn2xyxy(labels[:, 1:], ratio[0] * w, ratio[1] * h, padw=pad[0], padh=pad[1])
            if self.augment:
                img, labels = random_perspective(
                    img, labels, degrees=hyp["degrees"], translate=hyp["translate"], scale=hyp["scale"],
                    shear=hyp["shear"], perspective=hyp["perspective"],
                )

        n_labels = len(labels)
        if n_labels:
            labels[:, 1:5] = xyxy2xywhn(labels[:, 1:5], w=img.shape[1], h=img.shape[0], clip=True, eps=1e-3)
        if self.augment:
            augment_hsv(img, hgain=hyp["hsv_h"], sgain=hyp["hsv_s"], vgain=hyp["hsv_v"])
            if random.random() < hyp["flipud"]:
                img = np.flipud(img)
                if n_labels:
                    labels[:, 2] = 1 - labels[:, 2]
            if random.random() < hyp["fliplr"]:
                img = np.fliplr(img)
                if n_labels:
                    labels[:, 1] = 1 - labels[:, 1]

        labels_out = torch.zeros((n_labels, 6), dtype=torch.float32)
        if n_labels:
            labels_out[:, 1:] = torch.from_numpy(np.asarray(labels, dtype=np.float32))
        img = np.ascontiguousarray(img.transpose((2, 0, 1))[::-1])  # HWC BGR -> CHW RGB
        view = -1 if mixed else int(self.views[index])
        return torch.from_numpy(img), labels_out, torch.tensor(view, dtype=torch.long), self.img_files[index], shapes

    @staticmethod
    def collate_fn(batch: list) -> tuple:
        """Stack images and views; concatenate targets with column 0 = index of the image in the batch."""
        images, labels, views, paths, shapes = zip(*batch)
        for i, targets in enumerate(labels):
            targets[:, 0] = i
        return torch.stack(images, 0), torch.cat(labels, 0), torch.stack(views, 0), paths, shapes


# ----------------------------------------------------------------------------- loader

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
) -> tuple[DataLoader, LoadImagesAndLabels]:
    """A DataLoader over LoadImagesAndLabels; the same seed gives the same order and augmentations.

    shard: under DDP, give each rank its own share of the images (the training loader); a loader
    that rank 0 alone uses (validation) keeps every image.
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
        pin_memory=PIN_MEMORY,
        collate_fn=LoadImagesAndLabels.collate_fn,
        worker_init_fn=seed_worker,
        generator=generator,
        persistent_workers=n_workers > 0,
    )
    return loader, dataset


# ----------------------------------------------------------------------------- detect.py source

class LoadImages:
    """Iterate images and videos for inference: (path, img [3,H,W] RGB letterboxed, im0 BGR, cap, info)."""

    def __init__(
        self, path: str | Path | list, img_size: int = 640, stride: int = 32, auto: bool = True, vid_stride: int = 1
    ) -> None:
        files = _expand_source(path)
        images = [f for f in files if _suffix(f) in IMG_FORMATS]
        videos = [f for f in files if _suffix(f) in VID_FORMATS]
        if not images and not videos:
            raise FileNotFoundError(
                f"no images or videos found in {path}. Supported: {', '.join(IMG_FORMATS + VID_FORMATS)}"
            )
        self.files = images + videos
        self.video_flag = [False] * len(images) + [True] * len(videos)
        self.nf = len(self.files)
        self.img_size = img_size
        self.stride = stride
        self.auto = auto
        self.vid_stride = max(1, int(vid_stride))
        self.cap: cv2.VideoCapture | None = None
        self.frame = 0
        self.frames = 0
        self.count = 0

    def __len__(self) -> int:
        return self.nf

    def __iter__(self) -> LoadImages:
        self.count = 0
        return self

    def _open_video(self, path: str) -> None:
        self.frame = 0
        self.cap = cv2.VideoCapture(path)
        self.frames = int(self.cap.get(cv2.CAP_PROP_FRAME_COUNT) / self.vid_stride)

    def _next_frame(self) -> np.ndarray | None:
        for _ in range(self.vid_stride):
            if not self.cap.grab():
                return None
        ok, frame = self.cap.retrieve()
        return frame if ok else None

    def __next__(self) -> tuple[str, np.ndarray, np.ndarray, cv2.VideoCapture | None, str]:
        while self.count < self.nf:
            path = self.files[self.count]
            if self.video_flag[self.count]:
                if self.cap is None:
                    self._open_video(path)
                im0 = self._next_frame()
                if im0 is None:  # end of this video (or unreadable): move on
                    if self.frame == 0:
                        LOGGER.warning(f"WARNING ⚠️ no frames could be read from video {path}, skipping")
                    self.cap.release()
                    self.cap = None
                    self.count += 1
                    continue
                self.frame += 1
                info = f"video {self.count + 1}/{self.nf} (frame {self.frame}/{self.frames}) {path}: "
                cap = self.cap
            else:
                self.count += 1
                im0 = cv2.imread(path)
                if im0 is None:
                    LOGGER.warning(f"WARNING ⚠️ image {path} could not be read, skipping")
                    continue
                info = f"image {self.count}/{self.nf} {path}: "
                cap = None
            img = letterbox(im0, self.img_size, stride=self.stride, auto=self.auto)[0]
            img = np.ascontiguousarray(img.transpose((2, 0, 1))[::-1])
            return path, img, im0, cap, info
        raise StopIteration
