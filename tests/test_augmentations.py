"""Augmentations: exact letterbox geometry, deterministic warps, box filtering, HSV and mixup."""
from __future__ import annotations

import random

import numpy as np
import pytest

from utils.boxes import scale_boxes
from utils.data.augmentations import augment_hsv, box_candidates, letterbox, mixup, random_perspective


def gradient_image(h: int, w: int) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([(x * 255 // max(w - 1, 1)), (y * 255 // max(h - 1, 1)), np.full_like(x, 77)], -1).astype(np.uint8)


# ---------------------------------------------------------------- letterbox

def test_letterbox_430x320_to_320_square():
    im = gradient_image(320, 430)  # h=320, w=430
    out, ratio, (dw, dh) = letterbox(im, 320, auto=False)
    # scale = min(320/320, 320/430) = 0.744186; resized (w, h) = (320, round(238.14) = 238)
    assert ratio == pytest.approx((320 / 430, 320 / 430))
    assert out.shape == (320, 320, 3)
    assert (dw, dh) == (0.0, 41.0)  # (320 - 238) / 2 on each side
    assert (out[:41] == 114).all() and (out[-41:] == 114).all()
    assert not (out[41] == 114).all() and not (out[320 - 42] == 114).all()


def test_letterbox_auto_pads_to_stride_multiple():
    out, _, (dw, dh) = letterbox(gradient_image(320, 430), 320, auto=True, stride=32)
    # 238 rows -> next multiple of 32 is 256: pad 18 -> 9 per side
    assert out.shape == (256, 320, 3)
    assert (dw, dh) == (0.0, 9.0)


def test_letterbox_odd_padding_goes_bottom_right():
    out, _, (dw, dh) = letterbox(gradient_image(100, 101), (100, 104), auto=False, scaleup=False)
    # scale = min(100/100, 104/101) = 1: no resize; pad w = 3 -> dw 1.5: left round(1.4)=1, right round(1.6)=2
    assert dw == 1.5 and dh == 0.0
    assert out.shape == (100, 104, 3)
    assert (out[:, 0] == 114).all() and not (out[:, 1] == 114).all()
    assert (out[:, -2:] == 114).all() and not (out[:, -3] == 114).all()


def test_letterbox_scaleup_false_never_enlarges():
    out, ratio, (dw, dh) = letterbox(gradient_image(50, 100), 200, auto=False, scaleup=False)
    assert ratio == (1.0, 1.0)
    assert out.shape == (200, 200, 3) and (dw, dh) == (50.0, 75.0)


def test_letterbox_scale_fill_stretches():
    out, ratio, (dw, dh) = letterbox(gradient_image(50, 100), (64, 64), auto=False, scale_fill=True)
    assert out.shape == (64, 64, 3) and ratio == (0.64, 1.28) and (dw, dh) == (0.0, 0.0)


def test_letterbox_then_scale_boxes_is_the_identity():
    im = gradient_image(320, 430)
    out, ratio, pad = letterbox(im, 320, auto=False)
    box = np.array([[43.0, 32.0, 215.0, 288.0]])  # in the original image
    on_letterbox = box.copy()
    on_letterbox[:, [0, 2]] = box[:, [0, 2]] * ratio[0] + pad[0]
    on_letterbox[:, [1, 3]] = box[:, [1, 3]] * ratio[1] + pad[1]
    assert on_letterbox[0, 1] == pytest.approx(32 * 320 / 430 + 41)
    back = scale_boxes(out.shape[:2], on_letterbox.copy(), im.shape[:2])
    np.testing.assert_allclose(back, box, atol=0.5)  # derived pad 40.93 vs the rounded 41: < 0.5 px
    back_exact = scale_boxes(out.shape[:2], on_letterbox.copy(), im.shape[:2], ratio_pad=((ratio[1], ratio[0]), pad))
    np.testing.assert_allclose(back_exact, box, atol=1e-9)


# ---------------------------------------------------------------- random_perspective

def test_random_perspective_identity_when_all_ranges_are_zero():
    im = gradient_image(60, 80)
    targets = np.array([[1, 10, 20, 40, 50]], dtype=np.float64)
    out, kept = random_perspective(im, targets, degrees=0, translate=0, scale=0, shear=0, perspective=0)
    assert np.array_equal(out, im)
    np.testing.assert_allclose(kept, targets)


def test_random_perspective_border_crops_the_centre():
    # a 2s x 2s canvas with border -s/2 and no random motion shifts everything by -s/2
    s = 100
    canvas = gradient_image(2 * s, 2 * s)
    targets = np.array(
        [
            [0, 60, 70, 120, 130],  # fully inside the crop: moves to (10, 20, 70, 80)
            [1, 120, 120, 190, 160],  # partly outside: clipped to (70, 70, 100, 100), area kept 900/2800 > 0.1
            [2, 0, 0, 40, 40],  # entirely outside the crop: dropped
        ],
        dtype=np.float64,
    )
    out, kept = random_perspective(canvas, targets, degrees=0, translate=0, scale=0, shear=0, border=(-s // 2, -s // 2))
    assert out.shape == (s, s, 3)
    assert np.array_equal(out, canvas[50:150, 50:150])
    np.testing.assert_allclose(kept, [[0, 10, 20, 70, 80], [1, 70, 70, 100, 100]])


def test_random_perspective_keeps_boxes_inside_the_image():
    random.seed(3)
    np.random.seed(3)
    im = gradient_image(120, 160)
    targets = np.array([[0, 20, 20, 60, 80], [1, 100, 30, 150, 110]], dtype=np.float64)
    for _ in range(20):
        out, kept = random_perspective(im, targets, degrees=30, translate=0.2, scale=0.5, shear=10, perspective=0.0005)
        assert out.shape == im.shape
        assert len(kept) <= 2
        if len(kept):
            assert (kept[:, [1, 3]] >= 0).all() and (kept[:, [1, 3]] <= 160).all()
            assert (kept[:, [2, 4]] >= 0).all() and (kept[:, [2, 4]] <= 120).all()
            assert (kept[:, 3] > kept[:, 1]).all() and (kept[:, 4] > kept[:, 2]).all()


# ---------------------------------------------------------------- box_candidates

def test_box_candidates_hand_computed():
    before = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 300, 10]], float).T
    after = np.array(
        [
            [0, 0, 10, 10],  # unchanged: keep
            [0, 0, 2, 10],  # w = 2 is not > 2 px: drop
            [0, 0, 3, 3],  # area 9/100 = 0.09 <= 0.1: drop
            [0, 0, 4, 3],  # area 0.12, sides > 2: keep
            [0, 0, 300, 2.9],  # aspect 300/2.9 > 100: drop
        ],
        float,
    ).T
    assert box_candidates(before, after).tolist() == [True, False, False, True, False]


# ---------------------------------------------------------------- HSV and mixup

def test_augment_hsv_zero_gains_changes_nothing():
    im = gradient_image(20, 30)
    before = im.copy()
    augment_hsv(im, 0, 0, 0)
    assert np.array_equal(im, before)


def test_augment_hsv_value_gain_on_grey_is_hand_computable():
    im = np.full((8, 8, 3), 100, np.uint8)
    np.random.seed(0)
    gains = np.random.uniform(-1, 1, 3) * (0.0, 0.0, 0.4) + 1  # what augment_hsv will draw
    np.random.seed(0)
    augment_hsv(im, 0.0, 0.0, 0.4)
    expected = np.uint8(min(255, int(100 * gains[2])))
    assert (im == expected).all()  # grey stays grey (saturation 0), value scaled, in place


def test_augment_hsv_modifies_in_place_and_keeps_type():
    np.random.seed(1)
    im = gradient_image(20, 30)
    before = im.copy()
    augment_hsv(im, 0.5, 0.5, 0.5)
    assert im.dtype == np.uint8 and im.shape == before.shape and not np.array_equal(im, before)


def test_mixup_blends_images_and_concatenates_labels():
    np.random.seed(0)
    a, b = np.zeros((4, 4, 3), np.uint8), np.full((4, 4, 3), 200, np.uint8)
    labels_a, labels_b = np.array([[0, 1, 1, 2, 2]], float), np.array([[1, 0, 0, 3, 3], [2, 1, 0, 2, 3]], float)
    im, labels = mixup(a, labels_a, b, labels_b)
    np.random.seed(0)
    weight = np.random.beta(32.0, 32.0)
    assert (im == np.uint8(200 * (1 - weight))).all()
    np.testing.assert_array_equal(labels, np.concatenate([labels_a, labels_b]))


def test_mixing_augmentations_with_a_view_task_switched_off_or_kept_and_masked():
    from utils.training.run_setup import disable_mixing_augmentations

    hyp = {"mosaic": 0.5, "mixup": 0.1, "copy_paste": 0.0, "lr0": 0.01}
    off = disable_mixing_augmentations(hyp)
    assert (off["mosaic"], off["mixup"], off["lr0"]) == (0.0, 0.0, 0.01)
    kept = disable_mixing_augmentations({**hyp, "mask_mixed_views": True})
    assert (kept["mosaic"], kept["mixup"]) == (0.5, 0.1)
