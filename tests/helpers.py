"""Small helpers shared by the end-to-end tests."""
from __future__ import annotations

from pathlib import Path

import yaml

MED_NAMES = ["AR", "MR", "PR", "TR"]
MED_VIEWS = ["PSAX", "PLAX", "A4C"]


def med_subset_yaml(tmp: Path, med_root: Path, n: int = 8, with_views: bool = True) -> Path:
    """A dataset YAML whose train and val are a .txt list of the first n med train images (labels found beside them)."""
    images = sorted((med_root / "train" / "images").glob("*.png"))[:n]
    listing = tmp / f"med_{n}.txt"
    listing.write_text("\n".join(str(p) for p in images) + "\n")
    cfg = {"train": str(listing), "val": str(listing), "names": MED_NAMES}
    if with_views:
        cfg["cls_names"] = MED_VIEWS
    path = tmp / ("med_views.yaml" if with_views else "med_plain.yaml")
    path.write_text(yaml.safe_dump(cfg))
    return path
