"""One row per suspect file: what it is suspected of, the evidence, and issues.csv.

Every check returns Issue rows; the report, the contact sheets and --write-clean all read them, so
a finding is described once. `score` is always "higher = more suspect", in [0, 1].
"""
from __future__ import annotations

import csv
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from utils.audit.records import Record

# kind -> what it means (the report's legend, in this order)
KINDS = {
    "unreadable_image": "the image cannot be decoded (training skips it)",
    "corrupt_label": "the label file is rejected by the loader (training skips the image)",
    "exact_duplicate_within": "byte-identical to another file of the same split (the first copy is kept)",
    "exact_duplicate_across": "byte-identical to a file of an earlier split (train, then val, then test)",
    "near_duplicate_within": "nearly the same picture as an earlier file of the same split",
    "near_duplicate_across": "nearly the same picture as a file of an earlier split",
    "view_conflict": "a duplicate or near-duplicate carries another view",
    "class_conflict": "a duplicate or near-duplicate carries other box classes",
    "box_conflict": "a duplicate or near-duplicate has the same classes but boxes in other places",
    "group_leak": "its patient (or video) also has images in an earlier split",
    "mixed_view_group": "its video's other frames mostly carry another view",
    "view_issue": "the model's out-of-sample view probabilities contradict the label (cleanlab)",
    "box_overlooked": "the model confidently sees an object with no label box (cleanlab)",
    "box_swap": "a label box's class looks swapped for another class (cleanlab)",
    "box_badloc": "a label box looks badly placed (cleanlab)",
}
CONFLICT_KINDS = ("view_conflict", "class_conflict", "box_conflict")
MODEL_KINDS = ("view_issue", "box_overlooked", "box_swap", "box_badloc")
CSV_COLUMNS = ("file", "split", "kind", "evidence", "given", "suggested", "score")


@dataclass(frozen=True)
class Issue:
    """One suspect: `record` indexes the audit's records; `partner` the record that is the evidence, if any."""

    record: int
    kind: str
    evidence: str
    given: str
    suggested: str
    score: float
    partner: int | None = None


def view_name(view: int, cls_names: Sequence[str] | None) -> str:
    """The view's name, '' without a view task, 'none' for an image without a view label."""
    if not cls_names:
        return ""
    return cls_names[view] if 0 <= view < len(cls_names) else "none"


def boxes_text(boxes: np.ndarray, names: dict[int, str], places: bool = False) -> str:
    """Box classes as text ('TR', 'person person dog'); with `places`, each box's cx,cy,w,h too."""
    if len(boxes) == 0:
        return "no boxes"
    parts = []
    for cls, *xywh in np.asarray(boxes).tolist():
        name = names.get(int(cls), str(int(cls)))
        parts.append(f"{name}@{','.join(f'{v:.2f}' for v in xywh)}" if places else name)
    return " ".join(parts)


def label_text(record: Record, names: dict[int, str], cls_names: Sequence[str] | None, places: bool = False) -> str:
    """What a file is labelled with, in one cell: 'PLAX | TR' (view, then boxes)."""
    parts = [view_name(record.view, cls_names)] if cls_names else []
    return " | ".join(parts + [boxes_text(record.boxes, names, places)])


def relative_name(path: str, root: str | None) -> str:
    """The path relative to the dataset root where it lies under it (shorter to read), else as given."""
    if root:
        try:
            return str(Path(path).resolve().relative_to(Path(root).resolve()))
        except ValueError:
            pass
    return path


def sort_issues(issues: Iterable[Issue]) -> list[Issue]:
    """By kind (in KINDS order), then the most suspect first, then the record (deterministic)."""
    order = {kind: i for i, kind in enumerate(KINDS)}
    return sorted(issues, key=lambda it: (order.get(it.kind, len(order)), -it.score, it.record))


def write_issues_csv(path: Path, issues: Sequence[Issue], records: Sequence[Record], root: str | None) -> Path:
    """issues.csv: one row per (file, kind), columns CSV_COLUMNS."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for issue in issues:
            row = asdict(issue)
            record = records[issue.record]
            writer.writerow({"file": relative_name(record.path, root), "split": record.split, "kind": issue.kind,
                             "evidence": row["evidence"], "given": row["given"], "suggested": row["suggested"],
                             "score": f"{issue.score:.4f}"})
    return path


def file_issues(records: Sequence[Record]) -> list[Issue]:
    """Rows for images that cannot be decoded and label files the loader rejects (training skips both)."""
    issues = []
    for r in records:
        if r.shape is None:
            issues.append(Issue(r.index, "unreadable_image", f"cv2 cannot decode {r.name}", "", "", 1.0))
        if r.label_problem:
            issues.append(Issue(r.index, "corrupt_label", r.label_problem.replace("\n", " "), "", "", 1.0))
    return issues
