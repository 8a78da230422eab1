"""A small synthetic detection dataset, generated offline, so a first run needs no download.

Images are noisy 4:3 backgrounds with filled shapes (square, disc, triangle); labels are
plain YOLO rows. Generation is seeded, so every machine writes the same files.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import yaml

from utils.logger import LOGGER
from utils.paths import ROOT

SHAPE_NAMES = ("square", "disc", "triangle")


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


def make_image(rng: np.random.Generator, width: int = 256, height: int = 192) -> tuple[np.ndarray, list]:
    """One image with 1-3 non-overlapping shapes; returns (BGR image, [(cls, cx, cy, w, h) normalised])."""
    img = rng.integers(40, 90, size=(height, width, 3), dtype=np.uint8)
    img = cv2.GaussianBlur(img, (5, 5), 0)
    rows: list = []
    boxes: list = []
    for _ in range(int(rng.integers(1, 4))):
        for _attempt in range(20):
            size = float(rng.uniform(24, 72))
            cx = float(rng.uniform(size / 2 + 1, width - size / 2 - 1))
            cy = float(rng.uniform(size / 2 + 1, height - size / 2 - 1))
            if all(abs(cx - bx) > (size + bs) / 2 or abs(cy - by) > (size + bs) / 2 for bx, by, bs in boxes):
                break
        else:
            continue
        kind = int(rng.integers(0, len(SHAPE_NAMES)))
        color = tuple(int(c) for c in rng.integers(140, 256, size=3))
        x1, y1, x2, y2 = _draw_shape(img, kind, cx, cy, size, color)
        boxes.append((cx, cy, size))
        rows.append((kind, (x1 + x2) / 2 / width, (y1 + y2) / 2 / height, (x2 - x1) / width, (y2 - y1) / height))
    return img, rows


def generate(root: Path, n_train: int = 256, n_val: int = 64, seed: int = 0) -> None:
    """Write images/{train,val} and labels/{train,val} under `root`."""
    rng = np.random.default_rng(seed)
    for split, count in (("train", n_train), ("val", n_val)):
        img_dir, lbl_dir = root / "images" / split, root / "labels" / split
        img_dir.mkdir(parents=True, exist_ok=True)
        lbl_dir.mkdir(parents=True, exist_ok=True)
        for i in range(count):
            img, rows = make_image(rng)
            cv2.imwrite(str(img_dir / f"{split}_{i:04d}.png"), img)
            text = "\n".join(f"{c} {x:.6f} {y:.6f} {w:.6f} {h:.6f}" for c, x, y, w, h in rows)
            (lbl_dir / f"{split}_{i:04d}.txt").write_text(text + "\n")


def ensure_synthetic(data_yaml: str | Path) -> None:
    """If `data_yaml` declares `synthetic: true` and its folders are missing, generate them."""
    path = Path(data_yaml)
    if not path.is_file():
        path = ROOT / "data" / Path(data_yaml).name
    if not path.is_file():
        return
    cfg = yaml.safe_load(path.read_text())
    if not isinstance(cfg, dict) or not cfg.get("synthetic"):
        return
    root = Path(cfg.get("path", ""))
    root = root if root.is_absolute() else ROOT / root
    if (root / cfg["train"]).exists() and (root / cfg["val"]).exists():
        return
    LOGGER.info(f"Generating the synthetic dataset in {root} (offline, seed {cfg.get('seed', 0)})...")
    generate(root, int(cfg.get("n_train", 256)), int(cfg.get("n_val", 64)), int(cfg.get("seed", 0)))
