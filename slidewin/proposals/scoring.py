"""Scoring proposals with the classifier: class probabilities for arbitrary boxes.

Two ways, same interface (``probabilities(image, boxes, stats) -> float32 (K, num_labels)``):

- `CropScorer` (R-CNN, Girshick et al. 2014): each box, grown by a context margin, is cut out,
  warped to the classifier's input size and classified in batches. One network pass per box.
- `PooledScorer` (SPP-net, He et al. 2014; Fast R-CNN): the dense rewrite's feature map is
  computed once per pyramid level; each box is mapped to the level where it is about the size
  the network was trained on, its feature cells are averaged (a summed-area table makes that
  O(channels) per box), and the classifier's own head (whatever layers it has after its global
  pool: `slidewin.runtime.dense.DenseHead`) turns the average into probabilities.
  The convolutions are shared by every box, so it costs about what dense mode costs.

Where a box is exactly a dense window (the trained size at a level, on the cell grid), the pooled
probabilities are the dense map's for that window (tests/proposals).

An ImageNet classifier says "dog" for a dog's head and for a dog with a lawn around it as readily
as for the dog, so the scores alone do not say which box fits. The pooled scorer can also score a
ring around each box (the box grown by ``ring``, less the box) from the same table, and
`contrast_scores` lowers a box whose ring shows the same class: a part of an object has the rest
of it around it, a box that fits has background (context-aware scoring as in ContextLocNet,
Kantorov et al. 2016, without training).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import cv2
import numpy as np

from slidewin.core.detector import RunStats, Stage


#: Pooled scoring's pyramid levels hold at most this many pixels (1920 x 1920), whatever the photo:
#: every level of a COCO photo fits (the largest is 3x its side, 640 px at most), and one
#: EfficientNet-Lite0 pass over it peaks at about 0.9 GB (2.1 GB at 3072 x 3072, the dense tile).
#: Boxes of larger levels are pooled at the nearest level that fits.
POOLED_MAX_PIXELS = 1920 * 1920


class ProposalScoring(StrEnum):
    """How proposals are scored (``--proposal-scoring``)."""

    CROPS = "crops"
    POOLED = "pooled"


def grow_boxes(xyxy: np.ndarray, context: float, image_hw: tuple[int, int]) -> np.ndarray:
    """Boxes grown by ``context`` times their width (height) on each side, clipped to the image."""
    b = np.asarray(xyxy, np.float32).reshape(-1, 4)
    if context == 0:
        return b.copy()
    pad = np.concatenate([b[:, 2:] - b[:, :2]] * 2, axis=1) * np.float32(context)
    out = b + pad * np.array([-1, -1, 1, 1], np.float32)
    h, w = image_hw
    np.clip(out[:, 0::2], 0, w, out=out[:, 0::2])
    np.clip(out[:, 1::2], 0, h, out=out[:, 1::2])
    return out


class CropScorer:
    """R-CNN scoring: crop (with context), warp to the input size, classify in batches.

    Args:
        classifier: the `Classifier`.
        context: each box grows by this fraction of its width and height on each side first.
        batch_size: crops per inference call.
    """

    needs_plan = False  # any boxes

    def __init__(self, classifier, context: float = 0.1, batch_size: int = 16):
        self.classifier, self.context, self.batch_size = classifier, context, batch_size

    def chunks(self, image: np.ndarray, boxes: np.ndarray, stats: RunStats):
        """The scorer interface of `slidewin.pipeline.scorers`: one chunk, ``(probs, boxes, None)``."""
        yield self.probabilities(image, boxes, stats), boxes, None

    def probabilities(self, image: np.ndarray, boxes: np.ndarray, stats: RunStats) -> np.ndarray:
        in_h, in_w = self.classifier.input_hw
        grown = grow_boxes(boxes, self.context, image.shape[:2])
        out = np.empty((len(boxes), len(self.classifier.labels)), np.float32)
        batch = np.empty((self.batch_size, in_h, in_w, 3), np.uint8)
        for start in range(0, len(boxes), self.batch_size):
            t0 = time.perf_counter()
            chunk = grown[start:start + self.batch_size]
            for i, (x1, y1, x2, y2) in enumerate(chunk):
                x1, y1 = int(math.floor(x1)), int(math.floor(y1))
                x2, y2 = max(int(math.ceil(x2)), x1 + 1), max(int(math.ceil(y2)), y1 + 1)
                crop = image[y1:y2, x1:x2]
                shrink = crop.shape[0] * crop.shape[1] > in_h * in_w
                batch[i] = cv2.resize(crop, (in_w, in_h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
            t1 = time.perf_counter()
            out[start:start + len(chunk)] = self.classifier.predict(batch[:len(chunk)])
            stats.add(Stage.PYRAMID, t1 - t0)
            stats.add(Stage.INFERENCE, time.perf_counter() - t1)
        return out


@dataclass(frozen=True)
class PooledLevel:
    """One level of the pooled scorer's pyramid: the image resized by ``scale`` (both axes)."""

    scale: float
    size_hw: tuple[int, int]


