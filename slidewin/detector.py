"""`SlidingWindowDetector`: a classifier slid over an image pyramid, returning `Detections`.

Data flow (patch mode): plan levels -> resize the image once per level -> cut windows as slices
into fixed-size batches (spanning levels, so batches stay full) -> classifier -> target scores
-> candidates above ``min_score`` mapped to original pixels -> class-aware NMS.
Memory is one resized level plus one batch, whatever the number of windows.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import Enum

import cv2
import numpy as np

from slidewin.classifier import Classifier
from slidewin.detections import Detections
from slidewin.errors import SlidewinError
from slidewin.geometry import Level, level_window_boxes, plan_levels, scale_windows, to_image_coords
from slidewin.merge import Merge, merge_detections
from slidewin.targets import Targets


class Mode(str, Enum):
    PATCH = "patch"
    DENSE = "dense"


class Scoring(str, Enum):
    """How window probabilities become target scores (see `Targets`)."""

    GROUP_SUM = "group-sum"  # every target scores the sum of its members' probabilities
    TOP1 = "top1"            # the tutorial's: only the top-1 label scores, for its own target


#: Window sizes (height, width) chosen on coco-dev with EfficientNet-Lite0 (README, ablation):
#: the tutorial's 200x150 landscape ROI, its portrait twin, and a 100x75 window (classified 2x
#: upsampled) for the many small objects of everyday photos.
DEFAULT_WINDOWS = ((150, 200), (200, 150), (75, 100))
#: Window sizes are pixels of an image up to this long side; larger images get them scaled up.
REFERENCE_SIDE = 1024


@dataclass(frozen=True)
class DetectorConfig:
    """Sliding-window parameters.

    Attributes:
        windows_hw: window sizes (height, width) in original-image pixels at the first level
            (default `DEFAULT_WINDOWS`; None: one window of the classifier's input size).
        step: distance between windows in classifier-input pixels (32 = ResNet50's stride),
            or (step_y, step_x).
        scale: pyramid factor between levels.
        max_levels: at most this many pyramid levels per window size.
        min_score: keep (window, target) pairs scoring at least this.
        iou: class-aware NMS IoU threshold.
        batch_size: windows per inference call (patch mode).
        mode: ``patch`` crops every window and classifies the crops in batches; ``dense`` runs
            the classifier's fully-convolutional form once per level (step = network stride).
        align: round level sizes so windows tile them exactly (see `plan_levels`); dense mode
            needs it, and with it both modes evaluate the same windows.
        scoring: group sums (slidewin) or the tutorial's top-1 label.
        merge: how overlapping windows become one box (see `slidewin.merge`).
        ios: intersection-over-smaller threshold of the ``nested`` merges.
        reference_side: window sizes are pixels of an image whose longer side is at most this;
            on a larger image they are scaled by ``long_side / reference_side``, so a 12 MP photo
            is searched at the same relative scales, in about the same number of windows, as a
            1024 px one (absolute windows tuned on 640 px photos would make its first level
            ~60 MP and its smallest window a sliver). None: absolute pixels at any size.
    """

    windows_hw: tuple[tuple[int, int], ...] | None = DEFAULT_WINDOWS
    step: float | tuple[float, float] = 32.0
    scale: float = 1.5
    max_levels: int | None = None
    min_score: float = 0.5
    iou: float = 0.5
    batch_size: int = 16
    mode: Mode = Mode.PATCH
    align: bool = True
    scoring: Scoring = Scoring.GROUP_SUM
    merge: Merge = Merge.NMS
    ios: float = 0.6
    reference_side: int | None = REFERENCE_SIDE

    def __post_init__(self):
        object.__setattr__(self, "merge", Merge(self.merge))
        object.__setattr__(self, "mode", Mode(self.mode))
        object.__setattr__(self, "scoring", Scoring(self.scoring))
        if self.mode is Mode.DENSE and not self.align:
            raise ValueError("dense mode needs aligned levels (align=True)")
        if self.windows_hw is not None and not self.windows_hw or any(h < 8 or w < 8 for h, w in self.windows_hw or ()):
            raise ValueError(f"window sizes must be at least 8x8, got {self.windows_hw}")
        steps = self.step if isinstance(self.step, tuple) else (self.step,)
        if not all(st > 0 for st in steps) or not self.scale > 1 or self.batch_size < 1:
            raise ValueError("step must be > 0, scale > 1 and batch_size >= 1")
        if not 0 <= self.min_score <= 1 or not 0 < self.iou <= 1:
            raise ValueError("min_score must lie in [0, 1] and iou in (0, 1]")
        if self.reference_side is not None and self.reference_side < 1:
            raise ValueError(f"reference_side must be a positive number of pixels or None, got {self.reference_side}")


@dataclass
class RunStats:
    """What one detection run did, for tables and benchmarks."""

    levels: int = 0
    windows: int = 0
    candidates: int = 0
    unit: str = "windows"  # what ``windows`` counts: classifier windows, or region proposals
    seconds: dict[str, float] = field(default_factory=lambda: {"pyramid": 0.0, "inference": 0.0,
                                                               "scoring": 0.0, "nms": 0.0})

    @property
    def total(self) -> float:
        return sum(self.seconds.values())


def resize_level(image: np.ndarray, level: Level) -> np.ndarray:
    """The image resized to a level (area interpolation when shrinking, linear when growing)."""
    lh, lw = level.size_hw
    if (lh, lw) == image.shape[:2]:
        return image
    shrink = lh * lw < image.shape[0] * image.shape[1]
    return cv2.resize(image, (lw, lh), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def iter_window_batches(
    image: np.ndarray, levels: list[Level], input_hw: tuple[int, int], batch_size: int, stats: RunStats | None = None
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Windows of all levels in fixed-size batches.

    Yields:
        (crops, boxes): uint8 (B, in_h, in_w, 3) crops and float32 (B, 4) their boxes in
        original-image pixels; B == batch_size except for the last batch. The two arrays are
        reused for the next batch (no per-batch allocation): copy what must outlive the step.
    """
    in_h, in_w = input_hw
    buf = np.empty((batch_size, in_h, in_w, 3), np.uint8)
    boxes = np.empty((batch_size, 4), np.float32)
    n = 0
    t0 = time.perf_counter()
    for level in levels:
        resized = resize_level(image, level)
        level_boxes = to_image_coords(level_window_boxes(level, input_hw), level.scale_xy, image.shape[:2])
        i = 0
        for y in level.ys.tolist():
            for x in level.xs.tolist():
                buf[n] = resized[y:y + in_h, x:x + in_w]
                boxes[n] = level_boxes[i]
                i += 1
                n += 1
                if n == batch_size:
                    if stats is not None:
                        stats.seconds["pyramid"] += time.perf_counter() - t0
                    yield buf, boxes
                    t0 = time.perf_counter()
                    n = 0
    if stats is not None:
        stats.seconds["pyramid"] += time.perf_counter() - t0
    if n:
        yield buf[:n], boxes[:n]


class SlidingWindowDetector:
    """Turns a `Classifier` into a detector.

    Args:
        classifier: the classifier to slide.
        targets: which classes to look for (default: every label of the classifier).
        config: window sizes, step, pyramid, thresholds.
    """

    def __init__(self, classifier: Classifier, targets: Targets | None = None, config: DetectorConfig | None = None):
        self.classifier = classifier
        self.targets = targets or Targets.all_labels(classifier.labels)
        self.config = config or DetectorConfig()
        self.dense = None
        if self.config.mode is Mode.DENSE:
            from slidewin.dense import DenseClassifier

            stride = classifier.meta.feature_stride
            if not stride:
                raise SlidewinError("dense mode needs the model's feature_stride in its metadata", classifier.path)
            if self.config.step != stride:
                raise SlidewinError(f"dense mode steps by the network stride: --stride must be {stride}, "
                                    f"got {self.config.step:g}")
            self.dense = DenseClassifier(classifier)

    @property
    def labels(self) -> tuple[str, ...]:
        return self.targets.names

    @property
    def meta(self):
        """The classifier's `ModelMeta`."""
        return self.classifier.meta

    def windows_for(self, image_hw: tuple[int, int]) -> list[tuple[int, int]]:
        """The window sizes (height, width) in this image's pixels (see ``reference_side``)."""
        c = self.config
        windows = list(c.windows_hw or (self.classifier.input_hw,))
        return scale_windows(windows, image_hw, c.reference_side)

    def plan(self, image_hw: tuple[int, int]) -> list[Level]:
        c = self.config
        windows = self.windows_for(image_hw)
        return plan_levels(image_hw, self.classifier.input_hw, windows, c.step, c.scale, c.max_levels, c.align)

    def detect(self, image: np.ndarray) -> Detections:
        """Detect in a uint8 RGB (H, W, 3) image; boxes in its pixels."""
        return self.run(image)[0]

    def run(self, image: np.ndarray) -> tuple[Detections, RunStats]:
        """`detect`, plus what it did and how long each stage took."""
        c = self.config
        score = self.targets.score_top1 if c.scoring is Scoring.TOP1 else self.targets.score
        stats = RunStats()
        levels = self.plan(image.shape[:2])
        stats.levels = len(levels)
        cand_boxes, cand_scores, cand_ids = [], [], []
        for probs, boxes in self._window_probabilities(image, levels, stats):
            t1 = time.perf_counter()
            scores = score(probs)
            win, cls = np.nonzero(scores >= c.min_score)
            if len(win):
                cand_boxes.append(boxes[win])
                cand_scores.append(scores[win, cls])
                cand_ids.append(cls)
            stats.windows += len(probs)
            stats.seconds["scoring"] += time.perf_counter() - t1
        t0 = time.perf_counter()
        if cand_boxes:
            dets = Detections(np.concatenate(cand_boxes), np.concatenate(cand_scores),
                              np.concatenate(cand_ids), self.labels)
        else:
            dets = Detections.empty(self.labels)
        stats.candidates = len(dets)
        dets = merge_detections(dets, c.merge, c.iou, c.ios, min_score=c.min_score)
        stats.seconds["nms"] += time.perf_counter() - t0
        return dets, stats

    def window_probabilities(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Every window's class probabilities, before scoring and merging.

        Returns:
            (probabilities (K, num_labels) float32, boxes (K, 4) in image pixels), windows in
            plan order: the same K windows, in the same order, in patch and dense mode.
        """
        stats = RunStats()
        probs, boxes = [], []
        for p, b in self._window_probabilities(image, self.plan(image.shape[:2]), stats):
            probs.append(np.array(p))
            boxes.append(np.array(b))
        return np.concatenate(probs), np.concatenate(boxes)

    def _window_probabilities(self, image: np.ndarray, levels: list[Level],
                              stats: RunStats) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(probabilities (B, num_labels), boxes (B, 4) in image pixels) for every window.

        Patch mode yields fixed-size batches of crops run through the classifier; dense mode
        yields one level at a time from the fully-convolutional pass. The windows are the same.
        """
        if self.dense is None:
            for crops, boxes in iter_window_batches(image, levels, self.classifier.input_hw,
                                                    self.config.batch_size, stats):
                t0 = time.perf_counter()
                probs = self.classifier.predict(crops)
                stats.seconds["inference"] += time.perf_counter() - t0
                yield probs, boxes
            return
        input_hw = self.classifier.input_hw
        for level in levels:
            t0 = time.perf_counter()
            resized = resize_level(image, level)
            boxes = to_image_coords(level_window_boxes(level, input_hw), level.scale_xy, image.shape[:2])
            t1 = time.perf_counter()
            pmap = self.dense.predict_map(resized)
            stats.seconds["pyramid"] += t1 - t0
            stats.seconds["inference"] += time.perf_counter() - t1
            if pmap.shape[:2] != (len(level.ys), len(level.xs)):
                raise SlidewinError(
                    f"dense model gave a {pmap.shape[0]}x{pmap.shape[1]} map for a level with "
                    f"{len(level.ys)}x{len(level.xs)} windows", self.classifier.path)
            yield pmap.reshape(-1, pmap.shape[2]), boxes
