"""Image-level view classification metrics: confusion, accuracy, balanced accuracy, per-view P/R/F1.

Each image carries at most one view label (an int in [0, K), or -1 = no view label). Unlabelled
images are ignored everywhere, so adding them never changes a number. Zero divisions give 0
(a view never predicted has precision 0), never a warning or an exception.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

NO_VIEW = -1  # label of an image without a view label

TABLE_HEADER = ("%22s" + "%11s" * 4) % ("View", "Images", "P", "R", "F1")
ROW_FORMAT = "%22s" + "%11i" + "%11.3g" * 3


def _labelled(true: np.ndarray, pred: np.ndarray, n_views: int) -> tuple[np.ndarray, np.ndarray]:
    """Flat int arrays of the labelled samples only; out-of-range labels are a caller bug, so raise."""
    true = np.asarray(true).astype(np.int64).ravel()
    pred = np.asarray(pred).astype(np.int64).ravel()
    if true.shape != pred.shape:
        raise ValueError(f"true and pred differ in length: {true.shape[0]} vs {pred.shape[0]}")
    keep = true != NO_VIEW
    true, pred = true[keep], pred[keep]
    if ((true < 0) | (true >= n_views)).any():
        raise ValueError(f"view labels must be -1 or in [0, {n_views}), got {np.unique(true).tolist()}")
    if ((pred < 0) | (pred >= n_views)).any():
        raise ValueError(f"predicted views must be in [0, {n_views}), got {np.unique(pred).tolist()}")
    return true, pred


def view_confusion(true: np.ndarray, pred: np.ndarray, n_views: int) -> np.ndarray:
    """[K, K] counts, rows = true view, columns = predicted view; samples with true == -1 left out."""
    true, pred = _labelled(true, pred, n_views)
    return np.bincount(true * n_views + pred, minlength=n_views * n_views).reshape(n_views, n_views)


def _safe_divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator with 0 where the denominator is 0 (no warning)."""
    numerator = np.asarray(numerator, dtype=np.float64)
    denominator = np.asarray(denominator, dtype=np.float64)
    out = np.zeros(np.broadcast(numerator, denominator).shape)
    np.divide(numerator, denominator, out=out, where=denominator != 0)
    return out


@dataclass
class ViewMetrics:
    """Everything the view table, the plot and results.csv need, for one pass over a data set."""

    accuracy: float
    balanced_accuracy: float  # mean recall over views with support > 0
    precision: np.ndarray  # [K]
    recall: np.ndarray  # [K]
    f1: np.ndarray  # [K]
    support: np.ndarray  # [K] labelled images per true view
    confusion: np.ndarray  # [K, K] rows true, columns predicted
    n: int  # labelled images
    loss: float | None = None  # mean view loss over the batches that reported one
    present: np.ndarray = field(init=False, repr=False)  # [K] bool, support > 0

    def __post_init__(self) -> None:
        self.present = np.asarray(self.support) > 0

    def _macro(self, values: np.ndarray) -> float:
        return float(values[self.present].mean()) if self.present.any() else 0.0

    @property
    def macro_precision(self) -> float:
        """Mean precision over views with support (the `all` row)."""
        return self._macro(self.precision)

    @property
    def macro_recall(self) -> float:
        """Mean recall over views with support; equals balanced accuracy."""
        return self._macro(self.recall)

    @property
    def macro_f1(self) -> float:
        """Mean F1 over views with support."""
        return self._macro(self.f1)


def metrics_from_confusion(confusion: np.ndarray, loss: float | None = None) -> ViewMetrics:
    """ViewMetrics from a [K, K] confusion matrix (rows true, columns predicted)."""
    confusion = np.asarray(confusion, dtype=np.int64)
    correct = np.diag(confusion).astype(np.float64)
    support = confusion.sum(1)
    predicted = confusion.sum(0)
    n = int(support.sum())
    precision = _safe_divide(correct, predicted)
    recall = _safe_divide(correct, support)
    f1 = _safe_divide(2 * precision * recall, precision + recall)
    present = support > 0
    return ViewMetrics(
        accuracy=float(correct.sum() / n) if n else 0.0,
        balanced_accuracy=float(recall[present].mean()) if present.any() else 0.0,
        precision=precision,
        recall=recall,
        f1=f1,
        support=support,
        confusion=confusion,
        n=n,
        loss=loss,
    )


