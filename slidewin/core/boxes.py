"""Pairwise box overlap: one intersection, from which IoU and intersection-over-smaller follow.

Boxes are ``xyxy`` (N, 4) with ``x1 <= x2`` and ``y1 <= y2``. Everything is computed in float64,
so float32 inputs give the same answer however they are passed.
"""

from __future__ import annotations

import numpy as np


def box_area(xyxy: np.ndarray) -> np.ndarray:
    """Areas of (N, 4) xyxy boxes -> float64 (N,)."""
    b = np.asarray(xyxy, np.float64).reshape(-1, 4)
    return (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])


def pairwise_intersection(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection areas of every box of ``a`` (N, 4) with every box of ``b`` (M, 4) -> float64 (N, M)."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    return np.prod(np.clip(rb - lt, 0, None), axis=2)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise intersection over union, (N, 4) x (M, 4) -> float64 (N, M); 0 where the union is empty."""
    inter = pairwise_intersection(a, b)
    union = box_area(a)[:, None] + box_area(b)[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def box_ios(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise intersection over the smaller box's area, (N, 4) x (M, 4) -> float64 (N, M).

    1.0 when one box lies inside the other, whatever their IoU; 0 where the smaller box is empty.
    """
    inter = pairwise_intersection(a, b)
    smaller = np.minimum(box_area(a)[:, None], box_area(b)[None, :])
    return np.where(smaller > 0, inter / np.maximum(smaller, 1e-12), 0.0)
