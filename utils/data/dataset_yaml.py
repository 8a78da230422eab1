"""Dataset YAML loading: find the file, resolve its paths, and fail early with a clear message.

Keys follow YOLOv5 (path, train, val, test, names, nc); `cls_names` is this project's
addition: it declares the image-level view task, one class per entry of the label
files' one-hot view line.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from utils.paths import ROOT

DATA_DIR = ROOT / "data"
SPLIT_KEYS = ("train", "val", "test")
REQUIRED_KEYS = ("train", "val", "names")


class DatasetError(ValueError):
    """A dataset YAML that cannot be used; the message names the file and the problem."""


def _find_yaml(data: str | Path) -> Path:
    """The YAML as given, else a bare name looked up under data/ (as YOLOv5 does)."""
    given = Path(data)
    candidates = [given]
    if not given.is_absolute():
        candidates += [DATA_DIR / given, DATA_DIR / given.name]
        if not given.suffix:
            candidates += [DATA_DIR / f"{given.name}.yaml"]
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    raise DatasetError(f"dataset YAML {data} not found (also looked in {DATA_DIR})")


def _normalise_names(names: Any, yaml_file: Path) -> dict[int, str]:
    """names as a list or {int: name} -> {0: name0, 1: name1, ...}."""
    if isinstance(names, (list, tuple)):
        return {i: str(name) for i, name in enumerate(names)}
    if isinstance(names, dict):
        try:
            mapping = {int(k): str(v) for k, v in names.items()}
        except (TypeError, ValueError):
            raise DatasetError(f"{yaml_file}: 'names' keys must be integers 0..nc-1") from None
        if sorted(mapping) != list(range(len(mapping))):
            raise DatasetError(f"{yaml_file}: 'names' keys must be 0..{len(mapping) - 1} without gaps")
        return dict(sorted(mapping.items()))
    raise DatasetError(f"{yaml_file}: 'names' must be a list or a mapping {{index: name}}")


def _resolve_split(value: Any, base: Path, key: str, yaml_file: Path, must_exist: bool) -> str | list[str]:
    """Absolute path(s) for one split, keeping the YAML's shape (a string or a list)."""
    items = value if isinstance(value, (list, tuple)) else [value]
    resolved = []
    for item in items:
        if not isinstance(item, (str, Path)):
            raise DatasetError(f"{yaml_file}: '{key}' must be a path or a list of paths, got {item!r}")
        path = Path(item)
        path = (path if path.is_absolute() else base / path).resolve()
        if must_exist and not path.exists():
            raise DatasetError(f"{yaml_file}: '{key}' path {path} does not exist")
        resolved.append(str(path))
    return resolved if isinstance(value, (list, tuple)) else resolved[0]


def check_dataset(data: str | Path) -> dict:
    """Load and validate a dataset YAML; return it with absolute paths and normalised names.

    Returned keys: everything in the YAML, plus path, train, val, test (absolute, or None),
    names {int: str}, nc, cls_names (list or None), yaml_file.
    """
    yaml_file = _find_yaml(data)
    try:
        content = yaml.safe_load(yaml_file.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise DatasetError(f"{yaml_file}: not valid YAML ({error})") from None
    if not isinstance(content, dict):
        raise DatasetError(f"{yaml_file}: expected a mapping of keys (train, val, names, ...)")
    for key in REQUIRED_KEYS:
        if content.get(key) in (None, "", []):
            raise DatasetError(f"{yaml_file}: missing required key '{key}'")

    names = _normalise_names(content["names"], yaml_file)
    if content.get("nc") is not None and int(content["nc"]) != len(names):
        raise DatasetError(f"{yaml_file}: nc={content['nc']} but 'names' has {len(names)} entries")

    cls_names = content.get("cls_names")
    if cls_names is not None:
        if not isinstance(cls_names, (list, tuple)) or len(cls_names) < 1:
            raise DatasetError(f"{yaml_file}: 'cls_names' must be a non-empty list of view names")
        cls_names = [str(name) for name in cls_names]

    root = Path(content["path"]) if content.get("path") else ROOT  # relative paths resolve against the repo root
    root = (root if root.is_absolute() else ROOT / root).resolve()

    result = dict(content)
    result.update(
        path=str(root),
        names=names,
        nc=len(names),
        cls_names=cls_names,
        yaml_file=str(yaml_file),
    )
    for key in SPLIT_KEYS:
        value = content.get(key)
        result[key] = None if value in (None, "", []) else _resolve_split(value, root, key, yaml_file, key != "test")
    return result
