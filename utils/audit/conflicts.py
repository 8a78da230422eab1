"""Conflicting labels between duplicates and near-duplicates: another view, other classes, other boxes.

Two copies of one picture must carry one label; when they do not, at most one of them is right and
no model can score both. Boxes are compared only when the class lists agree: matched class by class
(greedy, highest IoU first), they conflict when a matched pair overlaps less than BOX_IOU_THRESHOLD.
0.5 because that is where a detection stops counting as the same object for mAP50: a model that
learns one copy's box is scored wrong on the other.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from utils.audit.duplicates import Pair, where
from utils.audit.issues import Issue, boxes_text, view_name
from utils.audit.records import AuditData
from utils.boxes import box_iou_np, xywh2xyxy

BOX_IOU_THRESHOLD = 0.5


@dataclass(frozen=True)
class Conflict:
    """One way two labels disagree; `worst_iou` only for box conflicts."""

    kind: str
    detail: str
    worst_iou: float | None = None


def worst_match_iou(boxes_a: np.ndarray, boxes_b: np.ndarray) -> float | None:
    """Lowest IoU among boxes matched class by class (greedy, best overlap first); None if no box.

    Both box sets must hold the same classes the same number of times (rows cls cx cy w h).
    """
    worst = None
    for cls in sorted(set(boxes_a[:, 0].tolist())):
        a = xywh2xyxy(boxes_a[boxes_a[:, 0] == cls, 1:5].astype(np.float64))
        b = xywh2xyxy(boxes_b[boxes_b[:, 0] == cls, 1:5].astype(np.float64))
        iou = box_iou_np(a, b)
        for _ in range(min(len(a), len(b))):
            i, j = np.unravel_index(int(np.argmax(iou)), iou.shape)
            worst = float(iou[i, j]) if worst is None else min(worst, float(iou[i, j]))
            iou[i, :], iou[:, j] = -1.0, -1.0
    return worst


def compare_labels(
    boxes_a: np.ndarray, view_a: int, boxes_b: np.ndarray, view_b: int, names: dict[int, str],
    cls_names: list[str] | None = None, iou_threshold: float = BOX_IOU_THRESHOLD,
) -> list[Conflict]:
    """How two labels of the same picture disagree (empty list: they agree).

    A view counts only when both images have one (a missing view line is not a conflict).
    """
    conflicts = []
    if view_a >= 0 and view_b >= 0 and view_a != view_b:
        conflicts.append(Conflict("view_conflict", f"{view_name(view_a, cls_names)} vs {view_name(view_b, cls_names)}"))
    classes_a = Counter(int(c) for c in boxes_a[:, 0])
    classes_b = Counter(int(c) for c in boxes_b[:, 0])
    if classes_a != classes_b:
        conflicts.append(Conflict("class_conflict", f"{boxes_text(boxes_a, names)} vs {boxes_text(boxes_b, names)}"))
    elif len(boxes_a):
        worst = worst_match_iou(boxes_a, boxes_b)
        if worst is not None and worst < iou_threshold:
            conflicts.append(Conflict("box_conflict", f"boxes overlap IoU {worst:.2f}", worst))
    return conflicts


def find_conflicts(data: AuditData, pairs: list[Pair], iou_threshold: float = BOX_IOU_THRESHOLD
                   ) -> list[tuple[Pair, Conflict]]:
    """Every (pair, way it disagrees); pairs with an unusable label file are left out (reported elsewhere)."""
    found = []
    for pair in pairs:
        a, b = data.records[pair.a], data.records[pair.b]
        if a.label_problem or b.label_problem:
            continue
        for conflict in compare_labels(a.boxes, a.view, b.boxes, b.view, data.names, data.cls_names, iou_threshold):
            found.append((pair, conflict))
    return found


def _given(data: AuditData, index: int, kind: str) -> str:
    record = data.records[index]
    if kind == "view_conflict":
        return view_name(record.view, data.cls_names)
    return boxes_text(record.boxes, data.names, places=kind == "box_conflict")


def conflict_issues(data: AuditData, found: list[tuple[Pair, Conflict]]) -> list[Issue]:
    """A row per (file, kind of conflict), both files of a pair: the strongest evidence, and how many more.

    Score: the pair's correlation for view and class conflicts (the more identical the pictures, the
    surer the conflict); 1 - IoU for box conflicts.
    """
    by_key: dict[tuple[int, str], list[tuple[float, int, Pair, Conflict]]] = {}
    for pair, conflict in found:
        score = 1.0 - conflict.worst_iou if conflict.worst_iou is not None else pair.corr
        for me, other in ((pair.a, pair.b), (pair.b, pair.a)):
            by_key.setdefault((me, conflict.kind), []).append((score, other, pair, conflict))
    issues = []
    for (me, kind), options in sorted(by_key.items()):
        score, other, pair, conflict = max(options, key=lambda o: (o[0], o[2].across, -o[1]))
        how = "byte-identical to" if pair.exact else f"correlation {pair.corr:.4f} with"
        more = f" (and {len(options) - 1} more)" if len(options) > 1 else ""
        evidence = f"{how} {where(data.records[other])}: {conflict.detail}{more}"
        issues.append(Issue(me, kind, evidence, _given(data, me, kind), _given(data, other, kind),
                            round(score, 6), other))
    return issues
