"""Greedy non-maximum suppression that returns indices, compiled with numba.

`nms` and `batched_nms` return int64 indices into their inputs, ordered by descending score with
a deterministic tie-break (equal scores: lower original index first); callers filter
`Detections` with them. A box is suppressed when its IoU with an already kept box is strictly
greater than ``iou_threshold`` (as in torchvision and ``cv2.dnn.NMSBoxes``).

The result is exactly that of the textbook greedy loop: walk the boxes in score order and keep
a box unless some kept box overlaps it above the threshold. Only *which* kept boxes get compared
changes. The textbook loop compares each box with every kept box, O(N * kept), which is why
``cv2.dnn.NMSBoxes`` takes ~13 s at 100k boxes when many survive. Here kept boxes are filed by
size band and by the grid cell of their centre, and a box is compared only with kept boxes whose
size and centre could give IoU above the threshold (`slidewin.core.nms_kernel`, numba): ~0.1-0.3 s
at 100k boxes on 2 cores for uniform, clustered, log-uniform-size and sparse layouts, any
threshold. When a band has fewer kept boxes than cells to look in, the kernel walks the band
instead, so the worst case stays the textbook loop's.

Below `NUMPY_MAX_BOXES` boxes the textbook loop itself runs, vectorised with NumPy, unless the
kernel is already loaded: a one-photo run then never pays for loading numba (~0.5 s), and the
result is the same, index for index (the same float64 expression, in the same order; the tests
hold both paths to the naive reference).

Soft-NMS, which decays overlapping boxes' scores instead of removing them, is in
`slidewin.core.soft_nms`; it shares this module's input checks and IoU expression.

IoU is computed in float64 as ``inter / (area_a + area_b - inter)`` and is 0 when the boxes do
not overlap with positive area, so zero-area boxes are always kept, never suppress, and nothing
divides by zero.
"""

from __future__ import annotations

import sys

import numpy as np

__all__ = ["batched_nms", "nms"]

#: Inputs up to this many boxes take the NumPy loop while the numba kernel is not loaded yet
#: (benchmarks/speed/bench_startup.py: the loop costs about what loading the kernel costs at this size).
NUMPY_MAX_BOXES = 3000


