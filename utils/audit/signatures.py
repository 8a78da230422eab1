"""The cheap image signature behind near-duplicates and the nearest-train-frame ceiling.

Signature: the image in grey, shrunk to 64x48 with INTER_AREA (an average over each cell, so
speckle and JPEG noise wash out), flattened, mean removed and scaled to unit norm. The dot
product of two signatures is then their Pearson correlation: blind to a change of brightness or
contrast, cheap (one matrix product for all pairs) and easy to read (1.0 = the same picture).
A perceptual hash would be cheaper to compare, but the ceiling needs a graded similarity for its
nearest neighbour anyway, so one decode and one signature serve both checks.
"""
from __future__ import annotations

from collections.abc import Iterator

import cv2
import numpy as np

SIGNATURE_SIZE = (64, 48)  # (w, h): about 4:3, the shape of the ultrasound frames and of most photos
BLOCK_ROWS = 512  # rows per block of the pairwise product: memory stays O(block x N), not O(N^2)


def thumbnail(grey: np.ndarray, size: tuple[int, int] = SIGNATURE_SIZE) -> np.ndarray:
    """A grey image shrunk to `size` (w, h) and flattened to float32."""
    return cv2.resize(grey, size, interpolation=cv2.INTER_AREA).astype(np.float32).ravel()


def standardise(vectors: np.ndarray) -> np.ndarray:
    """Rows minus their mean, divided by their norm: then a dot product IS the Pearson correlation.

    A constant row (zero norm after centring: a blank or unreadable image) becomes all zeros, so it
    correlates 0 with everything instead of producing NaNs or matching every other blank image.
    """
    x = np.asarray(vectors, dtype=np.float64)
    x = x - x.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norm, out=np.zeros_like(x), where=norm > 0)


def nearest_neighbours(query: np.ndarray, reference: np.ndarray, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Indices [n_query, k] of the k most correlated reference rows, and those correlations.

    Both inputs must already be standardised. Sorted by decreasing correlation; ties go to the lower
    reference index (stable sort), so results are deterministic.
    """
    query, reference = np.asarray(query), np.asarray(reference)
    k = min(k, reference.shape[0])
    order_parts, corr_parts = [], []
    for start in range(0, query.shape[0], BLOCK_ROWS):
        sims = query[start:start + BLOCK_ROWS] @ reference.T
        order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
        order_parts.append(order)
        corr_parts.append(np.take_along_axis(sims, order, axis=1))
    if not order_parts:
        return np.zeros((0, k), np.int64), np.zeros((0, k))
    return np.concatenate(order_parts), np.concatenate(corr_parts)


def similar_pairs(x: np.ndarray, threshold: float) -> Iterator[tuple[int, int, float]]:
    """Every pair (i, j, correlation) with i < j and correlation >= threshold, rows of `x` standardised.

    All-zero rows (unreadable or blank images) correlate 0 with everything, so they never pair at a
    threshold above 0.
    """
    x = np.asarray(x)
    for start in range(0, x.shape[0], BLOCK_ROWS):
        sims = x[start:start + BLOCK_ROWS] @ x.T
        rows, cols = np.nonzero(sims >= threshold)
        for r, c in zip(rows.tolist(), cols.tolist()):
            i = start + r
            if i < c:
                yield i, c, float(sims[r, c])
