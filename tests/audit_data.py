"""Hand-made datasets for the audit tests: blocky random images (unrelated ones correlate near 0), written
as PNG with YOLO label files and, optionally, a view line."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import yaml

NAMES = ["AR", "MR", "PR", "TR"]
VIEWS = ["PSAX", "PLAX", "A4C"]


def picture(seed: int) -> np.ndarray:
    """A 96x72 BGR image of random 6x6-pixel blocks: two seeds give unrelated pictures."""
    rng = np.random.default_rng(seed)
    return cv2.resize(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8), (96, 72), interpolation=cv2.INTER_NEAREST)


def nearly(image: np.ndarray, seed: int) -> np.ndarray:
    """The same picture with a little noise: other bytes, signature correlation about 0.99+."""
    noise = np.random.default_rng(seed).normal(0, 4, image.shape)
    return np.clip(image.astype(float) + noise, 0, 255).astype(np.uint8)


def add(root: Path, split: str, name: str, image: np.ndarray | Path, boxes: list[tuple], view: int | None) -> Path:
    """Write one image (an array, or a file to copy byte for byte) and its label file; returns the image path."""
    folder = {"train": "train", "val": "valid"}[split]
    path = root / folder / "images" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(image, Path):
        shutil.copyfile(image, path)
    else:
        cv2.imwrite(str(path), image)
    rows = [" ".join(f"{v:g}" for v in box) for box in boxes]
    if view is not None:
        rows += ["", " ".join("1" if i == view else "0" for i in range(len(VIEWS)))]
    label = root / folder / "labels" / (Path(name).stem + ".txt")
    label.parent.mkdir(parents=True, exist_ok=True)
    label.write_text("\n".join(rows))
    return path


def write_yaml(root: Path, views: bool = True) -> Path:
    config = {"path": str(root), "train": "train/images", "val": "valid/images", "names": NAMES}
    if views:
        config["cls_names"] = VIEWS
    path = root.parent / f"{root.name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


BOX = (3, 0.5, 0.5, 0.3, 0.3)  # a TR box in the middle


def clean_dataset(root: Path) -> Path:
    """Two train patients, one val patient, one view per video, unrelated pictures: nothing to find."""
    seed = 0
    for split, patient, view in (("train", "A", 0), ("train", "B", 1), ("val", "C", 2)):
        for frame in range(3):
            seed += 1
            add(root, split, f"{patient}-v1.mp4-{frame}.png", picture(seed), [BOX], view)
    return write_yaml(root)


def planted_dataset(root: Path) -> Path:
    """The clean dataset plus one planted problem per patient (see EXPECTED)."""
    clean_dataset(root)
    p1 = add(root, "train", "P1-v1.mp4-0.png", picture(101), [BOX], 0)
    add(root, "val", "P4-v1.mp4-0.png", p1, [BOX], 1)  # byte-identical copy in val, view flipped
    base = picture(102)
    add(root, "train", "P2-v1.mp4-0.png", base, [BOX], 0)
    add(root, "train", "P2-v1.mp4-1.png", nearly(base, 1), [BOX], 1)  # near-duplicate, view flipped
    base = picture(103)
    add(root, "train", "P5-v1.mp4-0.png", base, [(1, 0.3, 0.3, 0.2, 0.2)], 1)
    add(root, "train", "P5-v1.mp4-1.png", nearly(base, 2), [(1, 0.7, 0.7, 0.2, 0.2)], 1)  # the box moved
    base = picture(104)
    add(root, "train", "P6-v1.mp4-0.png", base, [(0, 0.5, 0.5, 0.2, 0.2)], 2)
    add(root, "train", "P6-v1.mp4-1.png", nearly(base, 3), [(2, 0.5, 0.5, 0.2, 0.2)], 2)  # the class changed
    add(root, "train", "P7-v1.mp4-0.png", picture(105), [BOX], 2)
    add(root, "train", "P7-v1.mp4-1.png", picture(106), [BOX], 2)
    add(root, "val", "P7-v2.mp4-0.png", picture(107), [BOX], 2)  # patient P7 leaks into val
    return write_yaml(root)


EXPECTED = {  # (kind, split/file name) of every row planted_dataset must give, and no other
    ("exact_duplicate_across", "val/P4-v1.mp4-0.png"),
    ("view_conflict", "train/P1-v1.mp4-0.png"), ("view_conflict", "val/P4-v1.mp4-0.png"),
    ("view_conflict", "train/P2-v1.mp4-0.png"), ("view_conflict", "train/P2-v1.mp4-1.png"),
    ("near_duplicate_within", "train/P2-v1.mp4-1.png"), ("near_duplicate_within", "train/P5-v1.mp4-1.png"),
    ("near_duplicate_within", "train/P6-v1.mp4-1.png"),
    ("box_conflict", "train/P5-v1.mp4-0.png"), ("box_conflict", "train/P5-v1.mp4-1.png"),
    ("class_conflict", "train/P6-v1.mp4-0.png"), ("class_conflict", "train/P6-v1.mp4-1.png"),
    ("group_leak", "val/P7-v2.mp4-0.png"),
    ("mixed_view_group", "train/P2-v1.mp4-1.png"),
}


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """(size, mtime_ns) of every file and folder under root: equal before and after = nothing written."""
    result = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder) / name
            stat = path.stat()
            result[str(path.relative_to(root))] = (stat.st_size, stat.st_mtime_ns)
    return result