def nms(xyxy: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy NMS over all boxes, regardless of class.

    Args:
        xyxy: (N, 4) float boxes ``x1, y1, x2, y2`` with ``x1 <= x2`` and ``y1 <= y2``, finite.
            float32 and float64 give the same result (coordinates are upcast to float64).
        scores: (N,) float (or integer) scores, finite.
        iou_threshold: in [0, 1]; a box is suppressed when its IoU with a kept box is
            ``> iou_threshold``.

    Returns:
        int64 (K,) indices of the kept boxes, unique, by descending score; equal scores keep
        the lower index first. Empty input gives an empty array.

    Raises:
        ValueError: wrong shapes, non-finite values, ``x2 < x1`` or ``y2 < y1``, or a threshold
            outside [0, 1].
    """
    coords, scores = validate_boxes(xyxy, scores, iou_threshold)
    return _run(coords, scores, np.zeros(coords.shape[0], np.int64), iou_threshold)


def batched_nms(
    xyxy: np.ndarray, scores: np.ndarray, class_ids: np.ndarray, iou_threshold: float
) -> np.ndarray:
    """Class-aware greedy NMS: boxes only suppress boxes of the same class.

    Uses the same kernel as `nms` with the coordinate-offset trick applied to the kernel's
    integer cell keys rather than to the float boxes: the class is part of every band id the
    kernel files kept boxes under, so boxes of different classes are never looked up together
    (and a shared hash bucket is caught by a class check). Adding ``class_id * (max + 1)`` to the
    float coordinates instead would round them and could flip an IoU that sits exactly at the
    threshold, so the result would no longer equal per-class NMS.

    Args:
        xyxy: (N, 4) float boxes ``x1, y1, x2, y2`` with ``x1 <= x2`` and ``y1 <= y2``, finite.
        scores: (N,) float scores, finite.
        class_ids: (N,) integer class ids (any values, need not be contiguous).
        iou_threshold: in [0, 1]; a box is suppressed when its IoU with a kept box of the same
            class is ``> iou_threshold``.

    Returns:
        int64 (K,) indices of the kept boxes, unique, by descending score over all classes;
        equal scores keep the lower index first. Equal to running `nms` per class and merging
        the results in that order.

    Raises:
        ValueError: as `nms`, or ``class_ids`` of the wrong shape or a non-integer dtype.
    """
    coords, scores = validate_boxes(xyxy, scores, iou_threshold)
    class_ids = np.asarray(class_ids)
    if class_ids.shape != (coords.shape[0],):
        raise ValueError(
            f"class_ids must have shape ({coords.shape[0]},) to match xyxy, got {class_ids.shape}"
        )
    if class_ids.size and not np.issubdtype(class_ids.dtype, np.integer):
        raise ValueError(f"class_ids must have an integer dtype, got {class_ids.dtype}")
    _, groups = np.unique(class_ids, return_inverse=True)
    return _run(coords, scores, groups.astype(np.int64).ravel(), iou_threshold)


def validate_boxes(
    xyxy: np.ndarray, scores: np.ndarray, iou_threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    """float64 (N, 4) coordinates and (N,) float scores, or ValueError saying what is wrong."""
    coords = np.asarray(xyxy)
    if coords.ndim != 2 or coords.shape[1] != 4:
        raise ValueError(f"xyxy must have shape (N, 4), got {coords.shape}")
    coords = coords.astype(np.float64, copy=False)
    scores = np.asarray(scores)
    if not (np.issubdtype(scores.dtype, np.floating) or np.issubdtype(scores.dtype, np.integer)):
        raise ValueError(f"scores must have a float or integer dtype, got {scores.dtype}")
    if not np.issubdtype(scores.dtype, np.floating):
        scores = scores.astype(np.float64)  # so that -scores sorts unsigned integers correctly
    if scores.shape != (coords.shape[0],):
        n = coords.shape[0]
        raise ValueError(f"scores must have shape ({n},) to match xyxy, got {scores.shape}")
    if not 0.0 <= iou_threshold <= 1.0:  # also rejects NaN
        raise ValueError(f"iou_threshold must lie in [0, 1], got {iou_threshold}")
    if not np.isfinite(coords).all():
        raise ValueError("xyxy must be finite, got NaN or inf")
    if not np.isfinite(scores).all():
        raise ValueError("scores must be finite, got NaN or inf")
    if (coords[:, 2] < coords[:, 0]).any() or (coords[:, 3] < coords[:, 1]).any():
        raise ValueError("xyxy must have x1 <= x2 and y1 <= y2, got a box with x2 < x1 or y2 < y1")
    return coords, scores


def _run(
    coords: np.ndarray, scores: np.ndarray, groups: np.ndarray, iou_threshold: float, path: str = "auto"
) -> np.ndarray:
    """Kept indices by rank; ``path``: ``auto`` (see the module docstring), ``numpy`` or ``kernel``."""
    n = coords.shape[0]
    if n == 0:
        return np.zeros(0, np.int64)
    order = np.lexsort((np.arange(n), -scores)).astype(np.int64)
    # Sorted, contiguous 1-D arrays: the kernel walks them front to back in rank order.
    x1, y1, x2, y2 = (np.ascontiguousarray(coords[order, k]) for k in range(4))
    groups = np.ascontiguousarray(groups[order])
    if path == "auto":
        small = n <= NUMPY_MAX_BOXES and "slidewin.core.nms_kernel" not in sys.modules
        path = "numpy" if small else "kernel"
    if path == "numpy":
        return order[_greedy_numpy(x1, y1, x2, y2, groups, float(iou_threshold))]
    from slidewin.core.nms_kernel import greedy_keep

    # Absolute margin for rounding in box centres, far above float64's 1e-16 relative error.
    slack = 1e-9 * float(np.abs(coords).max())
    return order[greedy_keep(x1, y1, x2, y2, groups, float(iou_threshold), slack)]


def _greedy_numpy(x1, y1, x2, y2, groups, threshold: float) -> np.ndarray:
    """Keep mask of the textbook greedy loop over boxes sorted by rank: each kept box suppresses
    the later same-class boxes it overlaps above ``threshold``; zero-area boxes are kept and never
    suppress. IoU as `_iou_above` in the kernel: ``inter / (area_kept + area_other - inter)``."""
    n = x1.shape[0]
    area = (x2 - x1) * (y2 - y1)
    keep = np.ones(n, np.bool_)
    for i in range(n):
        if not keep[i] or area[i] <= 0.0:
            continue
        rest = slice(i + 1, n)
        iw = np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest])
        ih = np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest])
        inter = iw * ih
        hit = (iw > 0.0) & (ih > 0.0) & (inter > 0.0) & (groups[rest] == groups[i])
        with np.errstate(divide="ignore", invalid="ignore"):
            hit &= inter / (area[i] + area[rest] - inter) > threshold
        keep[rest] &= ~hit
    return keep
