"""Plots a YOLOv5 user expects in a run folder: curves, confusion matrix, results, labels, batch mosaics.

Every function writes one file, closes its figure and returns the path; matplotlib uses the
non-interactive Agg backend so nothing ever opens a window or blocks.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Mapping, Sequence

import cv2
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (backend must be chosen first)
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
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


def _file_path(save_path: str | Path, default_name: str) -> Path:
    """Accept a file path or a folder (then `default_name` inside it); create the folder."""
    path = Path(save_path)
    if path.is_dir() or not path.suffix:
        path = path / default_name
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _save(fig: plt.Figure, path: Path, dpi: int = 250) -> Path:
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def _class_names(names: Sequence[str] | Mapping[int, str] | None, n: int) -> list[str]:
    if names is None:
        return [str(i) for i in range(n)]
    lookup = dict(names) if isinstance(names, Mapping) else dict(enumerate(names))
    return [str(lookup.get(i, i)) for i in range(n)]


def _class_name(names: Sequence[str] | Mapping[int, str] | None, cls: int) -> str:
    if isinstance(names, Mapping):
        return str(names.get(cls, cls))
    return str(names[cls]) if names is not None and 0 <= cls < len(names) else str(cls)


def plot_pr_curve(
    px: np.ndarray, py: np.ndarray, ap: np.ndarray, save_path: str | Path, names: Sequence[str] = ()
) -> Path:
    """Precision-recall curve per class (py [nc, len(px)] on recall grid px) and their mean, ap [nc, n_iou]."""
    path = _file_path(save_path, "PR_curve.png")
    py = np.asarray(py).reshape(-1, len(px))
    ap = np.asarray(ap).reshape(len(py), -1)
    fig, ax = plt.subplots(1, 1, figsize=(9, 6), tight_layout=True)
    legend = 0 < len(names) < 21  # a legend for more classes would hide the plot
    for i, y in enumerate(py):
        label = f"{names[i]} {ap[i, 0]:.3f}" if legend else None
        ax.plot(px, y, linewidth=1, label=label, color=None if legend else "grey")
    if len(py):
        ax.plot(px, py.mean(0), linewidth=3, color="blue", label=f"all classes {ap[:, 0].mean():.3f} mAP@0.5")
    ax.set_xlabel("Recall")
    ax.set_ylabel("Precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(bbox_to_anchor=(1.04, 1), loc="upper left")
    ax.set_title("Precision-Recall Curve")
    return _save(fig, path)


def plot_mc_curve(
    px: np.ndarray,
    py: np.ndarray,
    save_path: str | Path,
    names: Sequence[str] = (),
    xlabel: str = "Confidence",
    ylabel: str = "Metric",
) -> Path:
    """A metric against confidence per class (py [nc, len(px)]) plus the smoothed mean, best point in the legend."""
    from utils.metrics import smooth  # metrics imports plots lazily; keep the cycle one-way at import time

    path = _file_path(save_path, f"{ylabel}_curve.png")
    py = np.asarray(py).reshape(-1, len(px))
    fig, ax = plt.subplots(1, 1, figsize=(9, 6), tight_layout=True)
    legend = 0 < len(names) < 21
    for i, y in enumerate(py):
        ax.plot(px, y, linewidth=1, label=names[i] if legend else None, color=None if legend else "grey")
    if len(py):
        mean_curve = smooth(py.mean(0), 0.05)
        best = int(mean_curve.argmax())
        label = f"all classes {mean_curve[best]:.2f} at {px[best]:.3f}"
        ax.plot(px, mean_curve, linewidth=3, color="blue", label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(bbox_to_anchor=(1.04, 1), loc="upper left")
    ax.set_title(f"{ylabel}-{xlabel} Curve")
    return _save(fig, path)


def plot_confusion_matrix(
    matrix: np.ndarray, names: Sequence[str], save_path: str | Path, normalize: bool = True
) -> Path:
    """Heatmap of a (nc+1)^2 matrix: rows predicted, columns true, last = background; columns sum to 1 if normalised."""
    path = _file_path(save_path, "confusion_matrix.png")
    matrix = np.asarray(matrix, dtype=np.float64)
    values = matrix / (matrix.sum(0, keepdims=True) + 1e-9) if normalize else matrix.copy()
    values[values < 0.005] = np.nan  # blank cells instead of a sea of zeros
    n = matrix.shape[0]
    tick_labels = (list(names) + ["background"]) if 0 < len(names) < 99 and len(names) == n - 1 else None

    fig, ax = plt.subplots(1, 1, figsize=(12, 9), tight_layout=True)
    image = ax.imshow(values, cmap="Blues", vmin=0.0, vmax=1.0 if normalize else None)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    if n < 30:  # numbers stay readable
        for row in range(n):
            for col in range(n):
                if not np.isnan(values[row, col]):
                    text = f"{values[row, col]:.2f}" if normalize else f"{values[row, col]:.0f}"
                    ax.text(col, row, text, ha="center", va="center", fontsize=8,
                            color="white" if (normalize and values[row, col] > 0.5) else "black")
    if tick_labels is not None:
        ax.set_xticks(range(n), tick_labels, rotation=90)
        ax.set_yticks(range(n), tick_labels)
    ax.set_xlabel("True")
    ax.set_ylabel("Predicted")
    ax.set_title("Confusion Matrix")
    return _save(fig, path)


# results.csv columns laid out as YOLOv5 does: training losses and P/R on top, val losses and mAP below
_RESULTS_LAYOUT = [
    "train/box_loss", "train/obj_loss", "train/cls_loss", "metrics/precision", "metrics/recall",
    "val/box_loss", "val/obj_loss", "val/cls_loss", "metrics/mAP_0.5", "metrics/mAP_0.5:0.95",
]  # fmt: skip


def plot_results(csv_path: str | Path) -> Path:
    """results.png next to results.csv: a 2x5 grid of the training curves, raw values plus a smoothed line."""
    csv_path = Path(csv_path)
    data = pd.read_csv(csv_path)
    data.columns = [str(c).strip() for c in data.columns]
    x = data["epoch"] if "epoch" in data.columns else pd.Series(range(len(data)))
    columns = [c for c in _RESULTS_LAYOUT if c in data.columns] or [c for c in data.columns if c != "epoch"][:10]
    fig, axes = plt.subplots(2, 5, figsize=(12, 6), tight_layout=True)
    for ax, column in zip(axes.ravel(), columns):
        values = pd.to_numeric(data[column], errors="coerce")
        ax.plot(x, values, marker=".", linewidth=2, markersize=8, label="results")
        window = max(3, len(values) // 10)
        smoothed = values.rolling(window, center=True, min_periods=1).mean()
        ax.plot(x, smoothed, ":", linewidth=2, label="smooth")
        ax.set_title(column, fontsize=12)
    axes.ravel()[1].legend()
    for ax in axes.ravel()[len(columns):]:
        ax.axis("off")
    return _save(fig, csv_path.with_name("results.png"), dpi=200)


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
    class_names = _class_names(names, nc)

    fig, axes = plt.subplots(2, 2, figsize=(8, 8), tight_layout=True)
    counts = np.bincount(classes, minlength=nc)
    bars = axes[0, 0].bar(range(nc), counts, color=[np.array(colors(i)) / 255 for i in range(nc)])
    axes[0, 0].set_ylabel("instances")
    if nc < 30:
        axes[0, 0].set_xticks(range(nc), class_names, rotation=90, fontsize=10)
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
    path = _save(fig, save_dir / "labels.jpg", dpi=200)
    if correlogram:
        plot_labels_correlogram(boxes, save_dir / "labels_correlogram.jpg")
    return path


def plot_labels_correlogram(boxes: np.ndarray, save_path: str | Path) -> Path:
    """Pairwise view of normalised x, y, width, height: histograms on the diagonal, 2D histograms elsewhere."""
    path = _file_path(save_path, "labels_correlogram.jpg")
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
    return _save(fig, path, dpi=150)


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
                name = _class_name(names, cls)
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


def plot_view_confusion_matrix(
    matrix: np.ndarray, names: Sequence[str], save_path: str | Path, normalize: bool = True
) -> Path:
    """view_confusion_matrix.png of a [K, K] view matrix: rows true, columns predicted (no background).

    Normalised, each row sums to 1 so the diagonal reads as per-view recall; cells show the
    fraction with the count beneath it. Unnormalised, cells show counts.
    """
    path = _file_path(save_path, "view_confusion_matrix.png")
    counts = np.asarray(matrix, dtype=np.float64)
    n = counts.shape[0]
    row_totals = counts.sum(1, keepdims=True)
    values = np.divide(counts, row_totals, out=np.zeros_like(counts), where=row_totals > 0) if normalize else counts
    tick_labels = _class_names(names, n)

    side = min(max(4.0, 1.0 + 0.9 * n), 14.0)
    fig, ax = plt.subplots(1, 1, figsize=(side + 1.5, side), tight_layout=True)
    image = ax.imshow(values, cmap="Blues", vmin=0.0, vmax=1.0 if normalize else max(values.max(), 1.0))
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    if n < 30:  # numbers stay readable
        dark_above = 0.5 * (1.0 if normalize else max(values.max(), 1.0))
        for row in range(n):
            for col in range(n):
                text = f"{values[row, col]:.2f}\n({counts[row, col]:.0f})" if normalize else f"{counts[row, col]:.0f}"
                ax.text(col, row, text, ha="center", va="center", fontsize=8,
                        color="white" if values[row, col] > dark_above else "black")
    ax.set_xticks(range(n), tick_labels, rotation=90 if n > 6 else 0)
    ax.set_yticks(range(n), tick_labels)
    ax.set_xlabel("Predicted")
    ax.set_ylabel("True")
    ax.set_title("View Confusion Matrix" + (" (rows normalised)" if normalize else ""))
    return _save(fig, path)


def draw_view_label(img: np.ndarray, text: str, line_width: int | None = None) -> np.ndarray:
    """Write the predicted view (e.g. 'A4C 0.93') in a filled box at the image's top-left corner, in place."""
    line_width = line_width or max(round(sum(img.shape[:2]) / 2 * 0.003), 2)
    font_scale, thickness = line_width / 3, max(line_width - 1, 1)
    (text_w, text_h), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, thickness)
    cv2.rectangle(img, (0, 0), (text_w + 6, text_h + baseline + 6), (40, 40, 40), -1)
    cv2.putText(img, text, (3, text_h + 3), cv2.FONT_HERSHEY_SIMPLEX, font_scale, (255, 255, 255), thickness, cv2.LINE_AA)
    return img


