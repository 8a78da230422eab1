"""Group checks: patients (or videos) in two splits, and videos whose frames carry mixed views.

The groups come from utils.data.groups (the rules `python -m utils.split` splits by), so the audit
and the splitter never disagree on what a patient is.
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

import numpy as np

from utils.audit.issues import Issue, label_text, view_name
from utils.audit.records import AuditData, Record
from utils.data.groups import GROUP_WORD, Overlap, SplitError, compile_group_regex, group_of, overlap


@dataclass
class Grouping:
    """How files were grouped, or why they could not be (then `groups` is None)."""

    word: str  # 'patients', 'videos', 'groups', ...
    how: str  # '--by patient' or '--group-regex ...'
    groups: list[str] | None  # one per record
    by: str = "patient"
    pattern: re.Pattern | None = None
    skipped: str | None = None


def group_records(records: list[Record], by: str, regex: str | re.Pattern | None, strict: bool) -> Grouping:
    """Each record's group. A name that does not fit stops with SplitError when `strict` (the user asked
    for this grouping), else the check is skipped with the reason (e.g. COCO names have no patient)."""
    pattern = compile_group_regex(regex)
    how = f"--group-regex {pattern.pattern}" if pattern else f"--by {by}"
    word = GROUP_WORD["regex" if pattern else by]
    try:
        return Grouping(word, how, [group_of(r.path, by, pattern) for r in records], by, pattern)
    except SplitError as error:
        if strict:
            raise
        return Grouping(word, how, None, by, pattern, str(error))


def leak_overlaps(data: AuditData, grouping: Grouping) -> list[Overlap]:
    """utils.data.groups.overlap for every pair of splits (nothing when the grouping was skipped)."""
    if grouping.groups is None:
        return []
    return overlap(data.splits(), grouping.by, grouping.pattern)


def leak_issues(data: AuditData, grouping: Grouping) -> list[Issue]:
    """A row per image whose group also has images in an earlier split (a held-out image the model has
    effectively seen: the same patient, often the same video). Score: the share of the group's images
    that sit in the earlier splits."""
    if grouping.groups is None:
        return []
    records, groups = data.records, grouping.groups
    per_split: dict[str, Counter] = {}
    for r, g in zip(records, groups):
        per_split.setdefault(r.split, Counter())[g] += 1
    order = list(per_split)
    issues = []
    for r, g in zip(records, groups):
        earlier = [s for s in order[:order.index(r.split)] if per_split[s][g]]
        if not earlier:
            continue
        counts = ", ".join(f"{per_split[s][g]} in {s}" for s in order if per_split[s][g])
        total = sum(per_split[s][g] for s in order)
        share = sum(per_split[s][g] for s in earlier) / total
        issues.append(Issue(r.index, "group_leak", f"{grouping.word[:-1]} {g}: {counts}",
                            label_text(r, data.names, data.cls_names), "", round(share, 6)))
    return issues


@dataclass
class VideoViews:
    """The view labels of one video's frames, per split."""

    video: str
    counts: dict[str, Counter]  # split -> Counter(view index)

    def total(self) -> Counter:
        out: Counter = Counter()
        for c in self.counts.values():
            out.update(c)
        return out

    @property
    def mixed(self) -> bool:
        return len(self.total()) > 1

    @property
    def mixed_within_a_split(self) -> bool:
        return any(len(c) > 1 for c in self.counts.values())

    def majority(self) -> int:
        """The most frequent view; a tie goes to the lower view index (deterministic)."""
        total = self.total()
        return min(total, key=lambda v: (-total[v], v))


def video_views(data: AuditData, videos: list[str]) -> list[VideoViews]:
    """Per video (sorted), the labelled frames' views per split."""
    table: dict[str, dict[str, Counter]] = {}
    for r, video in zip(data.records, videos):
        if r.view >= 0:
            table.setdefault(video, {}).setdefault(r.split, Counter())[r.view] += 1
    return [VideoViews(v, table[v]) for v in sorted(table)]


def mixed_view_issues(data: AuditData, videos: list[str], table: list[VideoViews]) -> list[Issue]:
    """A row per frame whose view differs from its video's majority view; score = the majority's share.

    One video is one probe position most of the time, so a lone frame of another view is suspect;
    a video split half and half may be a real change of view (its score is then only 0.5).
    """
    by_video = {v.video: v for v in table}
    issues = []
    for r, video in zip(data.records, videos):
        entry = by_video.get(video)
        if r.view < 0 or entry is None or not entry.mixed:
            continue
        majority = entry.majority()
        if r.view == majority:
            continue
        total = entry.total()
        described = ", ".join(
            f"{view_name(v, data.cls_names)} {n} (" + ", ".join(f"{s} {c[v]}" for s, c in entry.counts.items() if c[v])
            + ")" for v, n in sorted(total.items(), key=lambda kv: (-kv[1], kv[0])))
        issues.append(Issue(r.index, "mixed_view_group", f"video {video}: {described}",
                            view_name(r.view, data.cls_names), view_name(majority, data.cls_names),
                            round(total[majority] / sum(total.values()), 6)))
    return issues


def video_matrix(table: list[VideoViews], splits: list[str], cls_names: list[str], limit: int = 120
                 ) -> tuple[list[str], list[str], np.ndarray, int]:
    """The video-by-split view matrix of the videos worth a look: in more than one split, or mixed.

    Rows: videos whose majority view differs between splits first, then mixed ones, then the rest
    (each by name); at most `limit`. Columns 'split:view'. Returns (rows, columns, counts, videos
    that qualified before the limit).
    """
    def majority(c: Counter) -> int:
        return min(c, key=lambda v: (-c[v], v))

    def key(v: VideoViews) -> tuple:
        differs = len({majority(c) for c in v.counts.values()}) > 1
        return (not differs, not v.mixed, v.video)

    chosen = sorted((v for v in table if len(v.counts) > 1 or v.mixed), key=key)
    columns = [f"{s}:{n}" for s in splits for n in cls_names]
    matrix = np.zeros((min(len(chosen), limit), len(columns)), dtype=np.int64)
    for i, v in enumerate(chosen[:limit]):
        for s, c in v.counts.items():
            for view, n in c.items():
                matrix[i, splits.index(s) * len(cls_names) + view] = n
    return [v.video for v in chosen[:limit]], columns, matrix, len(chosen)
