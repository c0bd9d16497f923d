"""The compiled greedy-NMS kernel (numba), for large inputs: see `slidewin.core.nms`.

Kept boxes are filed by size band and by the grid cell of their centre, and a box is compared
only with kept boxes whose size and centre could give IoU above the threshold. Importing this
module loads numba and the kernels' cached machine code (~0.5 s on the 2-core CPU the first time
in a process), which is why small inputs take `slidewin.core.nms`'s NumPy path instead.
"""

from __future__ import annotations

import numpy as np
from numba import njit


def greedy_keep(x1, y1, x2, y2, groups, threshold: float, slack: float) -> np.ndarray:
    """Keep mask for boxes sorted by rank (see `_greedy_nms_kernel`)."""
    return _greedy_nms_kernel(x1, y1, x2, y2, groups, _size_bands(x1, y1, x2, y2, groups), threshold, slack)


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
    per band in a linked list; `_band_suppresses` says where in them a suppressor could be.
    """
    n = x1.shape[0]
    n_bands = band.max() + 1
    width, height = x2 - x1, y2 - y1
    boxes = (x1, y1, x2, y2, width * height, 0.5 * (x1 + x2), 0.5 * (y1 + y2))
    w_lo, w_hi, h_lo, h_hi, band_first, band_last = _band_ranges(band, groups, width, height)
    # Cells twice the centre offset that still allows IoU > threshold: a lookup spans ~2x2
    # cells (tried 1x and 0.5x: slower at every threshold on the layouts in the module doc).
    cell_w = np.maximum(2.0 * (1.0 - threshold) * w_hi, 1e-6 * w_hi)
    cell_h = np.maximum(2.0 * (1.0 - threshold) * h_hi, 1e-6 * h_hi)
    bands = (w_lo, w_hi, h_lo, h_hi, cell_w, cell_h)
    origin = (boxes[5].min(), boxes[6].min())
    table_size = 1
    while table_size < 2 * n:
        table_size *= 2
    # bucket_head, bucket_next, band_head, band_next, band_count
    filed = (np.full(table_size, -1, np.int64), np.empty(n, np.int64), np.full(n_bands, -1, np.int64),
             np.empty(n, np.int64), np.zeros(n_bands, np.int64))
    keep = np.ones(n, np.bool_)
    for j in range(n):
        if boxes[4][j] <= 0.0:
            continue  # zero area: IoU 0 with everything, kept and never a suppressor
        for b in range(band_first[band[j]], band_last[band[j]] + 1):
            if _band_suppresses(j, b, boxes, groups, bands, filed, origin, threshold, slack):
                keep[j] = False
                break
        if keep[j]:
            _file_kept(j, band[j], boxes, bands, filed, origin)
    return keep


@njit(cache=True, error_model="numpy")
def _band_suppresses(j, b, boxes, groups, bands, filed, origin, threshold, slack):
    """Whether a kept box of band ``b`` suppresses box ``j``.

    Two facts bound where a suppressor of ``j`` can be, for ``t = threshold``: IoU <= (narrower
    width) / (wider width), so the band's width range must reach past ``t * width[j]``; and
    IoU <= (intersection width) / (wider width) <= 1 - |centre offset in x| / (wider width), so
    its centre lies within ``(1 - t) * max(width)`` of j's in x. The same holds for heights in
    y. ``t_low`` and ``slack`` widen these bounds far beyond rounding error, so a box is skipped
    only when it cannot suppress ``j``; the result is the plain greedy loop's.
    """
    x1, y1, x2, y2, area, cx, cy = boxes
    w_lo, w_hi, h_lo, h_hi, cell_w, cell_h = bands
    bucket_head, bucket_next, band_head, band_next, band_count = filed
    t_low = threshold * (1.0 - 1e-9)
    w, h = x2[j] - x1[j], y2[j] - y1[j]
    if (band_count[b] == 0 or w_hi[b] < t_low * w or w_lo[b] * t_low > w
            or h_hi[b] < t_low * h or h_lo[b] * t_low > h):
        return False
    reach_x = (1.0 - t_low) * max(w, w_hi[b]) + slack
    reach_y = (1.0 - t_low) * max(h, h_hi[b]) + slack
    gx0 = _cell_index(cx[j] - reach_x, origin[0], cell_w[b])
    gx1 = _cell_index(cx[j] + reach_x, origin[0], cell_w[b])
    gy0 = _cell_index(cy[j] - reach_y, origin[1], cell_h[b])
    gy1 = _cell_index(cy[j] + reach_y, origin[1], cell_h[b])
    if float(gx1 - gx0 + 1) * float(gy1 - gy0 + 1) > band_count[b]:
        # More cells to look in than kept boxes in the band: walk the band instead.
        return _chain_suppresses(band_head[b], band_next, j, groups, x1, y1, x2, y2, area, threshold)
    mask = bucket_head.shape[0] - 1
    for gy in range(gy0, gy1 + 1):
        for gx in range(gx0, gx1 + 1):
            if _chain_suppresses(bucket_head[_bucket(b, gx, gy, mask)], bucket_next,
                                 j, groups, x1, y1, x2, y2, area, threshold):
                return True
    return False


@njit(cache=True, error_model="numpy")
def _file_kept(j, b, boxes, bands, filed, origin):
    """File kept box ``j`` under its band's list and under (band, cell of its centre)."""
    bucket_head, bucket_next, band_head, band_next, band_count = filed
    band_next[j] = band_head[b]
    band_head[b] = j
    band_count[b] += 1
    gx = _cell_index(boxes[5][j], origin[0], bands[4][b])
    gy = _cell_index(boxes[6][j], origin[1], bands[5][b])
    h = _bucket(b, gx, gy, bucket_head.shape[0] - 1)
    bucket_next[j] = bucket_head[h]
    bucket_head[h] = j