def plot_gradnorm(history_path: str | Path, save_path: str | Path | None = None) -> Path:
    """gradnorm_weights.png from training_history.json steps: the task weights, and beside them what drives them.

    GradNorm: the weighted gradient-norm ratio G_view/G_det on W; uncertainty weighting: the learned
    log-variances; PCGrad: the fraction of steps whose task gradients conflicted.
    """
    history_path = Path(history_path)
    steps = [s for s in json.loads(history_path.read_text()).get("steps", []) if "weights" in s]
    save_path = Path(save_path) if save_path else history_path.parent / "gradnorm_weights.png"
    fig, (ax_w, ax_g) = plt.subplots(1, 2, figsize=(12, 4), tight_layout=True)
    title = "weighted gradient-norm ratio on W"
    if steps:
        x = [s["step"] for s in steps]
        for name in steps[0]["weights"]:
            ax_w.plot(x, [s["weights"][name] for s in steps], label=f"w_{name}")
        if "grad_norm" in steps[0]:
            names = list(steps[0]["grad_norm"])
            if len(names) == 2:
                ratio = [s["grad_norm"][names[1]] / max(s["grad_norm"][names[0]], 1e-12) for s in steps]
                ax_g.plot(x, ratio, label=f"G_{names[1]} / G_{names[0]}")
                ax_g.axhline(1.0, color="grey", linestyle="--", linewidth=1)
                ax_g.set_yscale("log")
        elif "log_var" in steps[0]:
            title = "learned log-variances s_i"
            for name in steps[0]["log_var"]:
                ax_g.plot(x, [s["log_var"][name] for s in steps], label=f"s_{name}")
        elif "conflict_fraction" in steps[0]:
            title = "fraction of steps with conflicting task gradients"
            ax_g.plot(x, [s["conflict_fraction"] for s in steps], label="conflict fraction")
    ax_w.set(xlabel="optimizer step (iteration)", ylabel="task weight", title="task weights")
    ax_g.set(xlabel="optimizer step (iteration)", ylabel="value", title=title)
    for ax in (ax_w, ax_g):
        ax.legend() if ax.get_legend_handles_labels()[0] else None
        ax.grid(alpha=0.3)
    fig.savefig(save_path, dpi=150)
    plt.close(fig)
    return save_path


