"""Evaluation plots YOLOv5 users expect in a val or train folder: PR/F1/P/R curves and confusion matrices."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np

from utils.evaluation.metrics import PerClassAP, smooth
from utils.plots import figure_path, names_list, save_figure


def plot_ap_curves(result: PerClassAP, save_dir: str | Path, prefix: str = "") -> None:
    """{prefix}PR_curve.png, F1_curve.png, P_curve.png and R_curve.png of one `ap_per_class` result."""
    save_dir, curves = Path(save_dir), result.curves
    plot_pr_curve(curves.grid, curves.precision_at_recall, result.ap, save_dir / f"{prefix}PR_curve.png", curves.names)
    for values, name, label in ((curves.f1, "F1", "F1"), (curves.precision, "P", "Precision"),
                                (curves.recall, "R", "Recall")):
        plot_mc_curve(curves.grid, values, save_dir / f"{prefix}{name}_curve.png", curves.names, ylabel=label)


def plot_pr_curve(
    px: np.ndarray, py: np.ndarray, ap: np.ndarray, save_path: str | Path, names: Sequence[str] = ()
) -> Path:
    """Precision-recall curve per class (py [nc, len(px)] on recall grid px) and their mean, ap [nc, n_iou]."""
    path = figure_path(save_path, "PR_curve.png")
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
    return save_figure(fig, path)


def plot_mc_curve(
    px: np.ndarray,
    py: np.ndarray,
    save_path: str | Path,
    names: Sequence[str] = (),
    xlabel: str = "Confidence",
    ylabel: str = "Metric",
) -> Path:
    """A metric against confidence per class (py [nc, len(px)]) plus the smoothed mean, best point in the legend."""
    path = figure_path(save_path, f"{ylabel}_curve.png")
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
    return save_figure(fig, path)


def plot_confusion_matrix(
    matrix: np.ndarray, names: Sequence[str], save_path: str | Path, normalize: bool = True
) -> Path:
    """Heatmap of a (nc+1)^2 matrix: rows predicted, columns true, last = background; columns sum to 1 if normalised."""
    path = figure_path(save_path, "confusion_matrix.png")
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
    return save_figure(fig, path)


# results.csv columns laid out as YOLOv5 does: training losses and P/R on top, val losses and mAP below


def plot_view_confusion_matrix(
    matrix: np.ndarray, names: Sequence[str], save_path: str | Path, normalize: bool = True
) -> Path:
    """view_confusion_matrix.png of a [K, K] view matrix: rows true, columns predicted (no background).

    Normalised, each row sums to 1 so the diagonal reads as per-view recall; cells show the
    fraction with the count beneath it. Unnormalised, cells show counts.
    """
    path = figure_path(save_path, "view_confusion_matrix.png")
    counts = np.asarray(matrix, dtype=np.float64)
    n = counts.shape[0]
    row_totals = counts.sum(1, keepdims=True)
    values = np.divide(counts, row_totals, out=np.zeros_like(counts), where=row_totals > 0) if normalize else counts
    tick_labels = names_list(names, n)

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
    return save_figure(fig, path)
