"""comparison.csv: one row per run, fixed columns first, written atomically."""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from utils.compare.columns import (COST_COLUMNS, DETECTION_COLUMNS, EPOCH_CHOICE_COLUMNS, ID_COLUMNS,
                                   INTERFERENCE_COLUMNS, LAST_PREFIX, TEST_PREFIX, VIEW_COLUMNS, ordered_columns)
from utils.files import write_text_atomic


def csv_fieldnames(rows: list[dict]) -> list[str]:
    """Fixed columns first, then per-class AP50 and per-view F1 in order of appearance, the figures at last.pt,
    then the error."""
    return [*ID_COLUMNS, *DETECTION_COLUMNS, *ordered_columns(rows, "AP50_"), *VIEW_COLUMNS,
            *ordered_columns(rows, "F1_"), "delta_m", *ordered_columns(rows, TEST_PREFIX), *COST_COLUMNS,
            *INTERFERENCE_COLUMNS, *EPOCH_CHOICE_COLUMNS, *ordered_columns(rows, LAST_PREFIX), "error"]


def csv_value(value: Any) -> Any:
    """Floats rounded to 6 significant digits, None as an empty cell."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return value


def write_csv(path: Path, rows: list[dict]) -> None:
    """comparison.csv, written atomically: a report re-run that dies never leaves half a table."""
    fields = csv_fieldnames(rows)
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=fields, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: csv_value(row.get(k)) for k in fields})
    write_text_atomic(path, buffer.getvalue())
