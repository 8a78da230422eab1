"""val.py on a real YOLOv5 checkpoint gives YOLOv5's own val.py figures (recorded in the fixture's README).

The README holds YOLOv5's output on the med valid split, view line dropped: data/med-detection.yaml
reads the same 183 images and 183 boxes. Tolerance 0.005; measured equal to the
printed digits (docs/metrics.md).
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

import val
from tests.yolov5_files import FIXTURES, MED_E20, fixture

TOLERANCE = 0.005


def yolov5_figures(size: int) -> dict[str, tuple[float, ...]]:
    """'all' and per-class (P, R, mAP50, mAP50-95) that YOLOv5's val.py printed, from the fixture README."""
    readme = (FIXTURES / "README.md").read_text()
    overall = re.search(rf"YOLOV5_VAL_{size}: all ([\d.]+) ([\d.]+) ([\d.]+) ([\d.]+)", readme)
    assert overall, f"no YOLOV5_VAL_{size} line in {FIXTURES / 'README.md'}"
    figures = {"all": tuple(float(x) for x in overall.groups())}
    if size == 320:  # the README's per-class table is for 320
        for name, *values in re.findall(r"^\| (AR|MR|PR|TR) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \|$",
                                        readme, flags=re.M):
            figures[name] = tuple(float(v) for v in values)
    return figures


@pytest.mark.parametrize("size", [320, 416])
def test_val_matches_yolov5_on_its_own_checkpoint(size: int, tmp_path: Path):
    expected = yolov5_figures(size)
    opt = val.parse_opt(["--weights", str(fixture(MED_E20)), "--data", "data/med-detection.yaml", "--img", str(size),
                         "--batch-size", "32", "--workers", "2", "--project", str(tmp_path)])
    (result,) = val.main(opt)
    assert (result.n_images, result.n_instances) == (183, 183)
    ours = {"all": (result.precision, result.recall, result.map50, result.map)}
    ours.update({row[0]: tuple(row[3:]) for row in result.per_class})
    for name, figures in expected.items():
        for label, theirs, mine in zip(("P", "R", "mAP50", "mAP50-95"), figures, ours[name]):
            assert mine == pytest.approx(theirs, abs=TOLERANCE), f"{name} {label} at {size}: {mine:.4f} vs {theirs}"
