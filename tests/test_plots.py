"""Every plot writes a real, non-empty file; batch mosaics draw what they are given and nothing else."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from utils.evaluation.plots import plot_confusion_matrix, plot_mc_curve, plot_pr_curve
from utils.plots import colors, draw_box_label, plot_images, plot_labels
from utils.training.plots import plot_results

RESULTS_COLUMNS = [
    "epoch", "train/box_loss", "train/obj_loss", "train/cls_loss", "metrics/precision", "metrics/recall",
    "metrics/mAP_0.5", "metrics/mAP_0.5:0.95", "val/box_loss", "val/obj_loss", "val/cls_loss",
    "x/lr0", "x/lr1", "x/lr2",
]  # fmt: skip


def _non_empty(path) -> bool:
    return path.exists() and path.stat().st_size > 1000


def test_curves_and_confusion_matrix(tmp_path):
    px = np.linspace(0, 1, 1000)
    py = np.stack([1 - px**2, 1 - px])
    ap = np.array([[0.66, 0.4], [0.5, 0.3]])
    assert _non_empty(plot_pr_curve(px, py, ap, tmp_path / "PR_curve.png", ["AR", "MR"]))
    assert _non_empty(plot_mc_curve(px, py, tmp_path / "F1_curve.png", ["AR", "MR"], ylabel="F1"))
    # a folder instead of a file name gets the default name
    assert plot_mc_curve(px, py, tmp_path, ylabel="Recall").name == "Recall_curve.png"
    matrix = np.array([[5, 1, 0], [0, 3, 2], [1, 0, 0]])
    assert _non_empty(plot_confusion_matrix(matrix, ["AR", "MR"], tmp_path / "confusion_matrix.png"))
    assert _non_empty(plot_confusion_matrix(matrix, ["AR", "MR"], tmp_path / "cm_counts.png", normalize=False))


def test_plot_results_reads_padded_yolov5_csv(tmp_path):
    csv_path = tmp_path / "results.csv"
    rows = [",".join(f"{name:>20s}" for name in RESULTS_COLUMNS)]
    for epoch in range(6):
        values = [epoch] + [1.0 / (epoch + 1) + 0.01 * i for i in range(13)]
        rows.append(",".join(f"{value:>20.5g}" for value in values))
    csv_path.write_text("\n".join(rows) + "\n")
    out = plot_results(csv_path)
    assert out == tmp_path / "results.png"
    assert _non_empty(out)


def test_plot_labels_draws_both_figures_for_1000_labels(tmp_path):  # its time: benchmarks/plot_speed.py
    rng = np.random.default_rng(0)
    labels = np.c_[rng.integers(0, 4, 1000), rng.uniform(0.1, 0.9, (1000, 2)), rng.uniform(0.05, 0.4, (1000, 2))]
    out = plot_labels(torch.tensor(labels), ["AR", "MR", "PR", "TR"], tmp_path)
    assert out == tmp_path / "labels.jpg" and _non_empty(out)
    assert _non_empty(tmp_path / "labels_correlogram.jpg")


def _read(path) -> np.ndarray:
    image = cv2.imread(str(path))
    assert image is not None, path
    return image


def test_plot_images_grid_size_and_scaling(tmp_path):
    images = torch.zeros((20, 3, 64, 96), dtype=torch.uint8)
    mosaic = _read(plot_images(images, torch.zeros((0, 6)), fname=tmp_path / "a.png"))
    assert mosaic.shape == (4 * 64, 4 * 96, 3)  # 16 of 20 images, 4 x 4
    mosaic = _read(plot_images(images[:4], torch.zeros((0, 6)), fname=tmp_path / "b.png", max_size=96))
    assert mosaic.shape == (64, 96, 3)  # 2 x 2 grid shrunk by 96 / 2 / 96 = 0.5


def test_plot_images_normalised_and_pixel_targets_draw_the_same(tmp_path):
    images = torch.full((2, 3, 64, 96), 0.5)  # float in [0, 1]
    normalised = torch.tensor([[1, 2, 0.5, 0.5, 0.25, 0.5]])  # image 1, class 2, centre of the tile
    pixels = torch.tensor([[1, 2, 48.0, 32.0, 24.0, 32.0]])  # same box in pixels
    a = _read(plot_images(images, normalised, fname=tmp_path / "n.png", names=["AR", "MR", "PR"]))
    b = _read(plot_images(images, pixels, fname=tmp_path / "p.png", names=["AR", "MR", "PR"]))
    empty = _read(plot_images(images, torch.zeros((0, 6)), fname=tmp_path / "e.png"))
    np.testing.assert_array_equal(a, b)
    assert (a != empty).any()
    # the box lands on image 1 (second tile, top right of a 2x2 grid) in class 2's colour (BGR on disk)
    left_edge_x = 96 + 48 - 12
    class_colour = np.array(colors(2, bgr=True))

    def distance_to_class_colour(image: np.ndarray) -> int:  # anti-aliased 1-px line: look at 3 pixels
        return np.abs(image[32, left_edge_x - 1 : left_edge_x + 2].astype(int) - class_colour).sum(1).min()

    assert distance_to_class_colour(a) < 40
    assert distance_to_class_colour(empty) > 100
    np.testing.assert_array_equal(a[64:], empty[64:])  # bottom row untouched


def test_plot_images_predictions_skip_low_confidence(tmp_path):
    images = np.zeros((1, 3, 64, 96), dtype=np.uint8)
    low = np.array([[0, 0, 0.5, 0.5, 0.4, 0.4, 0.2]])  # conf 0.2 <= 0.25
    high = np.array([[0, 0, 0.5, 0.5, 0.4, 0.4, 0.9]])
    empty = _read(plot_images(images, np.zeros((0, 6)), fname=tmp_path / "e.png"))
    np.testing.assert_array_equal(_read(plot_images(images, low, fname=tmp_path / "l.png")), empty)
    assert (_read(plot_images(images, high, fname=tmp_path / "h.png")) != empty).any()


def test_plot_images_paths_and_captions_are_written(tmp_path):
    images = np.zeros((1, 3, 64, 96), dtype=np.uint8)
    plain = _read(plot_images(images, np.zeros((0, 6)), fname=tmp_path / "plain.png"))
    named = _read(plot_images(images, np.zeros((0, 6)), paths=["x/frame.png"], fname=tmp_path / "named.png"))
    captioned = _read(
        plot_images(images, np.zeros((0, 6)), paths=["x/frame.png"], fname=tmp_path / "cap.png", captions=["PLAX"])
    )
    assert (named != plain).any() and (captioned != named).any()
    assert _non_empty(plot_images(images, np.zeros((0, 6)), fname=tmp_path / "train_batch0.jpg"))


@pytest.mark.parametrize("label", ["", "MR 0.87"])
def test_draw_box_label_in_place(label):
    image = np.zeros((100, 120, 3), dtype=np.uint8)
    color = colors(1, bgr=True)
    out = draw_box_label(image, (20, 30, 80, 90), label, color, line_width=2)
    assert out is image
    assert tuple(image[60, 20]) == color  # left edge
    assert tuple(image[60, 50]) == (0, 0, 0)  # inside stays untouched
    above = image[:29, 20:60]
    assert (above.reshape(-1, 3) == color).all(1).any() == bool(label)  # label background above the box


def test_colors_are_stable_and_wrap():
    assert colors(0) == colors(20) and colors(0) != colors(1)
    assert colors(3, bgr=True) == tuple(reversed(colors(3)))
