"""Drawing shared by training, validation and detect.py: class colours, boxes and views on images, batch
mosaics, the labels overview; and the figure helpers the evaluation and training plots use.

Every function writes one file, closes its figure and returns the path; matplotlib uses the
non-interactive Agg backend so nothing ever opens a window or blocks.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping, Sequence

import cv2
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (backend must be chosen first)
import numpy as np  # noqa: E402
import torch  # noqa: E402

from utils.boxes import xywh2xyxy  # noqa: E402

# 20 distinguishable colours (matplotlib's tab20, reordered so neighbours contrast), RGB
_PALETTE_RGB = [
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
    (174, 199, 232), (255, 187, 120), (152, 223, 138), (255, 152, 150), (197, 176, 213),
    (196, 156, 148), (247, 182, 210), (199, 199, 199), (219, 219, 141), (158, 218, 229),
]  # fmt: skip

CONF_DRAW_THRESHOLD = 0.25  # predictions below this are left off batch mosaics


def colors(i: int, bgr: bool = False) -> tuple[int, int, int]:
    """Stable colour for class i (RGB, or BGR for drawing on cv2 images)."""
    r, g, b = _PALETTE_RGB[int(i) % len(_PALETTE_RGB)]
    return (b, g, r) if bgr else (r, g, b)


def figure_path(save_path: str | Path, default_name: str) -> Path:
    """Accept a file path or a folder (then `default_name` inside it); create the folder."""
    path = Path(save_path)
    if path.is_dir() or not path.suffix:
        path = path / default_name
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def save_figure(fig: plt.Figure, path: Path, dpi: int = 250) -> Path:
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def names_list(names: Sequence[str] | Mapping[int, str] | None, n: int) -> list[str]:
    if names is None:
        return [str(i) for i in range(n)]
    lookup = dict(names) if isinstance(names, Mapping) else dict(enumerate(names))
    return [str(lookup.get(i, i)) for i in range(n)]


def class_name(names: Sequence[str] | Mapping[int, str] | None, cls: int) -> str:
    if isinstance(names, Mapping):
        return str(names.get(cls, cls))
    return str(names[cls]) if names is not None and 0 <= cls < len(names) else str(cls)


def _to_numpy(x: torch.Tensor | np.ndarray) -> np.ndarray:
    return x.detach().cpu().float().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def plot_labels(
    labels: torch.Tensor | np.ndarray,
    names: Sequence[str] | Mapping[int, str] | None = None,
    save_dir: str | Path = ".",
    correlogram: bool = True,
) -> Path:
    """labels.jpg: class histogram, box centres, widths vs heights and a sample of box outlines.

    labels [N, 5] = cls, cx, cy, w, h normalised (the training set's rows). With `correlogram`, also
    labels_correlogram.jpg (pairwise 2D histograms of x, y, w, h).
    """
    save_dir = Path(save_dir)
    save_dir.mkdir(parents=True, exist_ok=True)
    labels = _to_numpy(labels).reshape(-1, 5)
    classes = labels[:, 0].astype(int)
    boxes = labels[:, 1:5]
    nc = int(classes.max()) + 1 if len(classes) else 1
    labels_text = names_list(names, nc)

    fig, axes = plt.subplots(2, 2, figsize=(8, 8), tight_layout=True)
    counts = np.bincount(classes, minlength=nc)
    bars = axes[0, 0].bar(range(nc), counts, color=[np.array(colors(i)) / 255 for i in range(nc)])
    axes[0, 0].set_ylabel("instances")
    if nc < 30:
        axes[0, 0].set_xticks(range(nc), labels_text, rotation=90, fontsize=10)
        axes[0, 0].bar_label(bars, fontsize=8)
    else:
        axes[0, 0].set_xlabel("classes")

    outlines = np.full((1000, 1000, 3), 255, dtype=np.uint8)  # boxes centred, drawn at their size
    sample = slice(0, 1000)
    centred = np.concatenate((np.full((len(boxes[sample]), 2), 0.5), boxes[sample, 2:4]), 1)
    for cls, box in zip(classes[sample], xywh2xyxy(centred) * 1000):
        x1, y1, x2, y2 = (int(round(v)) for v in box)
        cv2.rectangle(outlines, (x1, y1), (x2, y2), colors(cls), 1)
    axes[0, 1].imshow(outlines)
    axes[0, 1].axis("off")

    axes[1, 0].hist2d(boxes[:, 0], boxes[:, 1], bins=50, range=[[0, 1], [0, 1]], cmap="Blues", cmin=1)
    axes[1, 0].set_xlabel("x")
    axes[1, 0].set_ylabel("y")
    axes[1, 1].hist2d(boxes[:, 2], boxes[:, 3], bins=50, range=[[0, 1], [0, 1]], cmap="Blues", cmin=1)
    axes[1, 1].set_xlabel("width")
    axes[1, 1].set_ylabel("height")
    path = save_figure(fig, save_dir / "labels.jpg", dpi=200)
    if correlogram:
        plot_labels_correlogram(boxes, save_dir / "labels_correlogram.jpg")
    return path


def plot_labels_correlogram(boxes: np.ndarray, save_path: str | Path) -> Path:
    """Pairwise view of normalised x, y, width, height: histograms on the diagonal, 2D histograms elsewhere."""
    path = figure_path(save_path, "labels_correlogram.jpg")
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    titles = ["x", "y", "width", "height"]
    fig, axes = plt.subplots(4, 4, figsize=(8, 8), tight_layout=True)
    for row in range(4):
        for col in range(4):
            ax = axes[row, col]
            if row == col:
                ax.hist(boxes[:, col], bins=50, range=(0, 1), color="steelblue")
            elif row > col:
                ax.hist2d(boxes[:, col], boxes[:, row], bins=50, range=[[0, 1], [0, 1]], cmap="Blues", cmin=1)
            else:
                ax.axis("off")
                continue
            if row == 3:
                ax.set_xlabel(titles[col])
            if col == 0:
                ax.set_ylabel(titles[row])
    return save_figure(fig, path, dpi=150)


def draw_box_label(
    img: np.ndarray,
    xyxy: Sequence[float],
    label: str = "",
    color: tuple[int, int, int] = (128, 128, 128),
    line_width: int | None = None,
    text_color: tuple[int, int, int] = (255, 255, 255),
) -> np.ndarray:
    """Draw one box and its label on an image in place (colour in the image's channel order); returns img."""
    line_width = line_width or max(round(sum(img.shape[:2]) / 2 * 0.003), 2)
    p1 = (int(xyxy[0]), int(xyxy[1]))
    p2 = (int(xyxy[2]), int(xyxy[3]))
    cv2.rectangle(img, p1, p2, color, thickness=line_width, lineType=cv2.LINE_AA)
    if label:
        font_thickness = max(line_width - 1, 1)
        font_scale = line_width / 3
        (text_w, text_h), _ = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, font_scale, font_thickness)
        fits_above = p1[1] - text_h - 3 >= 0
        bg_top = p1[1] - text_h - 3 if fits_above else p1[1]
        bg_bottom = p1[1] if fits_above else p1[1] + text_h + 3
        cv2.rectangle(img, (p1[0], bg_top), (p1[0] + text_w, bg_bottom), color, -1, cv2.LINE_AA)
        cv2.putText(img, label, (p1[0], bg_bottom - 2), cv2.FONT_HERSHEY_SIMPLEX, font_scale,
                    text_color, font_thickness, cv2.LINE_AA)
    return img


def plot_images(
    images: torch.Tensor | np.ndarray,
    targets: torch.Tensor | np.ndarray,
    paths: Sequence[str | Path] | None = None,
    fname: str | Path = "images.jpg",
    names: Sequence[str] | Mapping[int, str] | None = None,
    max_subplots: int = 16,
    max_size: int = 1920,
    captions: Sequence[str] | None = None,
) -> Path:
    """Mosaic of a batch with its boxes: train_batch*.jpg, val_batch*_labels.jpg and val_batch*_pred.jpg.

    images: [B, 3, H, W] RGB, uint8 or float in [0, 1]. targets: [N, 6] (img, cls, cx, cy, w, h) labels,
    or [N, 7] with a trailing conf for predictions (only conf > 0.25 drawn); xywh normalised or in
    pixels (normalised when every value is <= 1.01). Tiles show the file name and optional caption.
    """
    images = _to_numpy(images)
    if np.issubdtype(images.dtype, np.floating) and images.size and images.max() <= 1.0:
        images = images * 255
    targets = _to_numpy(targets)
    targets = targets.reshape(-1, targets.shape[-1] if targets.ndim == 2 else 6)
    batch, _, height, width = images.shape
    batch = min(batch, max_subplots)
    grid = math.ceil(batch**0.5)
    scale = min(1.0, max_size / grid / max(height, width))
    tile_h, tile_w = math.ceil(height * scale), math.ceil(width * scale)
    mosaic = np.full((grid * tile_h, grid * tile_w, 3), 255, dtype=np.uint8)

    is_prediction = targets.shape[1] == 7
    normalised = targets.size == 0 or targets[:, 2:6].max() <= 1.01
    line_width = max(round(min(tile_h, tile_w) / 200), 1)
    font_scale = max(line_width / 3, 0.35)
    for i in range(batch):
        x0, y0 = (i % grid) * tile_w, (i // grid) * tile_h
        tile = np.ascontiguousarray(images[i].transpose(1, 2, 0).clip(0, 255).astype(np.uint8))
        if scale < 1:
            tile = cv2.resize(tile, (tile_w, tile_h), interpolation=cv2.INTER_AREA)
        mosaic[y0 : y0 + tile_h, x0 : x0 + tile_w] = tile
        tile_view = mosaic[y0 : y0 + tile_h, x0 : x0 + tile_w]  # drawn on in place

        rows = targets[targets[:, 0] == i]
        if is_prediction:
            rows = rows[rows[:, 6] > CONF_DRAW_THRESHOLD]
        if len(rows):
            boxes = xywh2xyxy(rows[:, 2:6].astype(np.float64))
            boxes *= np.array([width, height, width, height]) if normalised else 1.0
            boxes *= scale
            for row, box in zip(rows, boxes):
                cls = int(row[1])
                name = class_name(names, cls)
                label = f"{name} {row[6]:.1f}" if is_prediction else name
                draw_box_label(tile_view, box, label, colors(cls), line_width)
        header = Path(paths[i]).name[:40] if paths is not None and i < len(paths) else ""
        if captions is not None and i < len(captions) and captions[i]:
            header = f"{header} {captions[i]}".strip()
        if header:
            (_, text_h), _ = cv2.getTextSize(header, cv2.FONT_HERSHEY_SIMPLEX, font_scale, line_width)
            cv2.putText(tile_view, header, (5, text_h + 5), cv2.FONT_HERSHEY_SIMPLEX,
                        font_scale, (220, 220, 220), line_width, cv2.LINE_AA)
        cv2.rectangle(mosaic, (x0, y0), (x0 + tile_w - 1, y0 + tile_h - 1), (255, 255, 255), 2)

    path = Path(fname)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(mosaic, cv2.COLOR_RGB2BGR))
    return path


def draw_view_label(img: np.ndarray, text: str, line_width: int | None = None) -> np.ndarray:
    """Write the predicted view (e.g. 'A4C 0.93') in a filled box at the image's top-left corner, in place."""
    line_width = line_width or max(round(sum(img.shape[:2]) / 2 * 0.003), 2)
    font_scale, thickness = line_width / 3, max(line_width - 1, 1)
    (text_w, text_h), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, thickness)
    cv2.rectangle(img, (0, 0), (text_w + 6, text_h + baseline + 6), (40, 40, 40), -1)
    cv2.putText(img, text, (3, text_h + 3), cv2.FONT_HERSHEY_SIMPLEX, font_scale, (255, 255, 255), thickness, cv2.LINE_AA)
    return img
