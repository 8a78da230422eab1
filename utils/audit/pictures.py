"""Pictures a person can judge at a glance: contact sheets of suspects, the video-by-split view heat
map, and the ceiling's agreement-by-similarity bars.

Contact sheet cell: the suspect (its label boxes drawn) beside its evidence image when there is
one (the duplicate it conflicts with), then the kind, score, file, given and suggested label.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from utils.audit.issues import Issue
from utils.audit.records import AuditData, Record
from utils.boxes import xywhn2xyxy
from utils.plots import colors, figure_path, plt, save_figure

THUMB = (224, 168)  # (w, h) of one thumbnail
COLUMNS = 3
TEXT_LINES = 5
LINE_H = 14
FONT = cv2.FONT_HERSHEY_SIMPLEX


def _thumb(record: Record | None, names: dict[int, str]) -> np.ndarray:
    """The image letterboxed into THUMB with its label boxes, or a grey tile when there is none."""
    w, h = THUMB
    tile = np.full((h, w, 3), 60, np.uint8)
    image = cv2.imread(record.path) if record is not None else None
    if image is None:
        return tile
    scale = min(w / image.shape[1], h / image.shape[0])
    nw, nh = max(int(image.shape[1] * scale), 1), max(int(image.shape[0] * scale), 1)
    x0, y0 = (w - nw) // 2, (h - nh) // 2
    tile[y0:y0 + nh, x0:x0 + nw] = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA)
    for cls, *xyxy in np.concatenate([record.boxes[:, :1], xywhn2xyxy(record.boxes[:, 1:5], nw, nh, x0, y0)], 1):
        p1, p2 = (int(xyxy[0]), int(xyxy[1])), (int(xyxy[2]), int(xyxy[3]))
        cv2.rectangle(tile, p1, p2, colors(int(cls), bgr=True), 2)
        cv2.putText(tile, names.get(int(cls), str(int(cls))), (p1[0], max(p1[1] - 3, 10)), FONT, 0.4,
                    colors(int(cls), bgr=True), 1, cv2.LINE_AA)
    return tile


def _fit(text: str, width: int, scale: float = 0.38) -> str:
    """Cut `text` (with '...') so it fits `width` pixels."""
    while text and cv2.getTextSize(text, FONT, scale, 1)[0][0] > width:
        text = text[:-4] + "..." if len(text) > 4 else text[:-1]
    return text


def _cell(issue: Issue, data: AuditData) -> np.ndarray:
    record = data.records[issue.record]
    partner = data.records[issue.partner] if issue.partner is not None else None
    images = np.hstack([_thumb(record, data.names), np.full((THUMB[1], 4, 3), 255, np.uint8),
                        _thumb(partner, data.names)])
    width = images.shape[1]
    text = np.full((TEXT_LINES * LINE_H + 6, width, 3), 255, np.uint8)
    lines = [f"{issue.kind}  score {issue.score:.3f}", f"{record.split}/{record.name}",
             f"given: {issue.given}", f"suggested: {issue.suggested or '-'}",
             f"right: {partner.split}/{partner.name}" if partner else "right: (no evidence image)"]
    for i, line in enumerate(lines):
        cv2.putText(text, _fit(line, width - 6), (3, LINE_H * (i + 1)), FONT, 0.38, (0, 0, 0), 1, cv2.LINE_AA)
    cell = np.vstack([images, text])
    return cv2.copyMakeBorder(cell, 3, 3, 3, 3, cv2.BORDER_CONSTANT, value=(255, 255, 255))


def contact_sheet(issues: Sequence[Issue], data: AuditData, path: Path, limit: int = 24) -> Path | None:
    """A grid of the first `limit` issues (already ranked), a pair shown once; None when there is none."""
    seen, unique = set(), []
    for issue in issues:
        key = (issue.kind, frozenset((issue.record, issue.partner)))
        if key not in seen:
            seen.add(key)
            unique.append(issue)
    issues = unique[:limit]
    if not issues:
        return None
    cells = [_cell(issue, data) for issue in issues]
    blank = np.full_like(cells[0], 255)
    cells += [blank] * (-len(cells) % COLUMNS)
    rows = [np.hstack(cells[i:i + COLUMNS]) for i in range(0, len(cells), COLUMNS)]
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.vstack(rows), [cv2.IMWRITE_JPEG_QUALITY, 90])
    return path


def view_heatmap(rows: list[str], columns: list[str], matrix: np.ndarray, path: Path, title: str) -> Path:
    """Frame counts per (video row, split:view column), numbers written in; colour = the share of that
    video's frames in that split, so a video labelled one view in train and another in val shows as
    dark cells under different views in the two blocks."""
    matrix = np.asarray(matrix, dtype=float)
    share = np.zeros_like(matrix)
    blocks = [c.split(":")[0] for c in columns]
    for split in dict.fromkeys(blocks):
        cols = [j for j, b in enumerate(blocks) if b == split]
        share[:, cols] = matrix[:, cols] / np.maximum(matrix[:, cols].sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(max(6.0, 3 + 0.7 * len(columns)), 1.5 + 0.22 * len(rows)))
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1, aspect="auto")
    for (i, j), value in np.ndenumerate(matrix):
        if value:
            ax.text(j, i, f"{int(value)}", ha="center", va="center", fontsize=6,
                    color="white" if share[i, j] > 0.6 else "black")
    ax.set_xticks(range(len(columns)), columns, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(len(rows)), rows, fontsize=6)
    for j in range(1, len(columns)):
        if columns[j].split(":")[0] != columns[j - 1].split(":")[0]:
            ax.axvline(j - 0.5, color="black", linewidth=1)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return save_figure(fig, figure_path(path, "video_views.png"), dpi=130)


def agreement_bars(bins: list[dict], labels: list[str], path: Path, split: str) -> Path:
    """Share of held-out frames whose nearest train frame carries the same view, per correlation bin."""
    fracs = [b["frac"] if b["frac"] is not None else 0.0 for b in bins]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    bars = ax.bar(labels, fracs, color="tab:blue")
    for bar, b in zip(bars, bins):
        ax.text(bar.get_x() + bar.get_width() / 2, bar.get_height() + 0.02, f"n={b['n']}", ha="center", fontsize=8)
    ax.set_ylim(0, 1.1)
    ax.set_xlabel("correlation with the nearest train frame")
    ax.set_ylabel("share with the same view label")
    ax.set_title(f"{split} vs nearest train frame: view-label agreement")
    fig.tight_layout()
    return save_figure(fig, figure_path(path, f"agreement_{split}.png"), dpi=120)
