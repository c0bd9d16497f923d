"""Merging overlapping window detections into one box per object.

Every strategy starts from class-aware greedy NMS (slidewin.nms) and may then refine:

- ``nms``: kept boxes as they are.
- ``vote``: box voting (Gidaris & Komodakis 2015): each kept box becomes the score-weighted mean
  of the same-class candidates overlapping it at IoU >= the NMS threshold. Windows are a coarse
  grid, so averaging the ones that agree moves the box towards the object.
- ``nested``: also drop a box when most of it (intersection over the smaller box > ``ios``) lies
  inside a stronger box of the same class: a window on a part of an object (a cat's face) and a
  window on the whole object overlap little by IoU but are the same detection.
- ``nested-vote``: both.

``soft-nms`` replaces the greedy NMS instead: Gaussian soft-NMS (Bodla et al. 2017, class-aware,
`slidewin.nms.soft_nms`) keeps every candidate whose score, decayed by ``exp(-iou**2 / sigma)``
for each stronger same-class box overlapping it, stays at or above a floor; the IoU threshold
plays no part. Without an explicit floor it is the lowest candidate score, so a detector that
kept candidates scoring >= ``min_score`` never returns a box below it (``slidewin detect`` shows
boxes >= 0.5 and must not show duplicates decayed to 0.1).
"""

from __future__ import annotations

from enum import Enum

import numpy as np

from slidewin.detections import Detections
from slidewin.nms import batched_nms, soft_nms


class Merge(str, Enum):
    NMS = "nms"
    VOTE = "vote"
    NESTED = "nested"
    NESTED_VOTE = "nested-vote"
    SOFT = "soft-nms"


#: Gaussian soft-NMS width, Bodla et al.'s default (benchmarks/results/ablation-softnms.json).
SOFT_SIGMA = 0.5
#: Soft-NMS never keeps a box decayed below this, whatever the candidates (Bodla et al.'s 0.001).
SOFT_FLOOR = 0.001


def _pairwise(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Intersection (N, M) and areas of xyxy boxes a (N, 4), b (M, 4), in float64."""
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    return inter, np.prod(a[:, 2:] - a[:, :2], axis=1), np.prod(b[:, 2:] - b[:, :2], axis=1)


def suppress_nested(dets: Detections, ios: float) -> np.ndarray:
    """Indices (by descending score) of boxes not lying mostly inside a stronger same-class box.

    A box is dropped when its intersection with a kept, higher-scoring box of the same class
    exceeds ``ios`` times the smaller of the two areas.
    """
    order = np.lexsort((np.arange(len(dets)), -dets.scores))
    if len(order) == 0:
        return order.astype(np.int64)
    inter, area, _ = _pairwise(dets.xyxy[order], dets.xyxy[order])
    smaller = np.minimum(area[:, None], area[None, :])
    nested = (inter > ios * np.maximum(smaller, 1e-12)) & (dets.class_ids[order][:, None] == dets.class_ids[order][None, :])
    keep = np.ones(len(order), bool)
    for i in range(len(order)):
        if keep[i]:
            later = nested[i, i + 1:]
            keep[i + 1:] &= ~later
    return order[keep].astype(np.int64)


def vote_boxes(kept: Detections, candidates: Detections, iou: float) -> Detections:
    """Replace each kept box by the score-weighted mean of same-class candidates at IoU >= iou."""
    if len(kept) == 0:
        return kept
    inter, area_k, area_c = _pairwise(kept.xyxy, candidates.xyxy)
    union = area_k[:, None] + area_c[None, :] - inter
    match = (inter >= iou * np.maximum(union, 1e-12)) & (kept.class_ids[:, None] == candidates.class_ids[None, :])
    w = match * candidates.scores[None, :].astype(np.float64)
    total = w.sum(axis=1, keepdims=True)
    voted = np.where(total > 0, (w @ candidates.xyxy.astype(np.float64)) / np.maximum(total, 1e-12), kept.xyxy)
    return Detections(voted.astype(np.float32), kept.scores, kept.class_ids, kept.labels)


def soft_merge(candidates: Detections, sigma: float = SOFT_SIGMA, min_score: float | None = None) -> Detections:
    """Class-aware Gaussian soft-NMS: the surviving candidates with their decayed scores.

    Args:
        candidates: window candidates, any order.
        sigma: the Gaussian's width (> 0); smaller decays harder (-> 0: hard NMS at IoU 0).
        min_score: drop boxes decayed below this; None: the lowest candidate score (at least
            `SOFT_FLOOR`), so nothing decays below the threshold the candidates passed.

    Returns:
        The kept boxes by descending decayed score, ``scores`` decayed (float32).
    """
    if len(candidates) == 0:
        return candidates
    floor = max(SOFT_FLOOR, float(candidates.scores.min())) if min_score is None else min_score
    idx, scores = soft_nms(candidates.xyxy, candidates.scores, candidates.class_ids, sigma=sigma,
                           score_threshold=floor)
    kept = candidates[idx]
    return Detections(kept.xyxy, scores.astype(np.float32), kept.class_ids, kept.labels)


def merge_detections(candidates: Detections, merge: Merge, iou: float, ios: float = 0.6, *,
                     sigma: float = SOFT_SIGMA, min_score: float | None = None) -> Detections:
    """One box per object from window candidates (see the module docstring for the strategies).

    ``sigma`` and ``min_score`` apply to ``soft-nms`` only (see `soft_merge`).
    """
    merge = Merge(merge)
    if merge is Merge.SOFT:
        return soft_merge(candidates, sigma, min_score)
    kept = candidates[batched_nms(candidates.xyxy, candidates.scores, candidates.class_ids, iou)]
    if merge in (Merge.NESTED, Merge.NESTED_VOTE):
        kept = kept[suppress_nested(kept, ios)]
    if merge in (Merge.VOTE, Merge.NESTED_VOTE):
        kept = vote_boxes(kept, candidates, iou)
    return kept
