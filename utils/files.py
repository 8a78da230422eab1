"""Whole-file writes that a crash cannot leave half-done (checkpoints have their own, fsync'd, in checkpoints.py)."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write to a temp file in the same folder, then rename over `path`: readers see the old file or the new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: str | Path, data: Any, **dumps_kwargs: Any) -> None:
    """json.dumps(data, **dumps_kwargs) written with write_text_atomic."""
    write_text_atomic(path, json.dumps(data, **dumps_kwargs))