def pooled_levels(image_hw: tuple[int, int], input_hw: tuple[int, int], max_scale: float, factor: float,
                  max_pixels: int) -> list[PooledLevel]:
    """Scales ``max_scale, max_scale / factor, ...`` down to the one where the whole image is about
    one network input; levels over ``max_pixels`` pixels are left out (boxes go to the nearest
    level that remains). Level sizes are at least the input size."""
    h, w = image_hw
    smallest = min(input_hw[0] / h, input_hw[1] / w) if min(h, w) else 1.0
    levels, s = [], max_scale
    while True:
        size = (max(input_hw[0], round(h * s)), max(input_hw[1], round(w * s)))
        if size[0] * size[1] <= max_pixels:
            levels.append(PooledLevel(s, size))
        if s <= smallest:
            break
        s /= factor
    return levels


def assign_levels(boxes: np.ndarray, levels: list[PooledLevel], target: float) -> np.ndarray:
    """Index of the level at which each box's side (geometric mean) is closest to ``target`` pixels,
    on a log scale."""
    side = np.sqrt(np.maximum((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]), 1e-6))
    scales = np.array([lv.scale for lv in levels])
    return np.abs(np.log(side[:, None] * scales[None, :] / target)).argmin(axis=1)


def box_cells(boxes: np.ndarray, scale_xy: tuple[float, float], stride: int,
              grid_hw: tuple[int, int], pad_xy: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """The feature cells each box covers at a level: int64 (K, 4) ``c0, r0, c1, r1`` (end exclusive),
    at least one cell. Cell ``(r, c)`` covers level pixels ``[c * stride, (c + 1) * stride)``; a box
    covers the cells its level-pixel extent overlaps by at least half a cell, its far edge first
    moved out by ``pad_xy`` level pixels: what the network's cells reach past a window of its
    input size (0 when the input is a multiple of the stride; 28 for 260 px at stride 32, whose
    window spans 9 cells, 288 px), so that a box the size of a window covers the window's cells."""
    fx, fy = scale_xy
    lv = boxes * np.array([fx, fy, fx, fy], np.float64)
    lv[:, 2] += pad_xy[0]
    lv[:, 3] += pad_xy[1]
    lv /= stride
    c0 = np.floor(lv[:, 0] + 0.5)
    r0 = np.floor(lv[:, 1] + 0.5)
    c1 = np.maximum(np.floor(lv[:, 2] + 0.5), c0 + 1)
    r1 = np.maximum(np.floor(lv[:, 3] + 0.5), r0 + 1)
    rows, cols = grid_hw
    cells = np.stack([c0, r0, c1, r1], axis=1).astype(np.int64)
    cells[:, 0] = np.clip(cells[:, 0], 0, cols - 1)
    cells[:, 1] = np.clip(cells[:, 1], 0, rows - 1)
    cells[:, 2] = np.clip(cells[:, 2], cells[:, 0] + 1, cols)
    cells[:, 3] = np.clip(cells[:, 3], cells[:, 1] + 1, rows)
    return cells


def feature_rows(level_side: int, input_side: int, stride: int, pool: int) -> tuple[int, int]:
    """The least and most feature cells a dense form with this stride gives along a level side:
    the windows of the input size it holds, ``(level - input) // stride + 1``, each ``pool`` cells,
    at least (one fewer for rounding), and ``ceil(level / stride) + 1`` at most. Windows mode asks
    the same of each aligned level exactly (`slidewin.pipeline.scorers.DenseScorer`)."""
    return max(level_side - input_side, 0) // stride + pool - 1, -(-level_side // stride) + 1


def check_feature_grid(grid_hw: tuple[int, int], level_hw: tuple[int, int], dense) -> None:
    """Refuse, in one line naming the model, a feature map whose size does not fit the stride the
    dense form states (its metadata lies, or is another model's): the boxes would be pooled from
    the wrong cells, and a stride stated too small makes every level cost far more.

    Raises:
        SlidewinError: the map's size is outside `feature_rows` on either axis.
    """
    from slidewin.errors import SlidewinError

    (rows, cols), (h, w) = grid_hw, level_hw
    (in_h, in_w), (ph, pw), s = dense.classifier.input_hw, dense.pool_hw, dense.stride
    (r0, r1), (c0, c1) = feature_rows(h, in_h, s, ph), feature_rows(w, in_w, s, pw)
    if not (r0 <= rows <= r1 and c0 <= cols <= c1):
        form = f"dense form {Path(dense.path).name}; delete it to rebuild it" if dense.path else "dense form built in memory"
        raise SlidewinError(
            f"dense model gave a {rows}x{cols} feature map for a {h}x{w} image, where its stated stride of "
            f"{s} px gives about {-(-h // s)}x{-(-w // s)} cells: its metadata does not fit its graph "
            f"({form}, or use --proposal-scoring crops)",
            dense.classifier.path)


def summed_area(features: np.ndarray) -> np.ndarray:
    """Summed-area table of a (C, rows, cols) map: float64 (C, rows + 1, cols + 1), so that box sums
    keep full precision."""
    c, rows, cols = features.shape
    sat = np.zeros((c, rows + 1, cols + 1), np.float64)
    np.cumsum(np.cumsum(features, axis=1, dtype=np.float64), axis=2, out=sat[:, 1:, 1:])
    return sat


def cell_sums(sat: np.ndarray, cells: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Feature sums over each box's cells, float64 (K, C), and the number of cells, int64 (K,):
    four lookups per channel, whatever the box's size."""
    c0, r0, c1, r1 = cells.T
    total = sat[:, r1, c1] - sat[:, r0, c1] - sat[:, r1, c0] + sat[:, r0, c0]
    return total.T, (r1 - r0) * (c1 - c0)


def pool_cells(features: np.ndarray, cells: np.ndarray) -> np.ndarray:
    """Mean feature vector over each box's cells: (C, rows, cols) x (K, 4) -> float64 (K, C)."""
    total, n = cell_sums(summed_area(features), cells)
    return total / n[:, None]


def contrast_scores(box: np.ndarray, ring: np.ndarray, power: float) -> np.ndarray:
    """Box scores lowered where the ring around the box scores the same target:
    ``box * (1 - ring) ** power`` (``power`` 0: the box scores unchanged)."""
    return box * np.power(np.clip(1.0 - ring, 0.0, 1.0), power, dtype=np.float32)


class PooledScorer:
    """SPP-net scoring on the dense rewrite's shared feature maps (see the module docstring).

    Args:
        dense: the classifier's `DenseClassifier`.
        context: boxes grow by this fraction of their size on each side before pooling.
        max_scale: the largest level's scale (image pixels -> level pixels); small boxes are
            pooled there, from fewer cells.
        factor: scale between consecutive levels.
        fit: a box is pooled at the level where its side is closest to this fraction of the
            network's input side (1: the trained receptive field; below 1 leaves the network
            some of the surroundings it saw in training).
        ring: `probabilities_and_ring` also pools the ring between each box and the box grown by
            this fraction of its size on each side.
        contrast: with a ring, `chunks` yields the ring's probabilities too, and a detector
            lowers each box's target scores by ``(1 - ring score) ** contrast`` (`contrasted`);
            0: no ring is pooled.
    """

    needs_plan = False  # any boxes

    def __init__(self, dense, context: float = 0.0, max_scale: float = 3.0, factor: float = 1.5,
                 fit: float = 1.0, ring: float = 0.0, contrast: float = 0.0):
        self.dense, self.context, self.max_scale, self.factor = dense, context, max_scale, factor
        self.fit, self.ring, self.contrast = fit, ring, contrast
        self.classifier = dense.classifier
        self.target = fit * float(math.sqrt(dense.classifier.input_hw[0] * dense.classifier.input_hw[1]))
        # The stated stride checked once, on a blank image of twice the input size (one small pass),
        # before any work: a stride off by a factor of 2 either way gives a map outside the range.
        h, w = dense.classifier.input_hw
        check_feature_grid(dense.feature_map(np.zeros((2 * h, 2 * w, 3), np.uint8)).shape[1:], (2 * h, 2 * w), dense)

    def levels(self, image_hw: tuple[int, int]) -> list[PooledLevel]:
        """The pyramid, each level within `POOLED_MAX_PIXELS` (and the dense tile), but at least
        the smallest level (the image about one network input)."""
        tile = self.dense.max_tile ** 2 if self.dense.max_tile else POOLED_MAX_PIXELS
        input_hw = self.dense.classifier.input_hw
        levels = pooled_levels(image_hw, input_hw, self.max_scale, self.factor, min(tile, POOLED_MAX_PIXELS))
        return levels or pooled_levels(image_hw, input_hw, self.max_scale, self.factor, 1 << 62)[-1:]

    @property
    def uses_ring(self) -> bool:
        return self.ring > 0 and self.contrast > 0

    def chunks(self, image: np.ndarray, boxes: np.ndarray, stats: RunStats):
        """The scorer interface of `slidewin.pipeline.scorers`: one chunk, ``(probs, boxes, ring
        probs or None)``."""
        probs, ring = self._pooled(image, boxes, stats, with_ring=self.uses_ring)
        yield probs, boxes, ring

    def contrasted(self, scores: np.ndarray, ring_scores: np.ndarray) -> np.ndarray:
        """Target scores of the boxes lowered by those of their rings (`contrast_scores`)."""
        return contrast_scores(scores, ring_scores, self.contrast)

    def probabilities(self, image: np.ndarray, boxes: np.ndarray, stats: RunStats) -> np.ndarray:
        """Class probabilities of each box: float32 (K, num_labels)."""
        return self._pooled(image, boxes, stats, with_ring=False)[0]

    def probabilities_and_ring(self, image: np.ndarray, boxes: np.ndarray,
                               stats: RunStats) -> tuple[np.ndarray, np.ndarray]:
        """Class probabilities of each box and of the ring around it (all zero where the box
        fills the image and has no ring), both float32 (K, num_labels), from one pass per level."""
        return self._pooled(image, boxes, stats, with_ring=True)

    def _pooled(self, image: np.ndarray, boxes: np.ndarray, stats: RunStats, with_ring: bool):
        from slidewin.pipeline.windows import resize_to

        grown = grow_boxes(boxes, self.context, image.shape[:2])
        outer = grow_boxes(grown, self.ring, image.shape[:2]) if with_ring else None
        levels = self.levels(image.shape[:2])
        which = assign_levels(grown, levels, self.target)
        head, stride = self.dense.head(), self.dense.stride
        (in_h, in_w), (ph, pw) = self.dense.classifier.input_hw, self.dense.pool_hw
        pad = (pw * stride - in_w, ph * stride - in_h)
        pooled = np.zeros((len(boxes), head.channels), np.float64)
        ring = np.zeros_like(pooled) if with_ring else None
        has_ring = np.zeros(len(boxes), bool)
        stats.levels = 0
        # A photo larger than every level is shrunk once to the largest level that has boxes, and the
        # smaller levels are made from that copy: each resize from a 12000x9000 photo reads 324 MB.
        used = [lv for k, lv in enumerate(levels) if (which == k).any()]
        source = image
        if used and image.shape[0] * image.shape[1] > POOLED_MAX_PIXELS:
            top = max(used, key=lambda lv: lv.size_hw[0] * lv.size_hw[1])
            if top.size_hw[0] * top.size_hw[1] < image.shape[0] * image.shape[1]:
                t0 = time.perf_counter()
                source = resize_to(image, top.size_hw)
                stats.add(Stage.PYRAMID, time.perf_counter() - t0)
        for k, level in enumerate(levels):
            mine = np.flatnonzero(which == k)
            if not len(mine):
                continue
            t0 = time.perf_counter()
            resized = resize_to(source, level.size_hw)
            t1 = time.perf_counter()
            features = self.dense.feature_map(resized)
            check_feature_grid(features.shape[1:], level.size_hw, self.dense)
            t2 = time.perf_counter()
            scale_xy = (level.size_hw[1] / image.shape[1], level.size_hw[0] / image.shape[0])
            sat = summed_area(features)
            inner, n_inner = cell_sums(sat, box_cells(grown[mine], scale_xy, stride, features.shape[1:], pad))
            pooled[mine] = inner / n_inner[:, None]
            if with_ring:
                around, n_around = cell_sums(sat, box_cells(outer[mine], scale_xy, stride, features.shape[1:], pad))
                n_ring = n_around - n_inner
                ok = n_ring > 0
                ring[mine[ok]] = (around[ok] - inner[ok]) / n_ring[ok, None]
                has_ring[mine[ok]] = True
            stats.levels += 1
            stats.add(Stage.PYRAMID, t1 - t0)
            stats.add(Stage.INFERENCE, t2 - t1)
            stats.add(Stage.SCORING, time.perf_counter() - t2)
        t0 = time.perf_counter()
        probs = head(pooled)
        ring_probs = None
        if with_ring:
            ring_probs = head(ring)
            ring_probs[~has_ring] = 0.0
        stats.add(Stage.SCORING, time.perf_counter() - t0)
        return probs, ring_probs
