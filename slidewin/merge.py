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
"""

from __future__ import annotations

from enum import Enum

import numpy as np

from slidewin.detections import Detections
from slidewin.nms import batched_nms


class Merge(str, Enum):
    NMS = "nms"
    VOTE = "vote"
    NESTED = "nested"
    NESTED_VOTE = "nested-vote"


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


def merge_detections(candidates: Detections, merge: Merge, iou: float, ios: float = 0.6) -> Detections:
    """One box per object from window candidates (see the module docstring for the strategies)."""
    merge = Merge(merge)
    kept = candidates[batched_nms(candidates.xyxy, candidates.scores, candidates.class_ids, iou)]
    if merge in (Merge.NESTED, Merge.NESTED_VOTE):
        kept = kept[suppress_nested(kept, ios)]
    if merge in (Merge.VOTE, Merge.NESTED_VOTE):
        kept = vote_boxes(kept, candidates, iou)
    return kept
