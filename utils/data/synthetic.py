"""A small synthetic detection + view dataset, generated offline, so a first run needs no download.

Each image is an echo-like grey fan whose shape and chamber layout are the image's view
(utils/data/synthetic_echo.py), with 2-4 coloured filled shapes (square, disc, triangle) on
top to detect, like Doppler jets on a B-mode frame. Labels use the med data's format: one `cls cx cy w h` row per shape, a blank
line, then the one-hot view line, no trailing newline. Shapes and their classes are drawn
independently of the view, so the view is learnable only from the whole picture.

Generation is seeded (one stream per split), so every machine writes the same files. A
version file records what was generated; a folder written by another generator version or
with other settings is regenerated, so nobody trains on stale data.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import yaml

from utils.data.dataset_yaml import DatasetError
from utils.data.synthetic_echo import VIEW_NAMES, echo_background
from utils.logger import LOGGER
from utils.paths import ROOT

SHAPE_NAMES = ("square", "disc", "triangle")
GENERATOR_VERSION = 2  # 1: shapes on noise, no view line; 2: echo-like fan with a view line
VERSION_FILE = "synthetic-version.json"
SPLITS = ("train", "val")


def _draw_shape(img: np.ndarray, kind: int, cx: float, cy: float, size: float, color: tuple) -> tuple:
    """Draw one filled shape and return its tight box (x1, y1, x2, y2) in pixels."""
    half = size / 2
    x1, y1, x2, y2 = cx - half, cy - half, cx + half, cy + half
    if kind == 0:
        cv2.rectangle(img, (round(x1), round(y1)), (round(x2), round(y2)), color, -1)
    elif kind == 1:
        cv2.circle(img, (round(cx), round(cy)), round(half), color, -1)
    else:
        pts = np.array([[cx, y1], [x1, y2], [x2, y2]], dtype=np.int32)
        cv2.fillPoly(img, [pts], color)
    return x1, y1, x2, y2


def _jet_colour(rng: np.random.Generator) -> tuple:
    """A saturated colour of any hue (like a Doppler jet), never grey like the tissue."""
    hsv = np.array([[[rng.integers(0, 180), rng.integers(200, 256), rng.integers(170, 256)]]], dtype=np.uint8)
    return tuple(int(c) for c in cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0])


def _draw_shapes(img: np.ndarray, rng: np.random.Generator) -> list:
    """2-4 non-overlapping coloured shapes anywhere in the image (fewer if no place is free);
    returns [(cls, cx, cy, w, h) normalised]."""
    height, width = img.shape[:2]
    rows: list = []
    boxes: list = []
    for _ in range(int(rng.integers(2, 5))):
        for _attempt in range(20):
            size = float(rng.uniform(36, 80))
            cx = float(rng.uniform(size / 2 + 1, width - size / 2 - 1))
            cy = float(rng.uniform(size / 2 + 1, height - size / 2 - 1))
            if all(abs(cx - bx) > (size + bs) / 2 or abs(cy - by) > (size + bs) / 2 for bx, by, bs in boxes):
                break
        else:
            continue
        kind = int(rng.integers(0, len(SHAPE_NAMES)))
        color = _jet_colour(rng)
        x1, y1, x2, y2 = _draw_shape(img, kind, cx, cy, size, color)
        boxes.append((cx, cy, size))
        rows.append((kind, (x1 + x2) / 2 / width, (y1 + y2) / 2 / height, (x2 - x1) / width, (y2 - y1) / height))
    return rows


def make_image(rng: np.random.Generator, view: int, width: int = 256, height: int = 192) -> tuple[np.ndarray, list]:
    """One image of `view` with 2-4 shapes; returns (BGR image, [(cls, cx, cy, w, h) normalised])."""
    img = echo_background(rng, view, width, height)
    return img, _draw_shapes(img, rng)


def label_text(rows: list, view: int, n_views: int = len(VIEW_NAMES)) -> str:
    """The med data's label layout: box rows, a blank line, the one-hot view line, no trailing newline."""
    boxes = "\n".join(f"{c} {x:.6f} {y:.6f} {w:.6f} {h:.6f}" for c, x, y, w, h in rows)
    return boxes + "\n\n" + " ".join("1" if i == view else "0" for i in range(n_views))


def generate(root: Path, n_train: int = 256, n_val: int = 64, seed: int = 0) -> dict[str, int]:
    """Write images/{train,val} and labels/{train,val} under `root`; views are balanced within each split.

    Returns {image path: view} for every image written.
    """
    written: dict[str, int] = {}
    for split_index, (split, count) in enumerate(zip(SPLITS, (n_train, n_val))):
        rng = np.random.default_rng([seed, split_index])  # own stream: changing n_train keeps val the same
        views = rng.permutation(np.arange(count) % len(VIEW_NAMES))
        img_dir, lbl_dir = root / "images" / split, root / "labels" / split
        img_dir.mkdir(parents=True, exist_ok=True)
        lbl_dir.mkdir(parents=True, exist_ok=True)
        for i, view in enumerate(views.tolist()):
            img, rows = make_image(rng, view)
            cv2.imwrite(str(img_dir / f"{split}_{i:04d}.png"), img)
            (lbl_dir / f"{split}_{i:04d}.txt").write_text(label_text(rows, view))
            written[str(img_dir / f"{split}_{i:04d}.png")] = view
    return written


def _settings(cfg: dict) -> dict:
    """What the files depend on; the version file stores it and a mismatch means regenerate."""
    return {"generator": GENERATOR_VERSION, "seed": int(cfg.get("seed", 0)),
            "n_train": int(cfg.get("n_train", 256)), "n_val": int(cfg.get("n_val", 64))}


def _is_current(root: Path, settings: dict) -> bool:
    try:
        return json.loads((root / VERSION_FILE).read_text()) == settings
    except (OSError, ValueError):
        return False


def _remove_splits(root: Path) -> None:
    """Delete what `generate` writes (split folders and the label caches beside them), nothing else."""
    for split in SPLITS:
        shutil.rmtree(root / "images" / split, ignore_errors=True)
        shutil.rmtree(root / "labels" / split, ignore_errors=True)
        (root / "labels" / f"{split}.cache").unlink(missing_ok=True)


def ensure_synthetic(data_yaml: str | Path) -> None:
    """If `data_yaml` declares `synthetic: true`, make sure its folders hold this generator's current output."""
    path = Path(data_yaml)
    if not path.is_file():
        path = ROOT / "data" / Path(data_yaml).name
    if not path.is_file():
        return
    cfg = yaml.safe_load(path.read_text())
    if not isinstance(cfg, dict) or not cfg.get("synthetic"):
        return
    views = cfg.get("cls_names")
    if views is not None and len(views) != len(VIEW_NAMES):
        raise DatasetError(f"{path}: the synthetic generator draws {len(VIEW_NAMES)} views {list(VIEW_NAMES)}, "
                           f"but cls_names has {len(views)} entries")
    root = Path(cfg.get("path", ""))
    root = root if root.is_absolute() else ROOT / root
    settings = _settings(cfg)
    if _is_current(root, settings):
        return
    if any((root / folder / split).exists() for folder in ("images", "labels") for split in SPLITS):
        LOGGER.info(f"Synthetic dataset in {root} is from another generator version or settings: regenerating")
        _remove_splits(root)
    LOGGER.info(f"Generating the synthetic dataset in {root} (offline, seed {settings['seed']})...")
    generate(root, settings["n_train"], settings["n_val"], settings["seed"])
    (root / VERSION_FILE).write_text(json.dumps(settings))  # written last: an interrupted run regenerates
