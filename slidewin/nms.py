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
size and centre could give IoU above the threshold (see `_greedy_nms_kernel`): ~0.1-0.3 s at
100k boxes on 2 cores for uniform, clustered, log-uniform-size and sparse layouts, any threshold.
When a band has fewer kept boxes than cells to look in, the kernel walks the band instead, so
the worst case stays the textbook loop's.

`soft_nms` (Bodla et al. 2017) decays overlapping boxes' scores instead of removing them and
returns the kept indices with their new scores, in the same order and with the same IoU.

IoU is computed in float64 as ``inter / (area_a + area_b - inter)`` and is 0 when the boxes do
not overlap with positive area, so zero-area boxes are always kept, never suppress, and nothing
divides by zero.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from numba import njit

__all__ = ["batched_nms", "nms", "soft_nms"]


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
    coords, scores = _validate(xyxy, scores, iou_threshold)
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
    coords, scores = _validate(xyxy, scores, iou_threshold)
    class_ids = np.asarray(class_ids)
    if class_ids.shape != (coords.shape[0],):
        raise ValueError(
            f"class_ids must have shape ({coords.shape[0]},) to match xyxy, got {class_ids.shape}"
        )
    if class_ids.size and not np.issubdtype(class_ids.dtype, np.integer):
        raise ValueError(f"class_ids must have an integer dtype, got {class_ids.dtype}")
    _, groups = np.unique(class_ids, return_inverse=True)
    return _run(coords, scores, groups.astype(np.int64).ravel(), iou_threshold)


def _validate(
    xyxy: np.ndarray, scores: np.ndarray, iou_threshold: float
) -> tuple[np.ndarray, np.ndarray]:
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
    coords: np.ndarray, scores: np.ndarray, groups: np.ndarray, iou_threshold: float
) -> np.ndarray:
    n = coords.shape[0]
    if n == 0:
        return np.zeros(0, np.int64)
    order = np.lexsort((np.arange(n), -scores)).astype(np.int64)
    # Sorted, contiguous 1-D arrays: the kernel walks them front to back in rank order.
    x1, y1, x2, y2 = (np.ascontiguousarray(coords[order, k]) for k in range(4))
    groups = np.ascontiguousarray(groups[order])
    # Absolute margin for rounding in box centres, far above float64's 1e-16 relative error.
    slack = 1e-9 * float(np.abs(coords).max())
    keep = _greedy_nms_kernel(
        x1, y1, x2, y2, groups, _size_bands(x1, y1, x2, y2, groups), float(iou_threshold), slack
    )
    return order[keep]


def _size_bands(
    x1: np.ndarray, y1: np.ndarray, x2: np.ndarray, y2: np.ndarray, groups: np.ndarray
) -> np.ndarray:
    """Dense band id per box for (class, octave of width, octave of height).

    Ids sort by class first, so the bands of one class are consecutive. Which band a box lands in
    changes speed only: the kernel uses each band's exact width and height ranges.
    """
    width, height = x2 - x1, y2 - y1
    positive = width * height > 0
    octaves = []
    for extent in (width, height):
        octave = np.zeros(extent.shape[0], np.int64)
        if positive.any():
            log_extent = np.log2(extent[positive])
            octave[positive] = np.floor(log_extent - log_extent.min()).astype(np.int64)
        octaves.append(octave)
    n_w, n_h = int(octaves[0].max()) + 1, int(octaves[1].max()) + 1
    _, band = np.unique((groups * n_w + octaves[0]) * n_h + octaves[1], return_inverse=True)
    return np.ascontiguousarray(band.astype(np.int64).ravel())


@njit(cache=True, error_model="numpy")
def _iou_above(i, j, x1, y1, x2, y2, area, threshold):
    # The test file's reference computes the same expression in the same order: results must
    # be bit-identical at the threshold.
    iw = min(x2[i], x2[j]) - max(x1[i], x1[j])
    ih = min(y2[i], y2[j]) - max(y1[i], y1[j])
    if iw <= 0.0 or ih <= 0.0:
        return False
    inter = iw * ih
    if inter <= 0.0:  # underflow: no overlap, and never 0 / 0
        return False
    return inter / (area[i] + area[j] - inter) > threshold


