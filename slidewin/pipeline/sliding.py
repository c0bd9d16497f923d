"""`SlidingWindowDetector`: a classifier slid over an image pyramid, returning `Detections`.

Data flow: plan levels (`slidewin.core.geometry`) -> window probabilities, either from crops
classified in batches (patch mode, `iter_window_batches`) or from one fully-convolutional pass
per level (dense mode, `DenseClassifier`) -> target scores -> candidates above ``min_score``
in original pixels -> class-aware merge. Memory is one resized level plus one batch (or one
dense tile), whatever the number of windows.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np

from slidewin.core.detections import Detections
from slidewin.core.detector import RunStats, Stage
from slidewin.core.geometry import Level, plan_levels, scale_windows
from slidewin.core.merge import merge_detections
from slidewin.core.targets import Targets
from slidewin.errors import ModelError, SlidewinError
from slidewin.pipeline.config import DetectorConfig, Mode, NetworkStride, Scoring
from slidewin.pipeline.windows import iter_window_batches, level_boxes, resize_level
from slidewin.runtime.classifier import Classifier

#: One image's plan may hold at most this much memory at once: its largest resized level, plus
#: in dense mode that level's window probabilities and scores ...
MAX_PLAN_BYTES = 8 << 30
#: ... and score at most this many windows (a 12 MP photo with the default windows: ~3,000).
MAX_WINDOWS = 5_000_000


def dense_capable(classifier: Classifier, say: bool = True) -> bool:
    """Whether a classifier can run in dense mode: the rewrite knows its graph
    (`slidewin.runtime.dense_graph`); when it does not, the reason is said once (`note_patch_mode`)."""
    from slidewin.runtime.dense import DenseClassifier
    from slidewin.runtime.dense_graph import UnsupportedGraph

    try:
        DenseClassifier(classifier)
    except UnsupportedGraph as e:
        if say:
            note_patch_mode(classifier.path, e)
        return False
    return True


_NOTED: set[str] = set()


def note_patch_mode(path, error) -> None:
    """Say on stderr, once per model and process, in one line, why ``auto`` runs patch mode: the
    `UnsupportedGraph` ``error``'s reason (nothing for a model with no convolutional features to
    share, `NoFeatureGrid`: dense mode is no loss there)."""
    import sys

    from slidewin.errors import printable
    from slidewin.io.stderr import STDERR_LOCK
    from slidewin.runtime.dense_graph import NoFeatureGrid

    key, reason = str(path), error.problem
    if key in _NOTED or isinstance(error, NoFeatureGrid):
        return
    _NOTED.add(key)
    with STDERR_LOCK:
        print(f"slidewin: note: {printable(key)}: patch mode: {printable(reason)}", file=sys.stderr, flush=True)


def _follows_stride(step) -> bool:
    """Whether ``step`` is the default, "the network's stride" (`NetworkStride`)."""
    return isinstance(step, NetworkStride)


def _steps(step) -> tuple[float, ...]:
    return step if isinstance(step, tuple) else (step,)


class SlidingWindowDetector:
    """Turns a `Classifier` into a detector (a `slidewin.core.detector.Detector`).

    Args:
        classifier: the classifier to slide.
        targets: which classes to look for (default: every label of the classifier).
        config: window sizes, step, pyramid, thresholds, mode.

    Attributes:
        mode: the mode in use, ``patch`` or ``dense`` (``auto`` resolved, see `Mode`).
        last_stats: `RunStats` of the latest `detect`.
    """

    def __init__(self, classifier: Classifier, targets: Targets | None = None, config: DetectorConfig | None = None):
        self.classifier = classifier
        self.targets = targets or Targets.all_labels(classifier.labels)
        self.config = config or DetectorConfig()
        self.dense = self._dense_classifier()
        self.mode = Mode.PATCH if self.dense is None else Mode.DENSE
        #: The step in use: the dense form's stride in dense mode, the configured step otherwise.
        self.step = self.config.step if self.dense is None else self.dense.stride
        if self.dense is None and _follows_stride(self.step):
            self.step = float(self.step)
        self.last_stats: RunStats | None = None

    def _dense_classifier(self):
        """The classifier's dense form when the mode asks for it (or allows it, for ``auto``).

        ``auto`` runs patch mode for settings dense mode cannot follow (a step other than the
        network stride, unaligned levels), and for graphs the rewrite does not know, saying why
        in one line (`note_patch_mode`). ``dense`` refuses both in one line. A dense form that
        cannot be written is an error in both."""
        from slidewin.runtime.dense import DenseClassifier
        from slidewin.runtime.dense_graph import UnsupportedGraph

        c, clf = self.config, self.classifier
        if c.mode is Mode.PATCH:
            return None
        auto = c.mode is Mode.AUTO
        stated = clf.meta.feature_stride
        if auto and (not c.align or (stated and not _follows_stride(c.step) and set(_steps(c.step)) != {stated})):
            return None  # the user's settings: patch mode without building anything
        try:
            dense = DenseClassifier(clf, max_tile=c.dense_tile)
        except UnsupportedGraph as e:
            if auto:
                note_patch_mode(clf.path, e)
                return None
            raise UnsupportedGraph(f"{e.problem}; use --mode patch", e.path or clf.path) from None
        if not _follows_stride(c.step) and set(_steps(c.step)) != {dense.stride}:
            if auto:
                return None
            got = str(c.step) if isinstance(c.step, tuple) else f"{c.step:g}"
            raise SlidewinError(f"dense mode steps by the network stride: --stride must be {dense.stride}, got {got}")
        return dense

    @property
    def labels(self) -> tuple[str, ...]:
        return self.targets.names

    @property
    def meta(self):
        """The classifier's `ModelMeta`."""
        return self.classifier.meta

    @property
    def providers(self) -> list[str]:
        return self.classifier.providers

    def windows_for(self, image_hw: tuple[int, int]) -> list[tuple[int, int]]:
        """The window sizes (height, width) in this image's pixels (see ``reference_side``)."""
        c = self.config
        windows = list(c.windows_hw or (self.classifier.input_hw,))
        return scale_windows(windows, image_hw, c.reference_side)

    def plan(self, image_hw: tuple[int, int]) -> list[Level]:
        """The pyramid levels for an image of this size, refused (`SlidewinError`, saying what to
        change) when they would exceed `MAX_WINDOWS` or `MAX_PLAN_BYTES`: checked from sizes
        alone, before anything is allocated."""
        c = self.config
        windows = self.windows_for(image_hw)
        levels = plan_levels(image_hw, self.classifier.input_hw, windows, self.step, c.scale, c.max_levels, c.align)
        self._check_plan(image_hw, windows, levels)
        return levels

    def plan_bytes(self, level: Level) -> int:
        """Memory one level takes while it is scored: the resized level, and in dense mode the
        probabilities and target scores of all its windows (patch mode: one batch of them)."""
        h, w = level.size_hw
        per_window = 4 * (len(self.classifier.labels) + len(self.labels))
        scored = level.num_windows if self.dense is not None else min(level.num_windows, self.config.batch_size)
        return h * w * 3 + scored * per_window

    def _check_plan(self, image_hw: tuple[int, int], windows: list[tuple[int, int]], levels: list[Level]) -> None:
        count = sum(level.num_windows for level in levels)
        biggest = max(levels, key=self.plan_bytes)
        need = self.plan_bytes(biggest)
        if count <= MAX_WINDOWS and need <= MAX_PLAN_BYTES:
            return
        (h, w), (lh, lw) = image_hw, biggest.size_hw
        small = min(windows, key=lambda hw: hw[0] * hw[1])
        raise SlidewinError(
            f"the window settings need {count:,} windows and a {lw}x{lh} pyramid level (~{need / 2**30:.1f} GiB) "
            f"for this {w}x{h} image, over the limits of {MAX_WINDOWS:,} windows and {MAX_PLAN_BYTES / 2**30:.0f} GiB: "
            f"use larger --window sizes (the smallest is {small[1]}x{small[0]} here), --reference-side, "
            "--max-levels, or a larger --stride in patch mode")

    def prepare(self, image: np.ndarray) -> None:
        """Nothing to do ahead: windows cost nothing to plan."""
        return None

    def detect(self, image: np.ndarray, prepared: None = None) -> Detections:
        """Detect in a uint8 RGB (H, W, 3) image; boxes in its pixels. Stats in `last_stats`."""
        c = self.config
        score = self.targets.score_top1 if c.scoring is Scoring.TOP1 else self.targets.score
        stats = RunStats.for_stages(Stage.PYRAMID, Stage.INFERENCE, Stage.SCORING, Stage.NMS)
        levels = self.plan(image.shape[:2])
        stats.levels = len(levels)
        parts, regions = [], []
        for probs, boxes in self._window_probabilities(image, levels, stats):
            t1 = time.perf_counter()
            regions.append(boxes.copy())  # patch mode reuses its buffer for the next batch
            scores = score(probs)
            win, cls = np.nonzero(scores >= c.min_score)
            if len(win):
                parts.append(Detections(boxes[win], scores[win, cls], cls, self.labels))
            stats.windows += len(probs)
            stats.add(Stage.SCORING, time.perf_counter() - t1)
        t0 = time.perf_counter()
        candidates = Detections.concatenate(parts, self.labels)
        stats.candidates = len(candidates)
        stats.regions = np.concatenate(regions) if regions else np.zeros((0, 4), np.float32)
        dets = merge_detections(candidates, c.merge, c.iou, c.ios, sigma=c.soft_sigma, min_score=c.min_score)
        stats.add(Stage.NMS, time.perf_counter() - t0)
        self.last_stats = stats
        return dets

    def window_probabilities(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Every window's class probabilities, before scoring and merging.

        Returns:
            (probabilities (K, num_labels) float32, boxes (K, 4) in image pixels), windows in
            plan order: the same K windows, in the same order, in patch and dense mode.
        """
        probs, boxes = [], []
        for p, b in self._window_probabilities(image, self.plan(image.shape[:2]), RunStats()):
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
                stats.add(Stage.INFERENCE, time.perf_counter() - t0)
                yield probs, boxes
            return
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
            yield pmap.reshape(-1, pmap.shape[2]), boxes
