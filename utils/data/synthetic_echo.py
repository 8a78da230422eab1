"""Echo-like backgrounds for the synthetic dataset: a grey ultrasound fan whose shape and chambers show a view.

The view is a property of the whole picture, as in cardiac ultrasound, where the acoustic window
sets the fan and the cut through the heart sets what is inside it. Here each view has its own fan
preset (half-angle 32, 42 or 52 degrees, depth 0.85, 0.95 or 1.05 image heights, both jittered)
and its own layout of large dark chambers and bright walls, spanning most of the fan:

- short_axis: one round cavity inside a thick ring (a ventricle cut across): curved walls;
- long_axis: two long cavities lying across the fan, split by a bright wall: horizontal walls;
- four_chamber: four tall cavities beside a bright septum running down from the apex: vertical walls.

Nothing local tells the view (the objects to detect are drawn on top, independently of it). Each
layout is drawn from a left-right symmetric distribution, so a horizontal flip keeps the view.
Outside the fan is the letterbox grey (114) that padding and augmentation borders use, so padding
adds no new colour; it does make the fan a smaller part of the image, which is why `make run`
trains on zoomed-out frames too (data/hyps/hyp.first-run.yaml).
"""
from __future__ import annotations

import math

import cv2
import numpy as np

VIEW_NAMES = ("short_axis", "long_axis", "four_chamber")
CAVITY_GREY = (8, 22)  # blood pools are almost black in B-mode ultrasound
WALL_GREY = (115, 145)  # walls and septa reflect more than the surrounding tissue
BACKGROUND_GREY = 114  # YOLOv5's letterbox and augmentation border colour
FAN_HALF_ANGLE = (32.0, 42.0, 52.0)  # degrees, per view
FAN_DEPTH = (0.85, 0.95, 1.05)  # radius in image heights, per view


def _fan_mask(rng: np.random.Generator, view: int, width: int, height: int) -> np.ndarray:
    """Boolean mask of a sector: apex near the top centre, straight edges, arc at the bottom."""
    apex_x = width / 2 + rng.uniform(-6, 6)
    apex_y = rng.uniform(-8, 4)
    half_angle = math.radians(FAN_HALF_ANGLE[view] + rng.uniform(-3, 3))
    radius = height * FAN_DEPTH[view] * rng.uniform(0.95, 1.05)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    dx, dy = xs - apex_x, ys - apex_y
    angle = np.arctan2(dx, dy)  # 0 = straight down
    return (np.hypot(dx, dy) <= radius) & (np.abs(angle) <= half_angle) & (dy > 0)


def _speckle(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Grey tissue texture: blurred multiplicative noise around a random gain (the operator's setting)."""
    gain = rng.uniform(60, 85)
    noise = rng.rayleigh(1.0, size=(height, width)).astype(np.float32)
    return cv2.GaussianBlur(noise, (3, 3), 0) * gain / 1.25


def _ellipse(canvas: np.ndarray, centre: tuple[float, float], axes: tuple[float, float], angle: float,
             grey: float) -> None:
    """A filled ellipse drawn in place on a float canvas."""
    c = (round(centre[0]), round(centre[1]))
    cv2.ellipse(canvas, c, (max(round(axes[0]), 1), max(round(axes[1]), 1)), angle, 0, 360, grey, -1)


def _wall(rng: np.random.Generator) -> float:
    return float(rng.uniform(*WALL_GREY))


def _cavity(rng: np.random.Generator) -> float:
    return float(rng.uniform(*CAVITY_GREY))


def _draw_view(canvas: np.ndarray, rng: np.random.Generator, view: int, width: int, height: int) -> None:
    """Draw the walls and chambers of `view` around a jittered centre of the fan."""
    cx = width / 2 + rng.uniform(-0.04, 0.04) * width
    cy = height * rng.uniform(0.52, 0.58)
    s = height * rng.uniform(0.9, 1.1)  # overall scale: the depth setting
    if view == 0:
        r = 0.22 * s
        _ellipse(canvas, (cx, cy), (r + 0.08 * s, r + 0.08 * s), 0.0, _wall(rng))
        _ellipse(canvas, (cx, cy), (r, r * rng.uniform(0.92, 1.0)), 0.0, _cavity(rng))
    elif view == 1:
        tilt = rng.uniform(-8, 8)
        _ellipse(canvas, (cx, cy), (0.46 * s, 0.25 * s), tilt, _wall(rng))
        for dy, ax, ay in ((-0.11, 0.40, 0.08), (0.11, 0.34, 0.075)):
            _ellipse(canvas, (cx, cy + dy * s), (ax * s, ay * s), tilt, _cavity(rng))
    else:
        cv2.rectangle(canvas, (round(cx - 0.035 * s), round(cy - 0.36 * s)),
                      (round(cx + 0.035 * s), round(cy + 0.34 * s)), _wall(rng), -1)
        for sx in (-1, 1):
            for sy, ay in ((-1, 0.15), (1, 0.13)):
                centre = (cx + sx * 0.13 * s, cy + sy * 0.17 * s)
                _ellipse(canvas, centre, (0.075 * s * rng.uniform(0.9, 1.1), ay * s * rng.uniform(0.9, 1.1)), 0.0,
                         _cavity(rng))


def echo_background(rng: np.random.Generator, view: int, width: int = 256, height: int = 192) -> np.ndarray:
    """A BGR uint8 frame: letterbox grey outside the fan, speckled tissue with the view's chambers inside."""
    if not 0 <= view < len(VIEW_NAMES):
        raise ValueError(f"view must be 0..{len(VIEW_NAMES) - 1}, got {view}")
    tissue = _speckle(rng, width, height)
    _draw_view(tissue, rng, view, width, height)
    tissue = cv2.GaussianBlur(tissue, (3, 3), 0) + rng.normal(0, 4, size=(height, width)).astype(np.float32)
    outside = BACKGROUND_GREY + rng.uniform(-3, 3, size=(height, width))
    grey = np.where(_fan_mask(rng, view, width, height), tissue, outside)
    return cv2.cvtColor(np.clip(grey, 0, 255).astype(np.uint8), cv2.COLOR_GRAY2BGR)