@njit(cache=True, error_model="numpy")
def _chain_suppresses(i, chain_next, j, groups, x1, y1, x2, y2, area, threshold):
    """Whether a kept box on the linked chain starting at ``i`` suppresses box ``j``."""
    while i >= 0:
        if groups[i] == groups[j] and _iou_above(i, j, x1, y1, x2, y2, area, threshold):
            return True
        i = chain_next[i]
    return False


@njit(cache=True, error_model="numpy")
def _cell_index(value, origin, cell):
    # Monotone in value (the clamp too), so a range query never misses a cell it spans.
    return int(min(max(np.floor((value - origin) / cell), -2.0**60), 2.0**60))


@njit(cache=True, error_model="numpy")
def _bucket(band, gx, gy, mask):
    h = ((band * 0x165667B19E3779F9 + gx) * 0x27D4EB2F165667C5 + gy) * 0x165667B19E3779F9
    return (h ^ (h >> 31)) & mask


@njit(cache=True, error_model="numpy")
def _band_ranges(band, groups, width, height):
    """Exact width and height range of each band's positive-area boxes, and for each band the
    first and last band of its class (a class's bands are consecutive ids)."""
    n_bands = band.max() + 1
    w_lo = np.full(n_bands, np.inf)
    w_hi = np.zeros(n_bands)
    h_lo = np.full(n_bands, np.inf)
    h_hi = np.zeros(n_bands)
    band_group = np.empty(n_bands, np.int64)
    for j in range(band.shape[0]):
        b = band[j]
        band_group[b] = groups[j]
        if width[j] * height[j] > 0.0:
            w_lo[b] = min(w_lo[b], width[j])
            w_hi[b] = max(w_hi[b], width[j])
            h_lo[b] = min(h_lo[b], height[j])
            h_hi[b] = max(h_hi[b], height[j])
    band_first = np.empty(n_bands, np.int64)
    band_last = np.empty(n_bands, np.int64)
    for b in range(n_bands):
        same = b > 0 and band_group[b] == band_group[b - 1]
        band_first[b] = band_first[b - 1] if same else b
    for b in range(n_bands - 1, -1, -1):
        same = b < n_bands - 1 and band_group[b] == band_group[b + 1]
        band_last[b] = band_last[b + 1] if same else b
    return w_lo, w_hi, h_lo, h_hi, band_first, band_last


