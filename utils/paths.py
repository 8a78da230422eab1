"""Filesystem helpers shared by the scripts: repository root and YOLOv5-style run folders."""
from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def increment_path(path: str | Path, exist_ok: bool = False, mkdir: bool = False) -> Path:
    """Return `path`, or `path2`, `path3`, ... if it exists (YOLOv5 run-folder naming, no separator)."""
    path = Path(path)
    if path.exists() and not exist_ok:
        base, suffix = (path.with_suffix(""), path.suffix) if path.is_file() else (path, "")
        n = 2
        while Path(f"{base}{n}{suffix}").exists():
            n += 1
        path = Path(f"{base}{n}{suffix}")
    if mkdir:
        path.mkdir(parents=True, exist_ok=True)
    return path
