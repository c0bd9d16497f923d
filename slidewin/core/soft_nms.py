"""Class-aware soft-NMS (Bodla et al. 2017): overlapping boxes are decayed, not removed.

Per class, repeatedly take the remaining box with the highest *current* score (equal scores:
lower index first), keep it with that score, and multiply the score of every remaining box of
its class by a weight of their IoU: ``exp(-iou**2 / sigma)`` (``gaussian``) or ``1 - iou`` when
``iou > iou_threshold`` (``linear``; 1 otherwise). A box whose score falls below
``score_threshold`` is dropped (so are boxes that start below it). Gaussian soft-NMS with
``sigma -> 0`` is hard NMS that suppresses any overlap.

Only overlapping boxes change each other's scores, and two ways of finding them give the same
result (the same order, highest score then lowest index, and the same arithmetic):

- **grid** (`_soft_grid`): boxes are filed in the cells of a uniform grid (about the class's
  mean box size) that their extent touches. Two boxes that overlap with positive area share a
  point, whose cell lies in both boxes' cell ranges, so walking the cells of the box just kept
  finds every box it can decay. A max-heap finds the next box; a decayed box gets a new entry
  and its stale one is skipped when popped.
- **pass** (`_soft_pass`): each pass over the remaining boxes decays them by the box just kept
  and finds the next one. O(kept * remaining), the least work when most pairs overlap.

Python picks per class (`_soft_nms_class`): the pass when the boxes sharing a cell with a box
number more than a quarter of the class on average (sliding windows: ~30% of same-class pairs
overlap on a COCO photo), the grid otherwise. Measured on the default dense-mode candidates of
30 coco-dev photos (~11k boxes each, up to ~2.6k in one class; shared 2-core CPU): median 24 ms
a photo, as long as `batched_nms`; the grid alone 105 ms, passes alone 31 ms median but 350 ms
at worst, and a vectorised NumPy loop 63 ms.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from numba import njit

from slidewin.core.nms import validate_boxes

__all__ = ["soft_nms"]

Method = Literal["gaussian", "linear"]


def soft_nms(
    xyxy: np.ndarray,
    scores: np.ndarray,
    class_ids: np.ndarray | None = None,
    sigma: float = 0.5,
    score_threshold: float = 0.001,
    method: Method = "gaussian",
    iou_threshold: float = 0.3,
) -> tuple[np.ndarray, np.ndarray]:
    """Class-aware soft-NMS (see the module docstring).

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
    return _soft_nms(xyxy, scores, class_ids, sigma, score_threshold, method, iou_threshold, "auto")


def _soft_nms(xyxy, scores, class_ids, sigma, score_threshold, method, iou_threshold,
              path: Literal["auto", "grid", "pass"]) -> tuple[np.ndarray, np.ndarray]:
    """`soft_nms` with the way chosen: per class (``auto``), or always the ``grid`` or the ``pass``."""
    coords, scores = validate_boxes(xyxy, scores, iou_threshold)
    n = coords.shape[0]
    class_ids = np.zeros(n, np.int64) if class_ids is None else np.asarray(class_ids)
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
    # Boxes of one class are consecutive, in index order: the kernels' tie-break is by position.
    order = np.lexsort((np.arange(n), groups.ravel())).astype(np.int64)
    sorted_groups = groups.ravel()[order]
    starts = np.flatnonzero(np.r_[True, sorted_groups[1:] != sorted_groups[:-1], True]).astype(np.int64)
    x1, y1, x2, y2 = (np.ascontiguousarray(coords[order, k]) for k in range(4))
    boxes = (x1, y1, x2, y2, (x2 - x1) * (y2 - y1))
    current = np.ascontiguousarray(scores[order], dtype=np.float64)
    keep = np.zeros(n, np.bool_)
    decay = (float(sigma), method == "linear", float(iou_threshold))
    for lo, hi in zip(starts[:-1].tolist(), starts[1:].tolist()):
        _soft_nms_class(lo, hi, boxes, current, keep, float(score_threshold), decay, path)
    idx, new_scores = order[keep], current[keep]
    final = np.lexsort((idx, -new_scores))
    return idx[final].astype(np.int64), new_scores[final]


def _soft_nms_class(lo: int, hi: int, boxes, current, keep, floor: float, decay, path: str) -> None:
    """Soft-NMS of the boxes ``[lo, hi)`` (one class), by the pass or the grid (see the module doc)."""
    if path == "pass":
        _soft_pass(lo, hi, boxes, current, keep, floor, decay)
        return
    nx, ny, origin, cell, n_pos = _class_grid(boxes, lo, hi)
    ranges, counts = _cell_ranges(boxes, lo, hi, nx, ny, origin, cell)
    if path == "auto" and n_pos > 0 and 4.0 * _cells_shown(ranges, counts, nx) > float(n_pos) * float(n_pos):
        _soft_pass(lo, hi, boxes, current, keep, floor, decay)
        return
    members = _cell_members(ranges, counts, nx, lo)
    _soft_grid(lo, hi, boxes, current, keep, floor, decay, ranges, counts, members, nx)