@njit(cache=True, error_model="numpy")
def _greedy_nms_kernel(x1, y1, x2, y2, groups, band, threshold, slack):
    """Keep mask for boxes sorted by rank: box j is kept unless a kept box overlaps it > threshold.

    Kept boxes are filed by (band, cell of their centre) in a hash table of linked chains, and
    per band in a linked list. Two facts bound where a suppressor of ``j`` can be, for
    ``t = threshold``: IoU <= (narrower width) / (wider width), so the band's width range must
    reach past ``t * width[j]``; and IoU <= (intersection width) / (wider width) <=
    1 - |centre offset in x| / (wider width), so its centre lies within ``(1 - t) * max(width)``
    of j's in x. The same holds for heights in y.
    ``t_low`` and ``slack`` widen these bounds far beyond rounding error, so a box is skipped
    only when it cannot suppress ``j``; the result is the plain greedy loop's.
    """
    n = x1.shape[0]
    n_bands = band.max() + 1
    width = x2 - x1
    height = y2 - y1
    area = width * height
    cx = 0.5 * (x1 + x2)
    cy = 0.5 * (y1 + y2)
    origin_x, origin_y = cx.min(), cy.min()
    t_low = threshold * (1.0 - 1e-9)

    w_lo, w_hi, h_lo, h_hi, band_first, band_last = _band_ranges(band, groups, width, height)
    # Cells twice the centre offset that still allows IoU > threshold: a lookup spans ~2x2
    # cells (tried 1x and 0.5x: slower at every threshold on the layouts in the module doc).
    cell_w = np.maximum(2.0 * (1.0 - threshold) * w_hi, 1e-6 * w_hi)
    cell_h = np.maximum(2.0 * (1.0 - threshold) * h_hi, 1e-6 * h_hi)

    table_size = 1
    while table_size < 2 * n:
        table_size *= 2
    bucket_head = np.full(table_size, -1, np.int64)
    bucket_next = np.empty(n, np.int64)
    band_head = np.full(n_bands, -1, np.int64)
    band_next = np.empty(n, np.int64)
    band_count = np.zeros(n_bands, np.int64)
    keep = np.ones(n, np.bool_)
    for j in range(n):
        if area[j] <= 0.0:
            continue  # zero area: IoU 0 with everything, kept and never a suppressor
        suppressed = False
        for b in range(band_first[band[j]], band_last[band[j]] + 1):
            if (
                band_count[b] == 0
                or w_hi[b] < t_low * width[j] or w_lo[b] * t_low > width[j]
                or h_hi[b] < t_low * height[j] or h_lo[b] * t_low > height[j]
            ):
                continue
            reach_x = (1.0 - t_low) * max(width[j], w_hi[b]) + slack
            reach_y = (1.0 - t_low) * max(height[j], h_hi[b]) + slack
            gx0 = _cell_index(cx[j] - reach_x, origin_x, cell_w[b])
            gx1 = _cell_index(cx[j] + reach_x, origin_x, cell_w[b])
            gy0 = _cell_index(cy[j] - reach_y, origin_y, cell_h[b])
            gy1 = _cell_index(cy[j] + reach_y, origin_y, cell_h[b])
            if float(gx1 - gx0 + 1) * float(gy1 - gy0 + 1) > band_count[b]:
                # More cells to look in than kept boxes in the band: walk the band instead.
                suppressed = _chain_suppresses(
                    band_head[b], band_next, j, groups, x1, y1, x2, y2, area, threshold
                )
            else:
                for gy in range(gy0, gy1 + 1):
                    for gx in range(gx0, gx1 + 1):
                        if _chain_suppresses(
                            bucket_head[_bucket(b, gx, gy, table_size - 1)], bucket_next,
                            j, groups, x1, y1, x2, y2, area, threshold,
                        ):
                            suppressed = True
                            break
                    if suppressed:
                        break
            if suppressed:
                break
        if suppressed:
            keep[j] = False
            continue
        b = band[j]
        band_next[j] = band_head[b]
        band_head[b] = j
        band_count[b] += 1
        gx = _cell_index(cx[j], origin_x, cell_w[b])
        gy = _cell_index(cy[j], origin_y, cell_h[b])
        h = _bucket(b, gx, gy, table_size - 1)
        bucket_next[j] = bucket_head[h]
        bucket_head[h] = j
    return keep


# --- soft-NMS --------------------------------------------------------------------------------------


