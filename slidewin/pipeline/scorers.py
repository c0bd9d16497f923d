"""Scorers, the second part of a `ClassifierDetector`: class probabilities for the regions.

Every scorer has ``classifier``, ``needs_plan`` and ``chunks(image, regions, stats)``, which yields
``(probabilities (B, num_labels) float32, boxes (B, 4) float32 in image pixels, ring or None)``:

- plan scorers (``needs_plan``: they score the windows of a `WindowGrid` plan, given as levels):
  `PatchScorer` crops every window and classifies the crops in fixed-size batches; `DenseScorer`
  runs the classifier's fully-convolutional rewrite once per level (the same windows, the step
  being the network stride).
- box scorers (any boxes): `CropScorer` (R-CNN) and `PooledScorer` (SPP-net on the dense
  features), from `slidewin.proposals.scoring`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np

from slidewin.core.detector import RunStats, Stage
from slidewin.core.geometry import Level
from slidewin.errors import SlidewinError
from slidewin.pipeline.config import Mode
from slidewin.pipeline.windows import iter_window_batches, level_boxes, resize_level
from slidewin.proposals.scoring import CropScorer, PooledScorer

__all__ = ["CropScorer", "DenseScorer", "PatchScorer", "PooledScorer"]


class PatchScorer:
    """Every window of a plan cropped, resized and classified, ``batch_size`` crops a call.

    Args:
        classifier: the `Classifier`.
        batch_size: crops per inference call (batches span levels, so they stay full).
    """

    needs_plan = True
    mode = Mode.PATCH

    def __init__(self, classifier, batch_size: int = 16):
        self.classifier, self.batch_size = classifier, batch_size

    def scored_per_level(self, level: Level) -> int:
        """How many windows' probabilities are held at once while a level is scored."""
        return min(level.num_windows, self.batch_size)

    def chunks(self, image: np.ndarray, levels: list[Level], stats: RunStats) -> Iterator[tuple]:
        """One chunk per batch; its arrays are reused for the next batch (copy what must stay)."""
        for crops, boxes in iter_window_batches(image, levels, self.classifier.input_hw, self.batch_size, stats):
            t0 = time.perf_counter()
            probs = self.classifier.predict(crops)
            stats.add(Stage.INFERENCE, time.perf_counter() - t0)
            yield probs, boxes, None


class DenseScorer:
    """The windows of a plan scored by one fully-convolutional pass per level.

    Args:
        dense: the classifier's `DenseClassifier`; the plan must step by its ``stride``.
    """

    needs_plan = True
    mode = Mode.DENSE

    def __init__(self, dense):
        self.dense = dense
        self.classifier = dense.classifier

    def scored_per_level(self, level: Level) -> int:
        return level.num_windows

    def chunks(self, image: np.ndarray, levels: list[Level], stats: RunStats) -> Iterator[tuple]:
        """One chunk per level."""
        for level in levels:
            t0 = time.perf_counter()
            resized = resize_level(image, level)
            boxes = level_boxes(level, self.classifier.input_hw, image.shape[:2])
            t1 = time.perf_counter()
            pmap = self.dense.predict_map(resized)
            stats.add(Stage.PYRAMID, t1 - t0)
            stats.add(Stage.INFERENCE, time.perf_counter() - t1)
            if pmap.shape[:2] != (len(level.ys), len(level.xs)):
                raise SlidewinError(
                    f"dense model gave a {pmap.shape[0]}x{pmap.shape[1]} map for a level with "
                    f"{len(level.ys)}x{len(level.xs)} windows", self.classifier.path)
            yield pmap.reshape(-1, pmap.shape[2]), boxes, None
