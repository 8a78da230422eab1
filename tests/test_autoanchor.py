"""AutoAnchor: recall metric on hand cases and the real data, k-means recovery, and when anchors get replaced."""
from __future__ import annotations

from copy import deepcopy
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from models.yolo import DetectionModel
from utils.data.labels import read_label_file
from utils.paths import ROOT
from utils.training.autoanchor import best_possible_recall, check_anchors, kmean_anchors

DEFAULT_ANCHORS_PX = np.array(
    [[10, 13], [16, 30], [33, 23], [30, 61], [62, 45], [59, 119], [116, 90], [156, 198], [373, 326]], dtype=float
)
MED_TRAIN = ROOT.parent / "shared" / "datasets" / "Regurgitation-YOLODataset-1new" / "train"


def test_bpr_hand_cases():
    wh = np.array([[10.0, 20.0], [60.0, 60.0], [400.0, 120.0]])
    assert best_possible_recall(wh, wh) == (1.0, 1.0)  # each box has its own anchor, and only that one fits
    similar = np.array([[10.0, 20.0], [11.0, 19.0], [9.0, 21.0]])
    assert best_possible_recall(similar, similar)[0] == 1.0
    assert best_possible_recall(similar * 10, similar)[0] == 0.0  # 10x too big: ratio ~0.1 < 1/4 for every pair
    # One box 10x10 against anchors 10, 20, 100: agreements 1, 0.5, 0.1 -> two above 1/4
    bpr, above = best_possible_recall(np.array([[10, 10], [20, 20], [100, 100]]), np.array([[10, 10]]))
    assert (bpr, above) == (1.0, 2.0)
    # thr decides: agreement exactly 0.2 passes 1/thr only when thr > 5
    assert best_possible_recall(np.array([[50.0, 50.0]]), np.array([[10.0, 10.0]]), thr=4.0)[0] == 0.0
    assert best_possible_recall(np.array([[50.0, 50.0]]), np.array([[10.0, 10.0]]), thr=6.0)[0] == 1.0


def _med_train_dataset() -> SimpleNamespace:
    shapes, labels = [], []
    for image_path in sorted((MED_TRAIN / "images").iterdir()):
        with Image.open(image_path) as image:
            shapes.append(image.size)
        labels.append(read_label_file(MED_TRAIN / "labels" / f"{image_path.stem}.txt", nc=4, n_views=3).boxes)
    return SimpleNamespace(shapes=np.array(shapes), labels=labels)


@pytest.mark.skipif(not MED_TRAIN.exists(), reason="shared med dataset not present")
def test_default_anchors_fit_med_train_labels_at_320():
    from utils.training.autoanchor import label_wh_pixels

    dataset = _med_train_dataset()
    assert len(dataset.labels) == 1042
    wh = label_wh_pixels(dataset, 320, jitter_seed=0)
    bpr, above = best_possible_recall(DEFAULT_ANCHORS_PX, wh)
    assert bpr >= 0.98  # measured 1.000 (6.19 anchors/target)
    assert above > 3


def test_kmean_anchors_recovers_three_clusters():
    rng = np.random.default_rng(1)
    centres = np.array([[20.0, 30.0], [60.0, 40.0], [150.0, 200.0]])
    wh = np.concatenate([c * rng.uniform(0.95, 1.05, size=(200, 2)) for c in centres])
    wh = np.concatenate([wh, [[1.0, 1.5]] * 5])  # tiny boxes: dropped with a warning
    anchors = kmean_anchors(wh, n=3, img_size=320, gen=50, verbose=False)
    assert anchors.shape == (3, 2)
    assert np.all(np.diff(anchors.prod(1)) > 0)  # sorted by area
    assert np.allclose(anchors, centres, rtol=0.15)


def test_kmean_anchors_is_seeded():
    wh = np.random.default_rng(2).uniform(5, 300, size=(300, 2))
    first = kmean_anchors(wh, n=6, gen=30, verbose=False, seed=3)
    assert np.array_equal(first, kmean_anchors(wh, n=6, gen=30, verbose=False, seed=3))


@pytest.fixture(scope="module")
def model_prototype() -> DetectionModel:
    return DetectionModel("models/yolov5n.yaml", nc=4)


def test_check_anchors_keeps_anchors_that_fit(model_prototype):
    model = deepcopy(model_prototype)
    before = model.detect.anchors.clone()
    # boxes equal to the default anchors on square 640 images: BPR 1.0
    dataset = SimpleNamespace(
        shapes=np.full((9, 2), 640),
        labels=[np.array([[0, 0.5, 0.5, w / 640, h / 640]]) for w, h in DEFAULT_ANCHORS_PX],
    )
    bpr = check_anchors(dataset, model, thr=4.0, imgsz=640, gen=20)
    assert bpr >= 0.98
    assert torch.equal(model.detect.anchors, before)


def test_check_anchors_replaces_poor_anchors_in_grid_units_sorted(model_prototype):
    model = deepcopy(model_prototype)
    before = model.detect.anchors.clone()
    rng = np.random.default_rng(0)
    # long thin boxes (about 500 x 13 px at 640 on 640x480 images): no default anchor gets within 4x on both sides
    labels = [np.array([[0, 0.5, 0.5, rng.uniform(0.7, 0.9), rng.uniform(0.02, 0.03)]]) for _ in range(120)]
    dataset = SimpleNamespace(shapes=np.tile([640, 480], (120, 1)), labels=labels)
    stride = model.detect.stride.view(-1, 1, 1)
    assert best_possible_recall((before * stride).view(-1, 2), np.array([[500.0, 13.0]]))[0] == 0.0

    bpr = check_anchors(dataset, model, thr=4.0, imgsz=640, gen=50)

    after_px = (model.detect.anchors * stride).view(-1, 2)
    assert not torch.equal(model.detect.anchors, before)
    assert bpr >= 0.98
    areas = after_px.prod(1)
    assert bool((areas[1:] >= areas[:-1]).all())  # small anchors at stride 8, large at stride 32
    # stored in grid units: times stride they are back to box-sized pixels (widths roughly 400-600 px)
    assert float(after_px[:, 0].min()) > 200 and float(after_px[:, 0].max()) < 900
    assert best_possible_recall(after_px, np.array([[500.0, 13.0]]))[0] == 1.0