def soft_nms(
    xyxy: np.ndarray,
    scores: np.ndarray,
    class_ids: np.ndarray | None = None,
    sigma: float = 0.5,
    score_threshold: float = 0.001,
    method: Literal["gaussian", "linear"] = "gaussian",
    iou_threshold: float = 0.3,
    _path: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Class-aware soft-NMS (Bodla et al. 2017): overlapping boxes are decayed, not removed.

    Per class, repeatedly take the remaining box with the highest *current* score (equal scores:
    lower index first), keep it with that score, and multiply the score of every remaining box
    of its class by a weight of their IoU: ``exp(-iou**2 / sigma)`` (``gaussian``) or
    ``1 - iou`` when ``iou > iou_threshold`` (``linear``; 1 otherwise). A box whose score falls
    below ``score_threshold`` is dropped (so are boxes that start below it). Gaussian soft-NMS
    with ``sigma -> 0`` is hard NMS that suppresses any overlap.

    Only overlapping boxes change each other's scores. Per class, where few pairs overlap, a box
    is compared only with boxes sharing a cell of a uniform grid and a max-heap finds the next
    box; where most do (sliding windows: ~30% of same-class pairs overlap on a COCO photo), one
    pass over the remaining boxes decays them and finds the next box (see `_soft_nms_kernel`).
    Measured on the default dense-mode candidates of 30 coco-dev photos (~11k boxes each, up to
    ~2.6k in one class; shared 2-core CPU): median 24 ms a photo, as long as `batched_nms`;
    the grid alone 105 ms, passes alone 31 ms median but 350 ms at worst, and a vectorised
    NumPy loop 63 ms.

    Args:
        xyxy: (N, 4) float boxes ``x1, y1, x2, y2`` with ``x1 <= x2`` and ``y1 <= y2``, finite.
        scores: (N,) float scores, finite.
        class_ids: (N,) integer class ids, or None: one class.
        sigma: > 0, the Gaussian's width (``gaussian`` only).
        score_threshold: >= 0; boxes scoring below it (before or after decay) are dropped.
        method: ``gaussian`` or ``linear``.
        iou_threshold: in [0, 1]; the ``linear`` method decays only boxes above it.

    Returns:
        (indices, new_scores): int64 (K,) indices of the kept boxes and their float64 (K,)
        decayed scores, by descending decayed score; equal scores keep the lower index first.

    Raises:
        ValueError: as `batched_nms`, or a bad ``sigma``, ``score_threshold`` or ``method``.
    """
    # _path (tests only): 0 picks per class, 1 forces the grid and heap, 2 the pass.
    coords, scores = _validate(xyxy, scores, iou_threshold)
    n = coords.shape[0]
    if class_ids is None:
        class_ids = np.zeros(n, np.int64)
    class_ids = np.asarray(class_ids)
    if class_ids.shape != (n,):
        raise ValueError(f"class_ids must have shape ({n},) to match xyxy, got {class_ids.shape}")
    if class_ids.size and not np.issubdtype(class_ids.dtype, np.integer):
        raise ValueError(f"class_ids must have an integer dtype, got {class_ids.dtype}")
    if method not in ("gaussian", "linear"):
        raise ValueError(f"method must be 'gaussian' or 'linear', got {method!r}")
    if not (np.isfinite(sigma) and sigma > 0):
        raise ValueError(f"sigma must be a positive number, got {sigma}")
    if not (np.isfinite(score_threshold) and score_threshold >= 0):
        raise ValueError(f"score_threshold must be a number >= 0, got {score_threshold}")
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.float64)
    _, groups = np.unique(class_ids, return_inverse=True)
    # Boxes of one class are consecutive, in index order: the kernel's tie-break is by position.
    order = np.lexsort((np.arange(n), groups.ravel())).astype(np.int64)
    sorted_groups = groups.ravel()[order]
    starts = np.flatnonzero(np.r_[True, sorted_groups[1:] != sorted_groups[:-1], True]).astype(np.int64)
    x1, y1, x2, y2 = (np.ascontiguousarray(coords[order, k]) for k in range(4))
    current = np.ascontiguousarray(scores[order], dtype=np.float64)
    kept = _soft_nms_kernel(x1, y1, x2, y2, current, starts, float(sigma), float(score_threshold),
                            method == "linear", float(iou_threshold), _path)
    idx, new_scores = order[kept], current[kept]
    final = np.lexsort((idx, -new_scores))
    return idx[final].astype(np.int64), new_scores[final]


@njit(cache=True, error_model="numpy")
def _heap_before(s_a, i_a, s_b, i_b):
    return s_a > s_b or (s_a == s_b and i_a < i_b)


@njit(cache=True, error_model="numpy")
def _heap_push(heap_s, heap_i, size, s, i):
    if size == heap_s.shape[0]:
        grown_s = np.empty(2 * size, np.float64)
        grown_i = np.empty(2 * size, np.int64)
        grown_s[:size] = heap_s
        grown_i[:size] = heap_i
        heap_s, heap_i = grown_s, grown_i
    k = size
    while k > 0:
        parent = (k - 1) // 2
        if not _heap_before(s, i, heap_s[parent], heap_i[parent]):
            break
        heap_s[k], heap_i[k] = heap_s[parent], heap_i[parent]
        k = parent
    heap_s[k], heap_i[k] = s, i
    return heap_s, heap_i, size + 1


@njit(cache=True, error_model="numpy")
def _heap_sift_down(heap_s, heap_i, size, k):
    s, i = heap_s[k], heap_i[k]
    while True:
        child = 2 * k + 1
        if child >= size:
            break
        if child + 1 < size and _heap_before(heap_s[child + 1], heap_i[child + 1], heap_s[child], heap_i[child]):
            child += 1
        if not _heap_before(heap_s[child], heap_i[child], s, i):
            break
        heap_s[k], heap_i[k] = heap_s[child], heap_i[child]
        k = child
    heap_s[k], heap_i[k] = s, i


@njit(cache=True, error_model="numpy")
def _soft_weight(i, j, x1, y1, x2, y2, area, sigma, linear, iou_threshold):
    """The factor box ``i`` (just kept) applies to box ``j``'s score; 1.0 when it does not."""
    # The same IoU expression as `_iou_above` (and the tests' reference).
    iw = min(x2[i], x2[j]) - max(x1[i], x1[j])
    ih = min(y2[i], y2[j]) - max(y1[i], y1[j])
    if iw <= 0.0 or ih <= 0.0:
        return 1.0
    inter = iw * ih
    if inter <= 0.0:
        return 1.0
    iou = inter / (area[i] + area[j] - inter)
    if linear:
        return 1.0 - iou if iou > iou_threshold else 1.0
    return np.exp(-(iou * iou) / sigma)


@njit(cache=True, error_model="numpy")
def _soft_pass(lo, hi, x1, y1, x2, y2, area, current, keep, floor, sigma, linear, iou_threshold):
    """Soft-NMS of one class by passes: each pass over the remaining boxes decays them by the box
    just kept and finds the next one. O(kept * remaining), the least work when most pairs
    overlap (a heap would pay a push per decay)."""
    alive = np.empty(hi - lo, np.int64)
    n_alive = 0
    best = -1
    for j in range(lo, hi):
        if current[j] >= floor:
            alive[n_alive] = j
            n_alive += 1
            if best < 0 or current[j] > current[best]:  # ties: the lower index, seen first
                best = j
    while best >= 0:
        i = best
        keep[i] = True
        best = -1
        write = 0
        for r in range(n_alive):
            j = alive[r]
            if j == i:
                continue
            if area[i] > 0.0 and area[j] > 0.0:
                w = _soft_weight(i, j, x1, y1, x2, y2, area, sigma, linear, iou_threshold)
                if w != 1.0:
                    current[j] = current[j] * w
                    if current[j] < floor:
                        continue
            alive[write] = j
            write += 1
            if best < 0 or current[j] > current[best] or (current[j] == current[best] and j < best):
                best = j
        n_alive = write


@njit(cache=True, error_model="numpy")
def _soft_nms_kernel(x1, y1, x2, y2, current, starts, sigma, floor, linear, iou_threshold, path):
    """Keep mask; ``current`` (scores) is decayed in place. Classes are the runs ``starts``.

    Per class, every positive-area box is counted under each cell of a uniform grid that its
    extent touches (cells about the class's mean box size). When the boxes sharing a cell with
    a box number more than a quarter of the class on average, most pairs overlap and
    `_soft_pass` does the class. Otherwise the boxes are filed in the cells: two boxes that
    overlap with positive area share a point, and the cell of that point lies in both boxes'
    cell ranges (the cell index is monotone in the coordinate), so walking the cells of the box
    just kept finds every box it can decay; each is taken once per kept box (a stamp). A heap
    holds (score, index) entries; a decayed box gets a new entry and its old one is skipped
    when popped (its score no longer matches). Both ways keep the same boxes with the same
    scores: the same order (highest score, then lowest index) and the same arithmetic.
    """
    n = x1.shape[0]
    width = x2 - x1
    height = y2 - y1
    area = width * height
    keep = np.zeros(n, np.bool_)
    done = np.zeros(n, np.bool_)  # kept or dropped
    stamp = np.full(n, -1, np.int64)
    heap_s = np.empty(max(16, 2 * n), np.float64)
    heap_i = np.empty(max(16, 2 * n), np.int64)
    for c in range(starts.shape[0] - 1):
        lo, hi = starts[c], starts[c + 1]
        if path == 2:
            _soft_pass(lo, hi, x1, y1, x2, y2, area, current, keep, floor, sigma, linear, iou_threshold)
            continue
        n_pos = 0
        sum_w = 0.0
        sum_h = 0.0
        gx0 = np.inf
        gy0 = np.inf
        gx1 = -np.inf
        gy1 = -np.inf
        for j in range(lo, hi):
            if area[j] > 0.0:
                n_pos += 1
                sum_w += width[j]
                sum_h += height[j]
                gx0 = min(gx0, x1[j])
                gy0 = min(gy0, y1[j])
                gx1 = max(gx1, x2[j])
                gy1 = max(gy1, y2[j])
        nx = 1
        ny = 1
        cell_w = 1.0
        cell_h = 1.0
        if n_pos > 0:
            # Cells of the mean box size; fewer (larger) when a few tiny boxes spread far.
            limit = 4 * n_pos + 16
            nx = int(min((gx1 - gx0) / (sum_w / n_pos), float(limit))) + 1
            ny = int(min((gy1 - gy0) / (sum_h / n_pos), float(limit))) + 1
            while nx * ny > limit:
                if nx >= ny:
                    nx = (nx + 1) // 2
                else:
                    ny = (ny + 1) // 2
            cell_w = (gx1 - gx0) / nx
            cell_h = (gy1 - gy0) / ny
        cx0 = np.zeros(hi - lo, np.int64)
        cx1 = np.full(hi - lo, -1, np.int64)  # zero-area boxes: an empty cell range
        cy0 = np.zeros(hi - lo, np.int64)
        cy1 = np.full(hi - lo, -1, np.int64)
        cell_start = np.zeros(nx * ny + 1, np.int64)
        for j in range(lo, hi):
            if area[j] > 0.0:
                k = j - lo
                cx0[k] = min(max(int(np.floor((x1[j] - gx0) / cell_w)), 0), nx - 1)
                cx1[k] = min(max(int(np.floor((x2[j] - gx0) / cell_w)), 0), nx - 1)
                cy0[k] = min(max(int(np.floor((y1[j] - gy0) / cell_h)), 0), ny - 1)
                cy1[k] = min(max(int(np.floor((y2[j] - gy0) / cell_h)), 0), ny - 1)
                for gy in range(cy0[k], cy1[k] + 1):
                    for gx in range(cx0[k], cx1[k] + 1):
                        cell_start[gy * nx + gx + 1] += 1
        if path == 0 and n_pos > 0:
            # Boxes (with repeats) that the kept boxes' cells would show: against the class size.
            shown = 0.0
            for k in range(hi - lo):
                for gy in range(cy0[k], cy1[k] + 1):
                    for gx in range(cx0[k], cx1[k] + 1):
                        shown += cell_start[gy * nx + gx + 1]
            if 4.0 * shown > float(n_pos) * float(n_pos):
                _soft_pass(lo, hi, x1, y1, x2, y2, area, current, keep, floor, sigma, linear, iou_threshold)
                continue
        for g in range(nx * ny):
            cell_start[g + 1] += cell_start[g]
        fill = cell_start[:-1].copy()
        members = np.empty(cell_start[nx * ny], np.int64)
        for k in range(hi - lo):
            for gy in range(cy0[k], cy1[k] + 1):
                for gx in range(cx0[k], cx1[k] + 1):
                    g = gy * nx + gx
                    members[fill[g]] = lo + k
                    fill[g] += 1

        size = 0
        for j in range(lo, hi):
            if current[j] < floor:
                done[j] = True
            else:
                heap_s[size], heap_i[size] = current[j], j
                size += 1
        for k in range((size - 2) // 2, -1, -1):
            _heap_sift_down(heap_s, heap_i, size, k)
        while size > 0:
            s, i = heap_s[0], heap_i[0]
            size -= 1
            if size > 0:
                heap_s[0], heap_i[0] = heap_s[size], heap_i[size]
                _heap_sift_down(heap_s, heap_i, size, 0)
            if done[i] or s != current[i]:
                continue  # stale entry
            done[i] = True
            keep[i] = True
            k = i - lo
            for gy in range(cy0[k], cy1[k] + 1):
                for gx in range(cx0[k], cx1[k] + 1):
                    g = gy * nx + gx
                    for m in range(cell_start[g], cell_start[g + 1]):
                        j = members[m]
                        if done[j] or stamp[j] == i:
                            continue
                        stamp[j] = i
                        w = _soft_weight(i, j, x1, y1, x2, y2, area, sigma, linear, iou_threshold)
                        if w == 1.0:
                            continue
                        current[j] = current[j] * w
                        if current[j] < floor:
                            done[j] = True
                        else:
                            heap_s, heap_i, size = _heap_push(heap_s, heap_i, size, current[j], j)
    return keep
