"""`ClassifierDetector`: the one classifier-based detector, built from three parts.

In the manner of detectron2's ``GeneralizedRCNN``, the stages are passed in, not subclassed:

    regions (`slidewin.pipeline.regions`: a `WindowGrid` plan, or `SelectiveSearch` boxes)
      -> scorer (`slidewin.pipeline.scorers`: patch crops or the dense map for a plan; box crops
         or pooled features for any boxes) -> class probabilities
      -> targets (`Targets`: probabilities -> target scores, kept at or above ``min_score``)
      -> merge (`MergeConfig`, applied as ``candidates.merged(cfg)``) -> `Detections`.

A scorer that needs a plan (patch, dense) with regions that give only boxes (selective search) is
refused by name when the detector is built. `build_detector` (`slidewin.pipeline.factory`) is the
composition root that makes the parts from a model file and the settings.

Memory is one resized level plus one batch (or one dense tile) for a plan, whatever the number of
windows; the boxes and their probabilities for boxes.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np

from slidewin.core.detections import Detections
from slidewin.core.detector import Detector, RunStats, Stage
from slidewin.core.geometry import Level
from slidewin.core.merge import MergeConfig
from slidewin.core.targets import Targets
from slidewin.errors import SlidewinError

#: One image's plan may hold at most this much memory at once: its largest resized level, plus
#: in dense mode that level's window probabilities and scores ...
MAX_PLAN_BYTES = 8 << 30
#: ... and score at most this many windows (a 12 MP photo with the default windows: ~3,000).
MAX_WINDOWS = 5_000_000


def check_parts(regions, scorer) -> None:
    """Refuse, naming both, a pair of parts that does not fit (`SlidewinError`): a scorer that
    scores the windows of a plan with regions that give only boxes, or parts made for
    classifiers of different input sizes."""
    r, s = type(regions).__name__, type(scorer).__name__
    if scorer.needs_plan and not regions.gives_plan:
        raise SlidewinError(f"{s} scores the windows of a pyramid plan and {r} gives boxes, not a plan: "
                            "score them with CropScorer or PooledScorer, or take WindowGrid regions")
    input_hw = getattr(regions, "input_hw", None)
    if input_hw is not None and tuple(input_hw) != tuple(scorer.classifier.input_hw):
        raise SlidewinError(f"{r} plans windows for a {input_hw} input and {s}'s classifier takes "
                            f"{tuple(scorer.classifier.input_hw)}")
    stride = getattr(getattr(scorer, "dense", None), "stride", None)
    if scorer.needs_plan and stride is not None:
        steps = set(regions.step if isinstance(regions.step, tuple) else (regions.step,))
        if steps != {stride} or not regions.align:
            raise SlidewinError(f"{s} steps by the network stride: {r} must step by {stride} on aligned levels, "
                                f"got step {regions.step}")


class ClassifierDetector(Detector):
    """A classifier turned into a detector from parts (a `slidewin.core.detector.Detector`).

    Args:
        regions: `WindowGrid` or `SelectiveSearch`.
        scorer: `PatchScorer`, `DenseScorer` (need a `WindowGrid`), `CropScorer` or `PooledScorer`.
        targets: which classes to look for (default: every label of the scorer's classifier).
        merge: the `MergeConfig` (default: class-aware NMS at IoU 0.5).
        min_score: keep (region, target) pairs scoring at least this.
        top1: the tutorial's scoring, only the top-1 label scores (see `Targets.score_top1`).

    Attributes:
        last_stats: `RunStats` of the latest `detect`.
    """

    def __init__(self, regions, scorer, targets: Targets | None = None, merge: MergeConfig | None = None,
                 min_score: float = 0.5, top1: bool = False):
        check_parts(regions, scorer)
        self.regions, self.scorer = regions, scorer
        self.targets = targets or Targets.all_labels(scorer.classifier.labels)
        self.merge = merge or MergeConfig()
        self.min_score, self.top1 = min_score, top1
        self.last_stats: RunStats | None = None

    # --- what the Detector interface and the apps read -----------------------------------------
    @property
    def classifier(self):
        return self.scorer.classifier

    @property
    def dense(self):
        """The classifier's dense form when the scorer runs one (dense, pooled), else None."""
        return getattr(self.scorer, "dense", None)

    @property
    def mode(self):
        """``patch`` or ``dense`` for a plan scorer (`Mode`); None for a box scorer."""
        return getattr(self.scorer, "mode", None)

    @property
    def step(self):
        """The window grid's step in use (None for regions without a grid)."""
        return getattr(self.regions, "step", None)

    @property
    def generator(self):
        """The regions (the name proposal detectors had)."""
        return self.regions

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

    # --- the plan (window grid with a plan scorer) ---------------------------------------------
    def windows_for(self, image_hw: tuple[int, int]) -> list[tuple[int, int]]:
        """The window sizes (height, width) in this image's pixels (see ``reference_side``)."""
        return self.regions.windows_for(image_hw)

    def plan(self, image_hw: tuple[int, int]) -> list[Level]:
        """The pyramid levels for an image of this size, refused (`SlidewinError`, saying what to
        change) when they would exceed `MAX_WINDOWS` or `MAX_PLAN_BYTES`: checked from sizes
        alone, before anything is allocated."""
        levels = self.regions.plan(image_hw)
        self._check_plan(image_hw, self.regions.windows_for(image_hw), levels)
        return levels

    def plan_bytes(self, level: Level) -> int:
        """Memory one level takes while it is scored: the resized level, and the probabilities and
        target scores of the windows held at once (dense: all of the level's; patch: a batch)."""
        h, w = level.size_hw
        per_window = 4 * (len(self.classifier.labels) + len(self.labels))
        held = self.scorer.scored_per_level(level) if self.scorer.needs_plan else level.num_windows
        return h * w * 3 + held * per_window

    def _check_plan(self, image_hw: tuple[int, int], windows: list[tuple[int, int]], levels: list[Level]) -> None:
        if not levels:
            return
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

    # --- detection ------------------------------------------------------------------------------
    def prepare(self, image: np.ndarray):
        """What can be done before the network runs, thread-safe: for a box scorer the image's
        regions and the seconds they took, ``(float32 (K, 4), seconds)``; for a plan, nothing
        (windows cost nothing to plan)."""
        if self.scorer.needs_plan:
            return None
        t0 = time.perf_counter()
        boxes = self.regions.boxes(image)
        return boxes, time.perf_counter() - t0

    def detect(self, image: np.ndarray, prepared=None) -> Detections:
        """Detect in a uint8 RGB (H, W, 3) image; boxes in its pixels. Stats in `last_stats`."""
        candidates = self.candidates(image, prepared)
        stats = self.last_stats
        t0 = time.perf_counter()
        dets = candidates.merged(self.merge, min_score=self.min_score)
        stats.add(Stage.NMS, time.perf_counter() - t0)
        return dets

    def candidates(self, image: np.ndarray, prepared=None) -> Detections:
        """Every (region, target) pair scoring at least ``min_score``, before the merge: what
        `detect` merges (for measuring merges; stats in `last_stats`)."""
        stats, chunks = self._start(image, prepared)
        parts, seen = [], []
        for probs, boxes, ring in chunks:
            t0 = time.perf_counter()
            seen.append(boxes.copy())  # patch scoring reuses its buffer for the next batch
            scores = self._scores(probs, ring)
            win, cls = np.nonzero(scores >= self.min_score)
            if len(win):
                parts.append(Detections(boxes[win], scores[win, cls], cls, self.labels))
            stats.windows += len(probs)
            stats.add(Stage.SCORING, time.perf_counter() - t0)
        t0 = time.perf_counter()
        candidates = Detections.concatenate(parts, self.labels)
        stats.candidates = len(candidates)
        stats.regions = np.concatenate(seen) if seen else np.zeros((0, 4), np.float32)
        stats.add(Stage.NMS, time.perf_counter() - t0)
        self.last_stats = stats
        return candidates

    def _start(self, image: np.ndarray, prepared) -> tuple[RunStats, Iterator[tuple]]:
        """The run's stats and the scorer's chunks, for a plan or for boxes."""
        scoring = (Stage.PYRAMID, Stage.INFERENCE, Stage.SCORING, Stage.NMS)
        if self.scorer.needs_plan:
            stats = RunStats.for_stages(*scoring)
            levels = self.plan(image.shape[:2])
            stats.levels = len(levels)
            return stats, self.scorer.chunks(image, levels, stats)
        boxes, seconds = prepared if prepared is not None else self.prepare(image)
        stats = RunStats.for_stages(*self.regions.stages, *scoring, unit=self.regions.unit, levels=1)
        if Stage.PROPOSALS in self.regions.stages:
            stats.add(Stage.PROPOSALS, seconds)
        return stats, self.scorer.chunks(image, boxes, stats)

    def _scores(self, probs: np.ndarray, ring: np.ndarray | None) -> np.ndarray:
        """Target scores (B, num_targets) of a chunk, lowered by the ring's where there is one."""
        score = self.targets.score_top1 if self.top1 else self.targets.score
        scores = score(probs)
        if ring is not None:
            scores = self.scorer.contrasted(scores, score(ring))
        return scores

    def window_probabilities(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Every window's class probabilities, before scoring and merging (plan scorers).

        Returns:
            (probabilities (K, num_labels) float32, boxes (K, 4) in image pixels), windows in
            plan order: the same K windows, in the same order, in patch and dense mode.
        """
        if not self.scorer.needs_plan:
            raise SlidewinError(f"window_probabilities needs a plan scorer, not {type(self.scorer).__name__}")
        probs, boxes = [], []
        for p, b, _ in self.scorer.chunks(image, self.plan(image.shape[:2]), RunStats()):
            probs.append(np.array(p))
            boxes.append(np.array(b))
        return np.concatenate(probs), np.concatenate(boxes)


__all__ = ["MAX_PLAN_BYTES", "MAX_WINDOWS", "ClassifierDetector", "check_parts"]
