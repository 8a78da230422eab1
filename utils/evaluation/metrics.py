"""Detection metrics: matching, AP per class, P/R/F1 at the best mean-F1 confidence, confusion matrix.

Behaviour follows YOLOv5 so numbers are comparable: 10 IoU thresholds 0.50:0.05:0.95, precision
envelope + 101-point interpolation + trapezoid integration, P/R/F1 read at the confidence that
maximises the (smoothed) mean F1 over classes, fitness = 0.1 mAP50 + 0.9 mAP50-95.
"""
from __future__ import annotations

from typing import Mapping, NamedTuple, Sequence

import numpy as np
import torch

from utils.boxes import box_iou

IOU_THRESHOLDS = torch.linspace(0.5, 0.95, 10)  # the COCO / YOLOv5 set, mAP50 is column 0
FITNESS_WEIGHTS = np.array([0.0, 0.0, 0.1, 0.9])  # P, R, mAP50, mAP50-95


def fitness(metrics: np.ndarray) -> np.ndarray:
    """Model selection score from [..., 4] rows of (P, R, mAP50, mAP50-95): 0.1 mAP50 + 0.9 mAP50-95."""
    metrics = np.asarray(metrics, dtype=np.float64)
    return (metrics[..., :4] * FITNESS_WEIGHTS).sum(-1)


def smooth(values: np.ndarray, fraction: float = 0.05) -> np.ndarray:
    """Moving average over an odd window of about `fraction` of the length, edges padded by repetition.

    Keeps the best-F1 confidence from landing on a single noisy spike of the F1 curve
    (1000 points, fraction 0.1 -> a 101-point window).
    """
    values = np.asarray(values, dtype=np.float64)
    half = round(len(values) * fraction / 2)
    window = 2 * half + 1
    padded = np.concatenate((np.full(half, values[0]), values, np.full(half, values[-1])))
    return np.convolve(padded, np.ones(window) / window, mode="valid")