@njit(cache=True, error_model="numpy")
def _soft_weight(i, j, boxes, decay):
    """The factor box ``i`` (just kept) applies to box ``j``'s score; 1.0 when it does not."""
    x1, y1, x2, y2, area = boxes
    sigma, linear, iou_threshold = decay
    if area[i] <= 0.0 or area[j] <= 0.0:
        return 1.0
    # The same IoU expression as the greedy kernel's `_iou_above` (and the tests' reference).
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
def _soft_pass(lo, hi, boxes, current, keep, floor, decay):
    """Soft-NMS of one class by passes over the remaining boxes (see the module docstring)."""
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
            w = _soft_weight(i, j, boxes, decay)
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
def _class_grid(boxes, lo, hi):
    """A uniform grid over a class's positive-area boxes: cells of the mean box size, fewer (larger)
    when a few tiny boxes spread far. Returns (nx, ny, (x0, y0), (cell_w, cell_h), n_pos)."""
    x1, y1, x2, y2, area = boxes
    n_pos = 0
    sum_w = 0.0
    sum_h = 0.0
    gx0, gy0, gx1, gy1 = np.inf, np.inf, -np.inf, -np.inf
    for j in range(lo, hi):
        if area[j] > 0.0:
            n_pos += 1
            sum_w += x2[j] - x1[j]
            sum_h += y2[j] - y1[j]
            gx0, gy0 = min(gx0, x1[j]), min(gy0, y1[j])
            gx1, gy1 = max(gx1, x2[j]), max(gy1, y2[j])
    if n_pos == 0:
        return 1, 1, (gx0, gy0), (1.0, 1.0), 0
    limit = 4 * n_pos + 16
    nx = int(min((gx1 - gx0) / (sum_w / n_pos), float(limit))) + 1
    ny = int(min((gy1 - gy0) / (sum_h / n_pos), float(limit))) + 1
    while nx * ny > limit:
        if nx >= ny:
            nx = (nx + 1) // 2
        else:
            ny = (ny + 1) // 2
    return nx, ny, (gx0, gy0), ((gx1 - gx0) / nx, (gy1 - gy0) / ny), n_pos


@njit(cache=True, error_model="numpy")
def _cell_ranges(boxes, lo, hi, nx, ny, origin, cell):
    """Each box's cell range (cx0, cx1, cy0, cy1; empty for zero-area boxes), and how many boxes
    touch each cell, at ``counts[cell + 1]`` (ready for a prefix sum)."""
    x1, y1, x2, y2, area = boxes
    cx0 = np.zeros(hi - lo, np.int64)
    cx1 = np.full(hi - lo, -1, np.int64)
    cy0 = np.zeros(hi - lo, np.int64)
    cy1 = np.full(hi - lo, -1, np.int64)
    counts = np.zeros(nx * ny + 1, np.int64)
    for j in range(lo, hi):
        if area[j] > 0.0:
            k = j - lo
            cx0[k] = min(max(int(np.floor((x1[j] - origin[0]) / cell[0])), 0), nx - 1)
            cx1[k] = min(max(int(np.floor((x2[j] - origin[0]) / cell[0])), 0), nx - 1)
            cy0[k] = min(max(int(np.floor((y1[j] - origin[1]) / cell[1])), 0), ny - 1)
            cy1[k] = min(max(int(np.floor((y2[j] - origin[1]) / cell[1])), 0), ny - 1)
            for gy in range(cy0[k], cy1[k] + 1):
                for gx in range(cx0[k], cx1[k] + 1):
                    counts[gy * nx + gx + 1] += 1
    return (cx0, cx1, cy0, cy1), counts


@njit(cache=True, error_model="numpy")
def _cells_shown(ranges, counts, nx):
    """Boxes (with repeats) that every box's cells would show: how crowded the class is."""
    cx0, cx1, cy0, cy1 = ranges
    shown = 0.0
    for k in range(cx0.shape[0]):
        for gy in range(cy0[k], cy1[k] + 1):
            for gx in range(cx0[k], cx1[k] + 1):
                shown += counts[gy * nx + gx + 1]
    return shown


@njit(cache=True, error_model="numpy")
def _cell_members(ranges, counts, nx, lo):
    """Turn ``counts`` into cell starts (in place) and list each cell's boxes from there."""
    cx0, cx1, cy0, cy1 = ranges
    for g in range(counts.shape[0] - 1):
        counts[g + 1] += counts[g]
    fill = counts[:-1].copy()
    members = np.empty(counts[-1], np.int64)
    for k in range(cx0.shape[0]):
        for gy in range(cy0[k], cy1[k] + 1):
            for gx in range(cx0[k], cx1[k] + 1):
                g = gy * nx + gx
                members[fill[g]] = lo + k
                fill[g] += 1
    return members


@njit(cache=True, error_model="numpy")
def _soft_grid(lo, hi, boxes, current, keep, floor, decay, ranges, cell_start, members, nx):
    """Soft-NMS of one class with the grid and a max-heap (see the module docstring)."""
    cx0, cx1, cy0, cy1 = ranges
    done = np.zeros(hi - lo, np.bool_)  # kept or dropped
    stamp = np.full(hi - lo, -1, np.int64)  # the kept box that last looked at a box
    heap_s = np.empty(max(16, 2 * (hi - lo)), np.float64)
    heap_i = np.empty(max(16, 2 * (hi - lo)), np.int64)
    size = 0
    for j in range(lo, hi):
        if current[j] < floor:
            done[j - lo] = True
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
        if done[i - lo] or s != current[i]:
            continue  # stale entry
        done[i - lo] = True
        keep[i] = True
        k = i - lo
        for gy in range(cy0[k], cy1[k] + 1):
            for gx in range(cx0[k], cx1[k] + 1):
                g = gy * nx + gx
                for m in range(cell_start[g], cell_start[g + 1]):
                    j = members[m]
                    if done[j - lo] or stamp[j - lo] == i:
                        continue
                    stamp[j - lo] = i
                    w = _soft_weight(i, j, boxes, decay)
                    if w == 1.0:
                        continue
                    current[j] = current[j] * w
                    if current[j] < floor:
                        done[j - lo] = True
                    else:
                        heap_s, heap_i, size = _heap_push(heap_s, heap_i, size, current[j], j)


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
