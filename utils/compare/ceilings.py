"""The view-label ceiling of each split, printed beside every view accuracy of the comparison.

A view accuracy means little without what the labels allow: copying the view of the nearest train frame
(utils/audit/ceiling.py) scores 0.667 on the shipped med valid split, where every trained model lands.
It is a ceiling only where most held-out frames have a near-identical train frame (is_bound); on a
patient-grouped split it is a memorisation baseline and the report calls it a copy. Computed once per
split and kept in PROJECT/NAME/derived/ until the split's image lists change.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from utils.audit.ceiling import split_ceilings
from utils.data.dataset_yaml import DatasetError, check_dataset
from utils.data.groups import dataset_splits
from utils.files import write_json_atomic
from utils.logger import LOGGER


def _key(data_yaml: Path) -> str:
    """A digest of the split's image lists and view names: the ceiling changes only when they do."""
    dataset = check_dataset(data_yaml)
    content = {"splits": dataset_splits(dataset), "cls_names": dataset.get("cls_names"), "fields": 2}  # 2: near_share
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]


def is_bound(ceiling: dict) -> bool:
    """Whether the nearest-train-frame copy bounds a model here: most held-out frames have a near-identical train
    frame (the same video). Where they do not (a patient-grouped split) it is a memorisation baseline instead."""
    return ceiling.get("near_share", 1.0) >= 0.5


def view_ceilings(splits: dict[str, Path], cache_dir: Path) -> dict[str, dict[str, dict[str, float]]]:
    """{comparison split: {held-out split: accuracy, balanced, majority_rate, n, near_share}}; {} per split
    without a view task. A split whose images cannot be read gets no ceiling and a warning, never an error."""
    result = {}
    for name, data_yaml in splits.items():
        try:
            key = _key(data_yaml)
        except DatasetError as e:
            LOGGER.warning(f"WARNING ⚠️ no view-label ceiling for {name}: {e}")
            result[name] = {}
            continue
        cache = cache_dir / f"view_ceiling_{name}.json"
        try:
            cached = json.loads(cache.read_text())
            if cached.get("key") == key:
                result[name] = cached["ceilings"]
                continue
        except (OSError, json.JSONDecodeError, AttributeError):
            pass
        result[name] = split_ceilings(data_yaml)
        write_json_atomic(cache, {"key": key, "ceilings": result[name]}, indent=1)
    return result
