"""Recall of candidate boxes before any classifier: the ceiling on what a detector can find.

For whatever produced the candidates (windows or proposals), per ground-truth box: the best IoU
with any candidate, over all candidates and over the first N in the generator's rank order.
From those:

- ``recall50`` / ``recall75``: the share of ground-truth boxes with a candidate at IoU >= 0.5 /
  0.75 (no classifier can score a box that was never proposed);
- ``AR100`` / ``AR1000``: average recall over IoU 0.5:0.05:0.95 with the first 100 / 1,000
  candidates (Hosang et al. 2016, the proposal literature's and COCO's AR).

Windows have no ranking of their own: their first N are N windows spread evenly over the plan
(`first_n`), so AR@N of windows is that of a uniform subsample.
"""

from __future__ import annotations

import numpy as np

from slidewin.core.boxes import box_iou

#: IoU thresholds of average recall, as COCO's: 0.50, 0.55, ..., 0.95.
AR_THRESHOLDS = np.round(np.arange(0.5, 0.951, 0.05), 2)
#: Candidate counts of the recall-against-candidates curve (and of AR@N).
CURVE_COUNTS = (10, 20, 50, 100, 200, 500, 1000, 2000, 5000)


def first_n(regions: np.ndarray, n: int, ranked: bool) -> np.ndarray:
    """The first ``n`` candidates: in order when ``ranked``, else ``n`` spread evenly over them."""
    if len(regions) <= n:
        return regions
    if ranked:
        return regions[:n]
    return regions[np.linspace(0, len(regions) - 1, n).round().astype(np.int64)]


def best_ious(gt_xyxy: np.ndarray, regions: np.ndarray, counts=CURVE_COUNTS, ranked: bool = True) -> np.ndarray:
    """Best IoU of each ground-truth box with the first N candidates, for each N in ``counts`` and
    for all of them (last column): float64 (num_gt, len(counts) + 1); 0 without candidates."""
    gt = np.asarray(gt_xyxy, np.float64).reshape(-1, 4)
    out = np.zeros((len(gt), len(counts) + 1))
    if len(gt) == 0 or len(regions) == 0:
        return out
    for j, n in enumerate([*counts, len(regions)]):
        out[:, j] = box_iou(gt, first_n(regions, n, ranked)).max(axis=1)
    return out


def recall_at(best: np.ndarray, threshold: float) -> float:
    """Share of ground-truth boxes whose best IoU is at least ``threshold`` (0 with no boxes)."""
    best = np.asarray(best, np.float64)
    return float((best >= threshold).mean()) if best.size else 0.0


def average_recall(best: np.ndarray) -> float:
    """Recall averaged over `AR_THRESHOLDS`."""
    return float(np.mean([recall_at(best, t) for t in AR_THRESHOLDS]))


def recall_summary(best: np.ndarray, counts=CURVE_COUNTS) -> dict:
    """``recall50``, ``recall75`` (all candidates), ``AR100``, ``AR1000`` and the recall@0.5 curve
    against the number of candidates, from `best_ious` rows of every image stacked."""
    best = np.asarray(best, np.float64).reshape(-1, len(counts) + 1)
    col = {n: j for j, n in enumerate(counts)}
    return {
        "recall50": recall_at(best[:, -1], 0.5),
        "recall75": recall_at(best[:, -1], 0.75),
        "AR100": average_recall(best[:, col[100]]),
        "AR1000": average_recall(best[:, col[1000]]),
        "recall50_curve": {str(n): recall_at(best[:, j], 0.5) for n, j in col.items()},
        "ground_truth_boxes": int(len(best)),
    }