def compute_ap(recall: np.ndarray, precision: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """AP of one PR curve: sentinels, precision envelope, 101-point interpolation, trapezoid integral.

    Returns (ap, envelope precision, recall with sentinels); the last two feed the PR plot.
    """
    recall_ext = np.concatenate(([0.0], np.asarray(recall, dtype=np.float64), [1.0]))
    precision_ext = np.concatenate(([1.0], np.asarray(precision, dtype=np.float64), [0.0]))
    envelope = np.flip(np.maximum.accumulate(np.flip(precision_ext)))  # best precision at recall >= r
    grid = np.linspace(0, 1, 101)
    ap = float(np.trapezoid(np.interp(grid, recall_ext, envelope), grid))
    return ap, envelope, recall_ext


class APCurves(NamedTuple):
    """The curves behind `ap_per_class`, for PR/F1/P/R plots (utils/evaluation/plots.py)."""

    grid: np.ndarray  # [1000] in [0, 1]: the confidence axis, and the recall axis of precision_at_recall
    precision_at_recall: np.ndarray  # [nc_present, 1000] precision envelope at IoU 0.5
    f1: np.ndarray  # [nc_present, 1000] against confidence
    precision: np.ndarray  # [nc_present, 1000] against confidence
    recall: np.ndarray  # [nc_present, 1000] against confidence
    names: list  # [nc_present] class names (or ids) in row order


class PerClassAP(NamedTuple):
    """Result of `ap_per_class`; its first seven fields are YOLOv5's tuple (tp, fp, p, r, f1, ap, classes)."""

    tp: np.ndarray  # [nc_present] true positives at the best-F1 confidence
    fp: np.ndarray  # [nc_present] false positives at that confidence
    p: np.ndarray  # [nc_present] precision at that confidence
    r: np.ndarray  # [nc_present] recall at that confidence
    f1: np.ndarray  # [nc_present]
    ap: np.ndarray  # [nc_present, n_iou]
    unique_classes: np.ndarray  # [nc_present] int class ids with at least one label
    curves: APCurves | None = None


def _names_for(classes: np.ndarray, names: Sequence[str] | Mapping[int, str]) -> list[str]:
    """Names of the classes present, in order; falls back to the class id."""
    lookup = dict(names) if isinstance(names, Mapping) else dict(enumerate(names))
    return [str(lookup.get(int(c), int(c))) for c in classes]


def ap_per_class(
    tp: np.ndarray,
    conf: np.ndarray,
    pred_cls: np.ndarray,
    target_cls: np.ndarray,
    names: Sequence[str] | Mapping[int, str] = (),
    eps: float = 1e-16,
) -> PerClassAP:
    """AP at every IoU threshold and P/R/F1 at the best mean-F1 confidence, for each class with labels.

    tp: bool [n_pred, n_iou] (from `match_predictions`), conf / pred_cls: [n_pred], target_cls: [n_labels].
    Classes that only appear in predictions are ignored (their FPs have no class to count against).
    The curves (`curves`) feed utils/evaluation/plots.plot_ap_curves.
    """
    tp = np.asarray(tp, dtype=np.float64)
    if tp.ndim == 1:
        tp = tp[:, None]
    conf = np.asarray(conf, dtype=np.float64)
    pred_cls = np.asarray(pred_cls)
    target_cls = np.asarray(target_cls)

    order = np.argsort(-conf, kind="stable")
    tp, conf, pred_cls = tp[order], conf[order], pred_cls[order]

    unique_classes, n_labels = np.unique(target_cls, return_counts=True)
    n_classes, n_iou = len(unique_classes), tp.shape[1]
    conf_grid = np.linspace(0, 1, 1000)
    ap = np.zeros((n_classes, n_iou))
    p_curve = np.zeros((n_classes, 1000))
    r_curve = np.zeros((n_classes, 1000))
    pr_curves = np.zeros((n_classes, 1000))  # precision on a recall grid at IoU 0.5, for the PR plot
    for ci, cls in enumerate(unique_classes):
        is_cls = pred_cls == cls
        if not is_cls.any():
            continue
        tp_cum = tp[is_cls].cumsum(0)
        fp_cum = (1 - tp[is_cls]).cumsum(0)
        recall = tp_cum / (n_labels[ci] + eps)
        precision = tp_cum / (tp_cum + fp_cum)
        # curves against confidence; conf is decreasing, so interpolate on -conf
        r_curve[ci] = np.interp(-conf_grid, -conf[is_cls], recall[:, 0], left=0)
        p_curve[ci] = np.interp(-conf_grid, -conf[is_cls], precision[:, 0], left=1)
        for j in range(n_iou):
            ap[ci, j], envelope, recall_ext = compute_ap(recall[:, j], precision[:, j])
            if j == 0:
                pr_curves[ci] = np.interp(conf_grid, recall_ext, envelope)

    f1_curve = 2 * p_curve * r_curve / (p_curve + r_curve + eps)
    if n_classes:
        best = int(smooth(f1_curve.mean(0), 0.1).argmax())
    else:
        best = 0
    p, r, f1 = p_curve[:, best], r_curve[:, best], f1_curve[:, best]
    tp_at_best = (r * n_labels).round()
    fp_at_best = (tp_at_best / (p + eps) - tp_at_best).round()
    curves = APCurves(conf_grid, pr_curves, f1_curve, p_curve, r_curve, _names_for(unique_classes, names))
    return PerClassAP(tp_at_best, fp_at_best, p, r, f1, ap, unique_classes.astype(int), curves)


def match_predictions(
    detections: torch.Tensor, labels: torch.Tensor, iouv: torch.Tensor = IOU_THRESHOLDS
) -> torch.Tensor:
    """Which detections are true positives at each IoU threshold, one detection per label at most.

    detections [n, 6] = x1, y1, x2, y2, conf, cls; labels [m, 5] = cls, x1, y1, x2, y2 (same pixels).
    Per threshold: candidate pairs need IoU >= threshold and the same class; each detection keeps its
    highest-IoU label, then each label keeps its most confident detection (first in NMS order), as
    YOLOv5 effectively does. Returns bool [n, len(iouv)] on the detections' device.
    """
    iouv = torch.as_tensor(iouv)
    correct = np.zeros((detections.shape[0], iouv.shape[0]), dtype=bool)
    if detections.shape[0] and labels.shape[0]:
        iou = box_iou(labels[:, 1:5].float(), detections[:, :4].float())  # [m, n]
        same_class = labels[:, 0:1] == detections[:, 5]
        det_conf = detections[:, 4].detach().cpu().numpy()
        for t, threshold in enumerate(iouv.tolist()):
            label_idx, det_idx = torch.nonzero((iou >= threshold) & same_class, as_tuple=True)
            if not label_idx.shape[0]:
                continue
            pair_iou = iou[label_idx, det_idx].detach().cpu().numpy()
            label_idx, det_idx = label_idx.cpu().numpy(), det_idx.cpu().numpy()
            # each detection: its best-IoU label
            by_iou = np.argsort(-pair_iou, kind="stable")
            label_idx, det_idx = label_idx[by_iou], det_idx[by_iou]
            _, first = np.unique(det_idx, return_index=True)
            label_idx, det_idx = label_idx[first], det_idx[first]
            # each label: its most confident detection (ties -> earlier detection)
            by_conf = np.lexsort((det_idx, -det_conf[det_idx]))
            label_idx, det_idx = label_idx[by_conf], det_idx[by_conf]
            _, first = np.unique(label_idx, return_index=True)
            correct[det_idx[first], t] = True
    return torch.tensor(correct, dtype=torch.bool, device=detections.device)


def _one_to_one_by_iou(
    label_idx: np.ndarray, det_idx: np.ndarray, pair_iou: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Greedy one-to-one pairs: each detection keeps its best-IoU label, then each label its best-IoU detection."""
    for use_detection_key in (True, False):
        by_iou = np.argsort(-pair_iou, kind="stable")
        label_idx, det_idx, pair_iou = label_idx[by_iou], det_idx[by_iou], pair_iou[by_iou]
        _, first = np.unique(det_idx if use_detection_key else label_idx, return_index=True)
        label_idx, det_idx, pair_iou = label_idx[first], det_idx[first], pair_iou[first]
    return label_idx, det_idx


class ConfusionMatrix:
    """(nc + 1) x (nc + 1) counts, rows = predicted class, columns = true class; index nc = background.

    Class-agnostic matching (IoU > iou_thres) so that confusions between classes show up; detections
    with conf below `conf` are ignored. Unmatched labels count as background predictions (missed),
    unmatched detections as background truths (false alarms).
    """

    def __init__(self, nc: int, conf: float = 0.25, iou_thres: float = 0.45) -> None:
        self.nc = nc
        self.conf = conf
        self.iou_thres = iou_thres
        self.matrix = np.zeros((nc + 1, nc + 1))

    def process_batch(self, detections: torch.Tensor | None, labels: torch.Tensor) -> None:
        """Add one image: detections [n, 6] x1 y1 x2 y2 conf cls (or None), labels [m, 5] cls x1 y1 x2 y2.

        With detections None, labels may also be just the class column [m] (as YOLOv5's val passes it).
        """
        true_classes = (labels if labels.ndim == 1 else labels[:, 0]).int().tolist()
        if detections is None or not detections.shape[0]:
            for true_class in true_classes:
                self.matrix[self.nc, true_class] += 1
            return
        detections = detections[detections[:, 4] > self.conf]
        pred_classes = detections[:, 5].int().tolist()
        iou = box_iou(labels[:, 1:5].float(), detections[:, :4].float())
        label_idx, det_idx = torch.nonzero(iou > self.iou_thres, as_tuple=True)
        pair_iou = iou[label_idx, det_idx].cpu().numpy()
        label_idx, det_idx = label_idx.cpu().numpy(), det_idx.cpu().numpy()
        label_idx, det_idx = _one_to_one_by_iou(label_idx, det_idx, pair_iou)
        matched_det_for_label = dict(zip(label_idx.tolist(), det_idx.tolist()))
        for li, true_class in enumerate(true_classes):
            if li in matched_det_for_label:
                self.matrix[pred_classes[matched_det_for_label[li]], true_class] += 1
            else:
                self.matrix[self.nc, true_class] += 1  # missed: predicted background
        matched_dets = set(det_idx.tolist())
        for di, pred_class in enumerate(pred_classes):
            if di not in matched_dets:
                self.matrix[pred_class, self.nc] += 1  # false alarm: truth is background

    def tp_fp(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-class true positives (diagonal) and false positives (row sum minus diagonal), background excluded."""
        tp = self.matrix.diagonal()
        fp = self.matrix.sum(1) - tp
        return tp[:-1], fp[:-1]


class DetectionMetrics:
    """Accumulates per-image matches over a validation pass and turns them into YOLOv5's metrics.

    update() once per image with that image's NMS output and labels (pixels, same image space);
    compute() at the end. Also feeds a ConfusionMatrix so val.py needs one object.
    """

    def __init__(
        self,
        nc: int,
        names: Sequence[str] | Mapping[int, str] = (),
        iouv: torch.Tensor = IOU_THRESHOLDS,
        confusion_conf: float = 0.25,
        confusion_iou: float = 0.45,
    ) -> None:
        self.nc = nc
        self.names = names
        self.iouv = torch.as_tensor(iouv)
        self.confusion_matrix = ConfusionMatrix(nc, conf=confusion_conf, iou_thres=confusion_iou)
        self._correct: list[np.ndarray] = []
        self._conf: list[np.ndarray] = []
        self._pred_cls: list[np.ndarray] = []
        self._target_cls: list[np.ndarray] = []
        self.seen = 0

    def update(self, detections: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Add one image: detections [n, 6] x1 y1 x2 y2 conf cls, labels [m, 5] cls x1 y1 x2 y2.

        Returns the image's TP matrix [n, n_iou]."""
        self.seen += 1
        n_iou = self.iouv.shape[0]
        if detections is None:
            detections = torch.zeros((0, 6), device=labels.device)
        correct = torch.zeros((detections.shape[0], n_iou), dtype=torch.bool, device=detections.device)
        if detections.shape[0] and labels.shape[0]:
            correct = match_predictions(detections, labels, self.iouv)
        if detections.shape[0] or labels.shape[0]:
            self._correct.append(correct.cpu().numpy())
            self._conf.append(detections[:, 4].detach().cpu().numpy())
            self._pred_cls.append(detections[:, 5].detach().cpu().numpy())
            self._target_cls.append(labels[:, 0].detach().cpu().numpy())
        self.confusion_matrix.process_batch(detections, labels)
        return correct

    def compute(self) -> dict:
        """Dataset metrics: mp, mr, map50, map (means over classes with labels) plus per-class arrays.

        Per-class arrays (`p`, `r`, `ap50`, `ap`) are indexed like `classes` (classes with labels);
        `nt` is the label count for every class id 0..nc-1.
        """
        n_iou = self.iouv.shape[0]
        correct = np.concatenate(self._correct, 0) if self._correct else np.zeros((0, n_iou), bool)
        conf = np.concatenate(self._conf) if self._conf else np.zeros(0)
        pred_cls = np.concatenate(self._pred_cls) if self._pred_cls else np.zeros(0)
        target_cls = np.concatenate(self._target_cls).astype(int) if self._target_cls else np.zeros(0, int)
        nt = np.bincount(target_cls, minlength=self.nc)
        result = ap_per_class(correct, conf, pred_cls, target_cls, self.names)
        ap50 = result.ap[:, 0] if result.ap.size else np.zeros(0)
        ap = result.ap.mean(1) if result.ap.size else np.zeros(0)

        def mean(x: np.ndarray) -> float:
            return float(x.mean()) if x.size else 0.0

        return {
            "mp": mean(result.p),
            "mr": mean(result.r),
            "map50": mean(ap50),
            "map": mean(ap),
            "classes": result.unique_classes,
            "p": result.p,
            "r": result.r,
            "f1": result.f1,
            "ap50": ap50,
            "ap": ap,
            "tp": result.tp,
            "fp": result.fp,
            "nt": nt,
            "seen": self.seen,
        }
