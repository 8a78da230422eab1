"""Label issues ranked by cleanlab from out-of-sample predictions: the view, and the boxes.

cleanlab is used as a library, not re-implemented: `cleanlab.filter.find_label_issues` (confident
learning, its default prune_by_noise_rate) decides which view labels are issues and
`cleanlab.rank.get_label_quality_scores` (self-confidence) ranks them;
`cleanlab.object_detection.filter.find_label_issues` decides which images have a box issue and the
three per-box scores of `cleanlab.object_detection.rank` (overlooked, swap, badloc), pooled per image
with its `pool_box_scores_per_image`, say which kind. This module only converts between this
project's rows and cleanlab's formats and turns cleanlab's answers into Issue rows.
"""
from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np

from utils.audit.issues import Issue, boxes_text, view_name
from utils.audit.predict import ImagePrediction
from utils.audit.records import AuditData, Record
from utils.boxes import box_iou_np, xywhn2xyxy

BOX_KINDS = ("box_overlooked", "box_swap", "box_badloc")


def view_label_issues(labels: np.ndarray, pred_probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(issue mask, label quality in [0, 1]) per image, from given views and predicted probabilities [N, K]."""
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    labels = np.asarray(labels, dtype=np.int64)
    pred_probs = np.asarray(pred_probs, dtype=np.float64)
    pred_probs = pred_probs / pred_probs.sum(1, keepdims=True)  # float32 softmax may miss 1 by rounding
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "too few examples in class k": expected on small splits
        mask = find_label_issues(labels, pred_probs)
    return np.asarray(mask, dtype=bool), get_label_quality_scores(labels, pred_probs)


def cleanlab_label(record: Record) -> dict:
    """A record's boxes in cleanlab's format: pixel x1, y1, x2, y2 and the class per box."""
    h, w = record.shape
    boxes = np.asarray(record.boxes, dtype=np.float64)
    return {"bboxes": xywhn2xyxy(boxes[:, 1:5], w, h) if len(boxes) else np.zeros((0, 4)),
            "labels": boxes[:, 0].astype(np.int64) if len(boxes) else np.zeros(0, np.int64),
            "image_name": record.path}


def cleanlab_prediction(boxes: np.ndarray, nc: int) -> np.ndarray:
    """NMS rows (x1, y1, x2, y2, conf, cls) -> cleanlab's per-class list: entry k is [M_k, 5] (box, prob)."""
    per_class = np.empty(nc, dtype=object)
    for k in range(nc):
        rows = boxes[boxes[:, 5] == k] if len(boxes) else np.zeros((0, 6))
        per_class[k] = rows[:, :5].astype(np.float64).reshape(-1, 5)
    return per_class


def box_label_issues(labels: list[dict], predictions: list[np.ndarray]) -> dict[str, object]:
    """cleanlab's verdict per image: 'issue' mask, 'quality' score, and per kind the pooled image score
    and the per-box scores (overlooked: one per predicted box; swap and badloc: one per label box)."""
    from cleanlab.object_detection.filter import find_label_issues
    from cleanlab.object_detection.rank import (compute_badloc_box_scores, compute_overlooked_box_scores,
                                                compute_swap_box_scores, get_label_quality_scores,
                                                pool_box_scores_per_image)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # empty-image and nan-mean warnings: cleanlab handles them itself
        per_box = {"box_overlooked": compute_overlooked_box_scores(labels=labels, predictions=predictions),
                   "box_swap": compute_swap_box_scores(labels=labels, predictions=predictions),
                   "box_badloc": compute_badloc_box_scores(labels=labels, predictions=predictions)}
        result: dict[str, object] = {
            "issue": np.asarray(find_label_issues(labels, predictions), dtype=bool),
            "quality": get_label_quality_scores(labels, predictions, verbose=False),
        }
        for kind, scores in per_box.items():
            result[kind] = pool_box_scores_per_image([s.copy() for s in scores])
            result[f"{kind}_boxes"] = scores
    return result


def _worst(scores: np.ndarray) -> int | None:
    """Index of the lowest non-NaN score, or None."""
    scores = np.asarray(scores, dtype=np.float64)
    if not len(scores) or np.all(np.isnan(scores)):
        return None
    return int(np.nanargmin(scores))


def _suggestion(kind: str, record: Record, label: dict, pred: np.ndarray, box_scores: np.ndarray,
                names: dict[int, str]) -> tuple[str, str]:
    """(given, suggested) for the box cleanlab scores worst in this image."""
    worst = _worst(box_scores)
    if kind == "box_overlooked":  # scores run over the predicted boxes, class by class (cleanlab's order)
        ordered = np.concatenate([pred[pred[:, 5] == k] for k in sorted(names)]) if len(pred) else pred
        if worst is None or worst >= len(ordered):
            return boxes_text(record.boxes, names, True), ""
        x1, y1, x2, y2, conf, cls = ordered[worst].tolist()
        h, w = record.shape
        xywh = f"{(x1 + x2) / 2 / w:.2f},{(y1 + y2) / 2 / h:.2f},{(x2 - x1) / w:.2f},{(y2 - y1) / h:.2f}"
        return boxes_text(record.boxes, names, True), f"add {names.get(int(cls), cls)}@{xywh} (conf {conf:.2f})"
    if worst is None or worst >= len(record.boxes):
        return boxes_text(record.boxes, names, True), ""
    given = boxes_text(record.boxes[worst:worst + 1], names, True)
    if not len(pred):
        return given, ""
    iou = box_iou_np(label["bboxes"][worst:worst + 1], pred[:, :4])[0]
    cls = int(record.boxes[worst, 0])
    if kind == "box_swap":
        other = np.flatnonzero(pred[:, 5] != cls)
        if not len(other):
            return given, ""
        best = other[np.argmax(iou[other] * pred[other, 4])]
        return given, f"{names.get(int(pred[best, 5]), int(pred[best, 5]))} (conf {pred[best, 4]:.2f})"
    same = np.flatnonzero(pred[:, 5] == cls)
    if not len(same):
        return given, ""
    best = same[np.argmax(pred[same, 4])]
    x1, y1, x2, y2 = pred[best, :4].tolist()
    h, w = record.shape
    return given, (f"{names.get(cls, cls)}@{(x1 + x2) / 2 / w:.2f},{(y1 + y2) / 2 / h:.2f},"
                   f"{(x2 - x1) / w:.2f},{(y2 - y1) / h:.2f} (IoU {iou[best]:.2f})")


def prediction_summary(records: Sequence[Record], preds: Sequence[ImagePrediction], conf: float = 0.25,
                       iou: float = 0.5) -> dict[str, float | int | None]:
    """How good the predictions cleanlab judges by are: the view accuracy on labelled images, and the share
    of label boxes a same-class prediction (conf >= `conf`) overlaps at IoU >= `iou` (None where not measured).

    A weak model makes cleanlab flag many correct labels, so the report states these beside its counts.
    """
    viewed = [(r.view, p.view_probs) for r, p in zip(records, preds) if r.view >= 0 and p.view_probs is not None]
    found = total = 0
    for record, pred in zip(records, preds):
        boxes = pred.boxes[pred.boxes[:, 4] >= conf] if len(pred.boxes) else pred.boxes
        label = cleanlab_label(record)
        for box, cls in zip(label["bboxes"], label["labels"]):
            total += 1
            same = boxes[boxes[:, 5] == cls] if len(boxes) else boxes
            found += bool(len(same) and box_iou_np(box[None], same[:, :4]).max() >= iou)
    return {"view_n": len(viewed),
            "view_accuracy": float(np.mean([int(np.argmax(p)) == v for v, p in viewed])) if viewed else None,
            "boxes_n": total, "boxes_found": found / total if total else None}


def model_issues(data: AuditData, indices: Sequence[int], preds: Sequence[ImagePrediction], source: str) -> list[Issue]:
    """Issue rows for the predicted records: view issues (when both labels and model have views) and box issues.

    `source` names where the predictions came from (the report and the evidence say it). Score:
    1 - cleanlab's label quality (higher = more suspect).
    """
    records = [data.records[i] for i in indices]
    issues: list[Issue] = []
    labelled = [j for j, r in enumerate(records) if r.view >= 0 and preds[j].view_probs is not None]
    if data.cls_names and len(labelled) >= 2:
        views = np.array([records[j].view for j in labelled])
        mask, quality = view_label_issues(views, np.stack([preds[j].view_probs for j in labelled]))
        for flag, q, j in zip(mask, quality, labelled):
            if flag:
                probs = preds[j].view_probs
                top = int(np.argmax(probs))
                issues.append(Issue(records[j].index, "view_issue",
                                    f"{source}: p({view_name(top, data.cls_names)}) = {probs[top]:.2f}, "
                                    f"p(given) = {probs[records[j].view]:.2f}",
                                    view_name(records[j].view, data.cls_names), view_name(top, data.cls_names),
                                    round(1.0 - float(q), 6)))
    if not records:
        return issues
    labels = [cleanlab_label(r) for r in records]
    predictions = [cleanlab_prediction(p.boxes, len(data.names)) for p in preds]
    verdict = box_label_issues(labels, predictions)
    for j, record in enumerate(records):
        if not verdict["issue"][j]:
            continue
        pooled = {kind: float(verdict[kind][j]) for kind in BOX_KINDS}
        kind = min(BOX_KINDS, key=lambda k: (np.nan_to_num(pooled[k], nan=1.0), BOX_KINDS.index(k)))
        given, suggested = _suggestion(kind, record, labels[j], preds[j].boxes, verdict[f"{kind}_boxes"][j], data.names)
        evidence = f"{source}: " + ", ".join(f"{k[4:]} {v:.2f}" for k, v in pooled.items()) + " (cleanlab, low = bad)"
        issues.append(Issue(record.index, kind, evidence, given, suggested,
                            round(1.0 - float(verdict["quality"][j]), 6)))
    return issues
