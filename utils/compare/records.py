"""Run records: what a finished run leaves in a folder meant to be committed, so a comparison outlives its runs.

A 40-epoch comparison spreads days of machine time over sessions whose run folders (weights and all) need not
survive; its figures must. Given --records DIR, compare.py records every finished run it reports in
DIR/<split>/<run>/: its comparison.csv rows scored at best.pt and at last.pt (rows.json), its training history and
cost record; never weights, nor the per-image test matches a patient bootstrap resamples (binary, about 400 kB a run:
the bootstrap's committed tables are its result, and a rerun needs the run folders). A planned run
whose folder is gone (or unfinished) but whose record holds the same --epochs counts as finished: it is neither
trained nor evaluated again, and the report reads its rows there.
"""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path
from typing import Any

from utils.compare.runs import COST_FILE, read_history, run_name
from utils.files import write_json_atomic

ROWS_FILE = "rows.json"  # {"epochs": N, "rows": {"best": row, "last": row}}
CHECKPOINTS = ("best", "last")
KEPT_FILES = ("training_history.json", COST_FILE, "opt.yaml", "hyp.yaml")  # small, and what a report reads again
RUN_LOCAL = ("run_dir", "trained_now")  # row keys that describe one report, not the run


def record_dir(records: Path, split: str, strategy: str, seed: int) -> Path:
    """The run's record folder: RECORDS/<split>/<strategy>_s<seed> (the run folder's own name)."""
    return records / split / run_name(strategy, seed)


def read_record(record: Path) -> dict | None:
    """rows.json of a record ({"epochs", "rows"}), or None when missing or unreadable."""
    try:
        saved = json.loads((record / ROWS_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return saved if isinstance(saved, dict) and isinstance(saved.get("rows"), dict) else None


def recorded(record: Path | None, epochs: int) -> bool:
    """True when the record holds a finished run of the same --epochs (a row at best.pt with status ok)."""
    saved = read_record(record) if record is not None else None
    return bool(saved and saved.get("epochs") == epochs
                and (saved["rows"].get("best") or {}).get("status") == "ok")


def recorded_row(record: Path, checkpoint: str) -> dict | None:
    """The run's row scored at `checkpoint` as recorded (run_dir: the record; trained_now False), or None."""
    row = ((read_record(record) or {}).get("rows") or {}).get(checkpoint)
    return None if row is None else {**row, "run_dir": str(record), "trained_now": False}


def recorded_history(record: Path) -> dict | None:
    """The recorded training history (None for a record made from comparison.csv rows alone)."""
    return read_history(record)


def save_record(record: Path, epochs: int, rows: dict[str, dict], run_dir: Path | None = None) -> None:
    """Write (or update) a record: the given rows per checkpoint, merged into those already there, and the small
    files of `run_dir` (KEPT_FILES) where it has them. Each file is replaced atomically."""
    unknown = set(rows) - set(CHECKPOINTS)
    if unknown:
        raise ValueError(f"checkpoints are {CHECKPOINTS}, not {sorted(unknown)}")
    record.mkdir(parents=True, exist_ok=True)
    saved = read_record(record)
    same = saved is not None and saved.get("epochs") == epochs
    merged = dict(saved["rows"]) if same else {}
    merged |= {c: {k: v for k, v in row.items() if k not in RUN_LOCAL} for c, row in rows.items()}
    machine = saved.get("machine") if same else None  # where it was trained: the first machine that recorded it
    if machine is None and run_dir is not None:
        machine = this_machine()
    for name in KEPT_FILES if run_dir is not None else ():
        source = run_dir / name
        if source.is_file():
            tmp = record / f".{name}.tmp"
            shutil.copyfile(source, tmp)
            tmp.replace(record / name)
    content = {"epochs": epochs, "rows": merged, **({"machine": machine} if machine else {})}
    write_json_atomic(record / ROWS_FILE, content, indent=1)


def this_machine() -> str:
    """The CPU model and the instruction set torch's CPU kernels use. Training is repeatable on one machine (the same
    seed gives the same weights), not across CPUs: their kernels round differently and a run drifts apart within
    epochs, so a record says where it was trained."""
    import platform

    import torch

    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        model = next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
    except (OSError, StopIteration):
        model = platform.processor() or platform.machine()
    return f"{model}, torch {torch.__version__} CPU kernels {torch.backends.cpu.get_cpu_capability()}"


def csv_cell(text: str) -> Any:
    """A comparison.csv cell as the report had it: '' -> None, True/False, an int or a float, else the text."""
    if text == "":
        return None
    if text in ("True", "False"):
        return text == "True"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def read_csv_rows(path: Path) -> dict[tuple[str, str, int], dict]:
    """{(split, strategy, seed): row} of a comparison.csv, each cell parsed back (csv_cell)."""
    with open(path, newline="") as f:
        rows = [{k: csv_cell(v) for k, v in row.items()} for row in csv.DictReader(f)]
    return {(r["split"], r["strategy"], r["seed"]): r for r in rows}


def records_from_csv(best_csv: Path, last_csv: Path, records: Path, epochs: int) -> list[Path]:
    """Record the finished runs of a report's comparison.csv pair (the main one, scored at best.pt, and
    checkpoint_last/comparison.csv) whose record is missing: for runs whose folders are gone, the rows are what
    is left. Such a record has no history (curves and the frozen ablation need the run itself). Returns the
    records written."""
    best_rows, last_rows = read_csv_rows(best_csv), read_csv_rows(last_csv)
    written = []
    for key, best in best_rows.items():
        last = last_rows.get(key)
        if best.get("status") != "ok" or (last or {}).get("status") != "ok":
            continue
        record = record_dir(records, *key)
        if recorded(record, epochs):
            continue
        save_record(record, epochs, {"best": best, "last": last})
        written.append(record)
    return written


def main(argv: list[str] | None = None) -> None:
    """python -m utils.compare.records BEST_CSV LAST_CSV --records DIR --epochs N: records from a report's rows."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m utils.compare.records", description=records_from_csv.__doc__)
    p.add_argument("best_csv", type=Path, help="the report's comparison.csv (scored at best.pt)")
    p.add_argument("last_csv", type=Path, help="its checkpoint_last/comparison.csv (scored at last.pt)")
    p.add_argument("--records", type=Path, required=True, help="records folder (compare.py --records)")
    p.add_argument("--epochs", type=int, required=True, help="the comparison's --epochs")
    opt = p.parse_args(argv)
    for path in (opt.best_csv, opt.last_csv):
        if not path.is_file():
            raise SystemExit(f"ERROR: {path}: no such file")
    written = records_from_csv(opt.best_csv, opt.last_csv, opt.records, opt.epochs)
    print(f"{len(written)} records written in {opt.records}" + "".join(f"\n  {r}" for r in written))


if __name__ == "__main__":
    main()
