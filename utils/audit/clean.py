"""--write-clean: image lists and a dataset YAML that leave out the flagged files.

Which kinds are left out is a choice (--drop); the default drops what makes a label untrustworthy
or an evaluation optimistic: unusable files, every copy of a duplicate but the first (train keeps
its copy, so a duplicate across splits stays in one split only), near-duplicates across splits,
both files of a conflicting pair (which of the two labels is right is unknown), and whatever the
model checks flagged. Group leaks are not dropped (that would empty the shipped val split): make a
grouped split with `python -m utils.split`. Within-split near-duplicates (consecutive video frames)
and mixed-view videos are reported, not dropped, unless asked.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

from utils.audit.issues import KINDS, Issue
from utils.audit.records import AuditData
from utils.data.groups import SplitError, write_split

DEFAULT_DROP = ("unreadable_image", "corrupt_label", "exact_duplicate_within", "exact_duplicate_across",
                "near_duplicate_across", "view_conflict", "class_conflict", "box_conflict", "view_issue",
                "box_overlooked", "box_swap", "box_badloc")


def check_drop(kinds: Iterable[str]) -> list[str]:
    """--drop's kinds, each one of KINDS ('all' = every kind)."""
    kinds = list(kinds)
    if kinds == ["all"]:
        return list(KINDS)
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise SplitError(f"--drop {' '.join(unknown)}: unknown kind; choose from {', '.join(KINDS)} or all")
    return kinds


def left_out(issues: Sequence[Issue], drop: Sequence[str]) -> dict[int, list[Issue]]:
    """{record index: the issues that leave it out}, for the issues whose kind is in `drop`."""
    out: dict[int, list[Issue]] = {}
    for issue in issues:
        if issue.kind in drop:
            out.setdefault(issue.record, []).append(issue)
    return out


def write_clean(out: Path, data: AuditData, removed: dict[int, list[Issue]], raw: dict, name: str,
                command: str) -> tuple[Path, dict[str, list[str]]]:
    """Write out/{train,val,test}.txt and out/<name>.yaml without the removed records; (YAML, kept images)."""
    kept: dict[str, list[str]] = {}
    for record in data.records:
        kept.setdefault(record.split, [])
        if record.index not in removed:
            kept[record.split].append(record.path)
    return write_split(out, kept, raw, name, command), kept