def compute_view_metrics(true: np.ndarray, pred: np.ndarray, n_views: int) -> ViewMetrics:
    """Metrics of predicted views against true views (-1 = unlabelled, ignored)."""
    return metrics_from_confusion(view_confusion(true, pred, n_views))


class ViewAccumulator:
    """Collects view predictions batch by batch during validation, then computes ViewMetrics once."""

    def __init__(self, n_views: int) -> None:
        self.n_views = n_views
        self._true: list[np.ndarray] = []
        self._pred: list[np.ndarray] = []
        self._conf: list[np.ndarray] = []
        self._loss_sum = 0.0
        self._loss_batches = 0

    def update(self, logits: torch.Tensor, views: torch.Tensor, loss: float | None = None) -> None:
        """Add one batch: logits [B, K], views [B] (-1 = unlabelled), optional batch-mean view loss."""
        if logits.ndim != 2 or logits.shape[1] != self.n_views:
            raise ValueError(f"expected view logits [B, {self.n_views}], got {tuple(logits.shape)}")
        logits = logits.detach().float().cpu()
        views = views.detach().cpu().long().reshape(-1)
        keep = views != NO_VIEW
        probabilities = logits[keep].softmax(1)
        confidence, prediction = probabilities.max(1)
        self._true.append(views[keep].numpy())
        self._pred.append(prediction.numpy())
        self._conf.append(confidence.numpy())
        if loss is not None:
            self._loss_sum += float(loss)
            self._loss_batches += 1

    @property
    def true(self) -> np.ndarray:
        """True views of the labelled samples seen so far."""
        return np.concatenate(self._true) if self._true else np.zeros(0, dtype=np.int64)

    @property
    def predictions(self) -> np.ndarray:
        """Arg-max predicted views of the labelled samples seen so far."""
        return np.concatenate(self._pred) if self._pred else np.zeros(0, dtype=np.int64)

    @property
    def confidences(self) -> np.ndarray:
        """Softmax probability of each predicted view."""
        return np.concatenate(self._conf) if self._conf else np.zeros(0, dtype=np.float32)

    def compute(self) -> ViewMetrics:
        """Metrics over everything seen; loss is the mean over batches that reported one (else None)."""
        metrics = compute_view_metrics(self.true, self.predictions, self.n_views)
        metrics.loss = self._loss_sum / self._loss_batches if self._loss_batches else None
        return metrics


def format_view_table(metrics: ViewMetrics, names: list[str]) -> str:
    """YOLOv5-style table printed after the detection table.

    A summary line (accuracy, balanced accuracy, labelled images, loss), then columns View, Images
    (labelled images of that view), P, R, F1: an `all` row of means over views with support, then
    one row per view.
    """
    summary = (
        f"View accuracy {metrics.accuracy:.3f}, balanced accuracy {metrics.balanced_accuracy:.3f} "
        f"({metrics.n} labelled images)"
    )
    if metrics.loss is not None:
        summary += f", view loss {metrics.loss:.4g}"
    lines = [summary, TABLE_HEADER]
    lines.append(ROW_FORMAT % ("all", metrics.n, metrics.macro_precision, metrics.macro_recall, metrics.macro_f1))
    for i in range(len(metrics.support)):
        name = str(names[i]) if i < len(names) else str(i)
        lines.append(ROW_FORMAT % (name, metrics.support[i], metrics.precision[i], metrics.recall[i], metrics.f1[i]))
    return "\n".join(lines)