def plot_interference(history_path: str | Path, save_path: str | Path | None = None) -> Path:
    """interference.png: cosine of the detection and view gradients (per stage and overall) and their norm ratio."""
    from utils.interference import OVERALL, summarize_interference

    history_path = Path(history_path)
    records = json.loads(history_path.read_text()).get("interference", [])
    save_path = Path(save_path) if save_path else history_path.parent / "interference.png"
    fig, (ax_c, ax_r) = plt.subplots(1, 2, figsize=(12, 4), tight_layout=True)
    if records:
        x = [r["step"] for r in records]
        summary = summarize_interference(records)
        for stage in [*records[0]["stages"], OVERALL]:
            values = [r[OVERALL]["cosine"] if stage == OVERALL else r["stages"][stage]["cosine"] for r in records]
            style = {"color": "black", "linewidth": 2} if stage == OVERALL else {"linewidth": 1, "alpha": 0.8}
            ax_c.plot(x, values, label=f"{stage} (conflict {summary[stage]['conflict_fraction']:.0%})", **style)
        ax_r.plot(x, [r[OVERALL]["norm_ratio"] for r in records], color="black")
        ax_r.set_yscale("log")
        tasks = records[0].get("tasks", ["a", "b"])
        ax_r.set_ylabel(f"‖g_{tasks[1]}‖ / ‖g_{tasks[0]}‖")
    ax_c.axhline(0.0, color="grey", linestyle="--", linewidth=1)
    ax_c.set(xlabel="iteration", ylabel="cosine", title="cosine of task gradients on shared parameters")
    ax_r.set(xlabel="iteration", title="gradient norm ratio (weighted losses)")
    for ax in (ax_c, ax_r):
        ax.legend(fontsize=7) if ax.get_legend_handles_labels()[0] else None
        ax.grid(alpha=0.3)
    fig.savefig(save_path, dpi=150)
    plt.close(fig)
    return save_path
