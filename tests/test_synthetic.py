"""The synthetic dataset: labels the project reads back, a view independent of the boxes, same bytes every time."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from utils.data import synthetic
from utils.data.dataset_yaml import DatasetError, check_dataset
from utils.data.labels import img2label_paths, read_label_file
from utils.data.synthetic_echo import VIEW_NAMES
from utils.paths import ROOT


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> tuple[Path, dict[str, int]]:
    """120 train + 30 val images: enough for balance checks, about a second to write."""
    root = tmp_path_factory.mktemp("synthetic")
    return root, synthetic.generate(root, n_train=120, n_val=30, seed=0)


def _parsed(written: dict[str, int]) -> dict[str, object]:
    labels = img2label_paths(list(written))
    return {image: read_label_file(label, nc=len(synthetic.SHAPE_NAMES), n_views=len(VIEW_NAMES))
            for image, label in zip(written, labels)}


def test_label_parser_reads_back_every_intended_view(generated):
    _, written = generated
    assert len(written) == 150
    for image, parsed in _parsed(written).items():
        assert parsed.corrupt is None and parsed.warnings == [], image
        assert parsed.view_line_found and parsed.view == written[image], image
        assert len(parsed.boxes) >= 1, image


def test_label_files_use_the_med_layout(generated):
    """Box rows, one blank line, a one-hot view line, no trailing newline (../shared/datasets/README.md)."""
    _, written = generated
    image, view = next(iter(written.items()))
    text = Path(img2label_paths([image])[0]).read_text()
    boxes, view_line = text.split("\n\n")
    assert not text.endswith("\n")
    assert view_line == " ".join("1" if i == view else "0" for i in range(len(VIEW_NAMES)))
    assert all(len(row.split()) == 5 for row in boxes.splitlines())


def test_every_view_and_every_shape_class_is_present_and_views_are_balanced(generated):
    _, written = generated
    parsed = _parsed(written)
    assert set(written.values()) == set(range(len(VIEW_NAMES)))
    classes = {int(c) for p in parsed.values() for c in p.boxes[:, 0]}
    assert classes == set(range(len(synthetic.SHAPE_NAMES)))
    train_views = Counter(v for image, v in written.items() if "/train/" in image.replace("\\", "/"))
    assert sorted(train_views.values()) == [40, 40, 40]  # exact thirds by construction


def test_view_cannot_be_read_off_the_box_classes(generated):
    """Among images holding a given shape class, each view keeps about its third; same for the box counts."""
    _, written = generated
    parsed = _parsed(written)
    for cls in range(len(synthetic.SHAPE_NAMES)):
        views = [written[img] for img, p in parsed.items() if cls in p.boxes[:, 0].astype(int).tolist()]
        shares = np.bincount(views, minlength=len(VIEW_NAMES)) / len(views)
        assert len(views) >= 60 and shares.min() > 0.2 and shares.max() < 0.47, (cls, shares)
    mean_boxes = [np.mean([len(p.boxes) for img, p in parsed.items() if written[img] == v]) for v in range(3)]
    assert max(mean_boxes) - min(mean_boxes) < 0.6, mean_boxes


def test_view_is_in_the_pixels_of_the_whole_image(generated):
    """A nearest-centroid classifier on 32x24 grey thumbnails of the train images names the val views:
    the view is drawn into the picture (fan and chambers), not only written into a label."""
    _, written = generated

    def thumbnails(split: str) -> tuple[np.ndarray, np.ndarray]:
        items = [(img, v) for img, v in written.items() if f"{split}_" in Path(img).name]
        x = [cv2.resize(cv2.imread(img, cv2.IMREAD_GRAYSCALE), (32, 24), interpolation=cv2.INTER_AREA).ravel()
             for img, _ in items]
        return np.array(x, dtype=np.float32), np.array([v for _, v in items])

    (x_train, y_train), (x_val, y_val) = thumbnails("train"), thumbnails("val")
    centroids = np.stack([x_train[y_train == v].mean(0) for v in range(len(VIEW_NAMES))])
    predicted = ((x_val[:, None] - centroids[None]) ** 2).sum(-1).argmin(1)
    assert (predicted == y_val).mean() >= 0.8


def test_generation_is_deterministic(tmp_path: Path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    synthetic.generate(a, n_train=6, n_val=3, seed=5)
    synthetic.generate(b, n_train=6, n_val=3, seed=5)
    synthetic.generate(c, n_train=6, n_val=3, seed=6)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert len(files) == 18
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    assert any((a / f).read_bytes() != (c / f).read_bytes() for f in files)


def _synthetic_yaml(tmp_path: Path, **overrides) -> Path:
    cfg = yaml.safe_load((ROOT / "data" / "synthetic.yaml").read_text())
    cfg.update({"path": str(tmp_path / "synth"), "n_train": 6, "n_val": 3, **overrides})
    path = tmp_path / "synthetic.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_shipped_yaml_declares_the_generators_views(tmp_path: Path):
    # the shipped YAML's own keys, read where its folder is generated (a fresh clone has none yet)
    path = _synthetic_yaml(tmp_path)
    synthetic.ensure_synthetic(path)
    data = check_dataset(path)
    assert data["cls_names"] == list(VIEW_NAMES) and data["synthetic"] is True
    assert list(data["names"].values()) == list(synthetic.SHAPE_NAMES)


def test_an_old_format_folder_is_regenerated(tmp_path: Path):
    data = _synthetic_yaml(tmp_path)
    root = tmp_path / "synth"
    for split in synthetic.SPLITS:  # what the first generator left: no version file, no view line
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        (root / "images" / split / "old_0000.png").write_bytes(b"old")
        (root / "labels" / split / "old_0000.txt").write_text("0 0.5 0.5 0.2 0.2\n")
        (root / "labels" / f"{split}.cache").write_bytes(b"old cache")
    (root / "notes.txt").write_text("not the generator's")

    synthetic.ensure_synthetic(data)
    assert not list(root.rglob("old_0000.*")) and not list(root.rglob("*.cache"))
    assert (root / "notes.txt").is_file(), "only what the generator writes is removed"
    assert len(list((root / "images" / "train").glob("*.png"))) == 6
    assert json.loads((root / synthetic.VERSION_FILE).read_text())["generator"] == synthetic.GENERATOR_VERSION
    assert read_label_file(root / "labels" / "val" / "val_0000.txt", n_views=3).view >= 0

    stamp = (root / "labels" / "train" / "train_0000.txt").stat().st_mtime_ns
    synthetic.ensure_synthetic(data)  # current: left alone
    assert (root / "labels" / "train" / "train_0000.txt").stat().st_mtime_ns == stamp

    synthetic.ensure_synthetic(_synthetic_yaml(tmp_path, n_train=4))  # other settings: regenerated
    assert len(list((root / "images" / "train").glob("*.png"))) == 4


def test_a_yaml_with_another_number_of_views_stops_with_one_sentence(tmp_path: Path):
    with pytest.raises(DatasetError, match="draws 3 views"):
        synthetic.ensure_synthetic(_synthetic_yaml(tmp_path, cls_names=["a", "b"]))
