"""A run's test set, image by image (the matches a patient bootstrap resamples), cached beside its weights.

benchmarks/patient_bootstrap.py redraws the test patients from these. They live in the run folder only (a record
keeps none: utils.compare.records), so a run whose folder is gone cannot join a new bootstrap.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from utils.compare.bootstrap import PackedRun, pack
from utils.compare.evaluation import EvalSettings, evaluate_checkpoint, evaluation_key

BOOTSTRAP_CACHE = "patient_bootstrap_{checkpoint}.npz"  # in the run folder, one per checkpoint


def load_matches(cache: Path) -> PackedRun:
    """A saved cache (test_matches checks that its key still holds)."""
    with np.load(cache, allow_pickle=False) as saved:
        fields = {k: saved[k] for k in PackedRun.__dataclass_fields__}
    return PackedRun(**{**fields, "paths": [str(p) for p in fields["paths"]]})


def test_matches(run_dir: Path, checkpoint: str, data: Path, settings: EvalSettings) -> PackedRun:
    """The run's checkpoint on the test set, image by image; from the cache while checkpoint, data and settings hold.

    A folder without weights (a record) is an error, not a run silently left out of the table.
    """
    cache = run_dir / BOOTSTRAP_CACHE.format(checkpoint=checkpoint)
    if not (run_dir / "weights" / "last.pt").is_file():
        raise SystemExit(f"{run_dir}: no weights: this run cannot be bootstrapped (a record keeps none; bootstrap "
                         "while the run folders are there)")
    weights = run_dir / "weights" / f"{checkpoint}.pt"
    if not weights.is_file():
        weights = run_dir / "weights" / "last.pt"  # as the report: a run that wrote no best.pt
    key = json.dumps(evaluation_key(weights, data, settings), sort_keys=True)
    if cache.is_file():
        with np.load(cache, allow_pickle=False) as saved:
            fresh = str(saved["key"]) == key
        if fresh:
            return load_matches(cache)
    images: list = []
    evaluate_checkpoint(weights, data, settings, tasks=("test",), per_image={"test": images})
    if not images:
        raise SystemExit(f"{data}: no test split to bootstrap (utils.split --test writes one)")
    run = pack(images)
    arrays = {k: getattr(run, k) for k in PackedRun.__dataclass_fields__}
    tmp = cache.with_name(cache.stem + ".tmp.npz")
    np.savez_compressed(tmp, key=np.array(key), **{**arrays, "paths": np.array(run.paths)})
    os.replace(tmp, cache)  # never a half-written cache
    return run
