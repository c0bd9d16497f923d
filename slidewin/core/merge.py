"""Merging overlapping window detections into one box per object.

Every strategy starts from class-aware greedy NMS (slidewin.core.nms) and may then refine:

- ``nms``: kept boxes as they are.
- ``vote``: box voting (Gidaris & Komodakis 2015): each kept box becomes the score-weighted mean
  of the same-class candidates overlapping it at IoU >= the NMS threshold. Windows are a coarse
  grid, so averaging the ones that agree moves the box towards the object.
- ``nested``: also drop a box when most of it (intersection over the smaller box > ``ios``) lies
  inside a stronger box of the same class: a window on a part of an object (a cat's face) and a
  window on the whole object overlap little by IoU but are the same detection.
- ``nested-vote``: both.

``soft-nms`` replaces the greedy NMS instead: Gaussian soft-NMS (Bodla et al. 2017, class-aware,
`slidewin.core.soft_nms`) keeps every candidate whose score, decayed by ``exp(-iou**2 / sigma)``
for each stronger same-class box overlapping it, stays at or above a floor; the IoU threshold
plays no part. Without an explicit floor it is the lowest candidate score, so a detector that
kept candidates scoring >= ``min_score`` never returns a box below it (``slidewin detect`` shows
boxes >= 0.5 and must not show duplicates decayed to 0.1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum

import numpy as np

from slidewin.core.boxes import box_ios, box_iou
from slidewin.core.detections import Detections
from slidewin.core.nms import batched_nms


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


@dataclass(frozen=True)
class MergeConfig:
    """The merge part of a classifier detector: how overlapping candidates become one box.

    Attributes:
        kind: the strategy (see the module docstring).
        iou: the NMS IoU threshold (``nms``, ``vote``, ``nested``; not ``soft-nms``).
        class_agnostic: boxes of any class suppress each other (False: class-aware).
        ios: intersection-over-smaller threshold of the ``nested`` merges.
        soft_sigma: the Gaussian's width of ``soft-nms``.
    """

    kind: Merge = Merge.NMS
    iou: float = 0.5
    class_agnostic: bool = False
    ios: float = 0.6
    soft_sigma: float = SOFT_SIGMA

    def __post_init__(self):
        object.__setattr__(self, "kind", Merge(self.kind))
        if not all(math.isfinite(v) for v in (self.iou, self.ios, self.soft_sigma)):
            raise ValueError("iou, ios and soft_sigma must be finite numbers")
        if not 0 < self.iou <= 1:
            raise ValueError(f"iou must lie in (0, 1], got {self.iou}")


def suppress_nested(dets: Detections, ios: float) -> np.ndarray:
    """Indices (by descending score) of boxes not lying mostly inside a stronger same-class box.

    A box is dropped when its intersection with a kept, higher-scoring box of the same class
    exceeds ``ios`` times the smaller of the two areas.
    """
    order = np.lexsort((np.arange(len(dets)), -dets.scores))
    if len(order) == 0:
        return order.astype(np.int64)
    boxes, ids = dets.xyxy[order], dets.class_ids[order]
    nested = (box_ios(boxes, boxes) > ios) & (ids[:, None] == ids[None, :])
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
    match = (box_iou(kept.xyxy, candidates.xyxy) >= iou) & (kept.class_ids[:, None] == candidates.class_ids[None, :])
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
    return _soft(candidates, sigma, min_score)[0]


def _soft(candidates: Detections, sigma: float, min_score: float | None) -> tuple[Detections, np.ndarray]:
    """`soft_merge` and the kept candidates' indices."""
    if len(candidates) == 0:
        return candidates, np.zeros(0, np.int64)
    from slidewin.core.soft_nms import soft_nms  # numba: loaded only when asked for

    floor = max(SOFT_FLOOR, float(candidates.scores.min())) if min_score is None else min_score
    idx, scores = soft_nms(candidates.xyxy, candidates.scores, candidates.class_ids, sigma=sigma,
                           score_threshold=floor)
    kept = candidates[idx]
    return Detections(kept.xyxy, scores.astype(np.float32), kept.class_ids, kept.labels), np.asarray(idx, np.int64)


def merge_detections(candidates: Detections, merge: Merge, iou: float, ios: float = 0.6, *,
                     sigma: float = SOFT_SIGMA, min_score: float | None = None,
                     class_agnostic: bool = False) -> Detections:
    """One box per object from window candidates (see the module docstring for the strategies).

    ``sigma`` and ``min_score`` apply to ``soft-nms`` only (see `soft_merge`). With
    ``class_agnostic`` boxes of any class suppress (and vote for) each other; the kept boxes keep
    their own classes.
    """
    merge = Merge(merge)
    if class_agnostic and len(candidates):
        # merge as one class, then give each kept box its class back: the merges return
        # subsets of the candidates (vote moves boxes, not classes), so the order tells which
        one = Detections(candidates.xyxy, candidates.scores, np.zeros(len(candidates), np.int64), ("any",))
        kept = _merge(one, merge, iou, ios, sigma, min_score, keep_index=True)
        return Detections(kept[0].xyxy, kept[0].scores, candidates.class_ids[kept[1]], candidates.labels)
    return _merge(candidates, merge, iou, ios, sigma, min_score)


def merge_with(candidates: Detections, config: MergeConfig, min_score: float | None = None) -> Detections:
    """`merge_detections` with the settings of a `MergeConfig` (``min_score``: soft-NMS's floor)."""
    return merge_detections(candidates, config.kind, config.iou, config.ios, sigma=config.soft_sigma,
                            min_score=min_score, class_agnostic=config.class_agnostic)


def _merge(candidates: Detections, merge: Merge, iou: float, ios: float, sigma: float, min_score: float | None,
           keep_index: bool = False):
    """The merge; with ``keep_index`` also the kept candidates' indices (int64)."""
    if merge is Merge.SOFT:
        out, idx = _soft(candidates, sigma, min_score)
        return (out, idx) if keep_index else out
    idx = batched_nms(candidates.xyxy, candidates.scores, candidates.class_ids, iou)
    if merge in (Merge.NESTED, Merge.NESTED_VOTE):
        idx = idx[suppress_nested(candidates[idx], ios)]
    kept = candidates[idx]
    if merge in (Merge.VOTE, Merge.NESTED_VOTE):
        kept = vote_boxes(kept, candidates, iou)
    return (kept, idx) if keep_index else kept

