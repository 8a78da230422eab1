"""The training/validation dataset: images, boxes and view labels of one split, augmented, rect-batched, cached.

A sample is (img uint8 [3,H,W] RGB, labels [n,6] = (0, cls, cx, cy, w, h) normalised, view long
(-1 = no view label), path, shapes); collate_fn stacks them into a batch.
"""
from __future__ import annotations

import random
from multiprocessing.pool import ThreadPool
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from utils.boxes import xywhn2xyxy, xyxy2xywhn
from utils.data import label_scan
from utils.data.augmentations import augment_hsv, letterbox, mixup, random_perspective
from utils.data.image_cache import disk_cache_path, resolve_cache, save_npy_atomic
from utils.data.label_scan import NUM_THREADS, scan_labels
from utils.data.sources import find_images
from utils.logger import LOGGER

# Augmentation settings used when a dataset is built with augment=True and an incomplete hyp
# (the values of hyp.scratch-low.yaml).
DEFAULT_AUG_HYP = {
    "hsv_h": 0.015, "hsv_s": 0.7, "hsv_v": 0.4,
    "degrees": 0.0, "translate": 0.1, "scale": 0.5, "shear": 0.0, "perspective": 0.0,
    "flipud": 0.0, "fliplr": 0.5, "mosaic": 1.0, "mixup": 0.0,
}


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


def resized_side(side: int, long_side: int, img_size: int) -> int:
    """A side's length once the long side is scaled to img_size: rounded UP, as YOLOv5 does.

    Rounding up rather than to nearest changes a 430x320 frame at 320 from 238 to 239 rows, which
    moves every letterbox pad by half a pixel; YOLOv5's validation figures depend on it (measured,
    docs/metrics.md). Computed in integers, so the long side is exactly img_size (YOLOv5's
    floating-point product can overshoot to img_size + 1 for a few sizes, e.g. a 525-px side).
    """
    return max(1, -(-side * img_size // long_side))


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
        cache_images: str | bool | None = None,
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
        self.cache = resolve_cache(cache_images, self.shapes, img_size, prefix)
        if self.cache == "ram":
            self._cache_in_ram()
        elif self.cache == "disk":
            self._cache_on_disk()

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
        folder = label_scan.CACHE_FALLBACK_DIR / "images"
        folder.mkdir(parents=True, exist_ok=True)
        self.npy_files = [disk_cache_path(file, folder) for file in self.img_files]
        total = 0
        bar = tqdm(zip(self.img_files, self.npy_files), total=self.n, desc=f"{self.prefix}Caching images (disk)")
        for file, npy in bar:
            if not npy.exists():
                im = cv2.imread(file)
                if im is None:
                    raise FileNotFoundError(f"image not found or unreadable: {file}")
                save_npy_atomic(im, npy)
            total += npy.stat().st_size
        LOGGER.info(f"{self.prefix}Cached {self.n} images on disk in {folder}: {total / 1e9:.2f}GB")

    def _read_resized(self, i: int) -> tuple[np.ndarray, tuple[int, int], tuple[int, int]]:
        """Decode image i and resize it so its long side is img_size."""
        npy = self.npy_files[i] if self.npy_files else None
        im = np.load(npy) if npy is not None and npy.exists() else cv2.imread(self.img_files[i])
        if im is None:
            raise FileNotFoundError(f"image not found or unreadable: {self.img_files[i]}")
        h0, w0 = im.shape[:2]
        long_side = max(h0, w0)
        if long_side != self.img_size:
            shrink_only = not self.augment and long_side > self.img_size
            interpolation = cv2.INTER_AREA if shrink_only else cv2.INTER_LINEAR
            size = (resized_side(w0, long_side, self.img_size), resized_side(h0, long_side, self.img_size))
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
