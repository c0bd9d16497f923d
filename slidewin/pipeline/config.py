"""`DetectorConfig`: everything that decides which windows a sliding-window detector scores and how.

The defaults are the recipe chosen on coco-dev (README, "How slidewin's recipe got there"); the
CLI takes its defaults from here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

from slidewin.core.merge import SOFT_SIGMA, Merge
DEFAULT_MAX_TILE = 3072  # --dense-tile: dense passes hold at most this ** 2 pixels (why 3072: slidewin.runtime.dense)


class Mode(StrEnum):
    """How windows are classified.

    ``patch`` crops every window and classifies the crops in batches; ``dense`` runs the
    classifier's fully-convolutional rewrite once per pyramid level (same windows, step = the
    network stride); ``auto`` is dense when the classifier can be rewritten and the settings
    allow it (step = the network stride), patch otherwise. Dense measured 15-25x faster than
    patch mode and 2.7x its AP50 on coco-dev (README).
    """

    AUTO = "auto"
    PATCH = "patch"
    DENSE = "dense"


class Scoring(StrEnum):
    """How window probabilities become target scores (see `Targets`)."""

    GROUP_SUM = "group-sum"  # every target scores the sum of its members' probabilities
    TOP1 = "top1"            # the tutorial's: only the top-1 label scores, for its own target


#: Window sizes (height, width) chosen on coco-dev with EfficientNet-Lite0 (README, ablation):
#: the tutorial's 200x150 landscape ROI, its portrait twin, and a 100x75 window (classified 2x
#: upsampled) for the many small objects of everyday photos.
DEFAULT_WINDOWS = ((150, 200), (200, 150), (75, 100))
#: Window sizes are pixels of an image up to this long side; larger images get them scaled up.
REFERENCE_SIDE = 1024
#: Patch-mode batches beyond this only cost memory: the network's activations grow with the
#: batch (tens of MB per 224 px window), throughput does not (bench_throughput: flat from 16).
MAX_BATCH_SIZE = 1024


class NetworkStride(float):
    """The default step: "the network's stride". It is 32 px where a number is needed (patch mode,
    printing it), and a detector that runs dense (``auto`` or ``dense``) steps by the stride its
    classifier's dense form has (16 for a network that downsamples 16 times). A step the user sets
    is a plain float and is kept as it is."""

    def __repr__(self) -> str:
        return "NetworkStride(32.0)"


#: The default `DetectorConfig.step`.
DEFAULT_STEP = NetworkStride(32.0)


@dataclass(frozen=True)
class DetectorConfig:
    """Sliding-window parameters.

    Attributes:
        windows_hw: window sizes (height, width) in original-image pixels at the first level
            (default `DEFAULT_WINDOWS`; None: one window of the classifier's input size).
        step: distance between windows in classifier-input pixels, or (step_y, step_x);
            default `DEFAULT_STEP`: the network's stride in dense mode, 32 in patch mode.
        scale: pyramid factor between levels.
        max_levels: at most this many pyramid levels per window size.
        min_score: keep (window, target) pairs scoring at least this.
        iou: class-aware NMS IoU threshold.
        batch_size: windows per inference call (patch mode).
        mode: see `Mode` (default ``auto``).
        align: round level sizes so windows tile them exactly (see `plan_levels`); dense mode
            needs it, and with it both modes evaluate the same windows.
        scoring: group sums (slidewin) or the tutorial's top-1 label.
        merge: how overlapping windows become one box (see `slidewin.core.merge`).
        ios: intersection-over-smaller threshold of the ``nested`` merges.
        soft_sigma: the Gaussian's width of the ``soft-nms`` merge.
        reference_side: window sizes are pixels of an image whose longer side is at most this;
            on a larger image they are scaled by ``long_side / reference_side``, so a 12 MP photo
            is searched at the same relative scales, in about the same number of windows, as a
            1024 px one (absolute windows tuned on 640 px photos would make its first level
            ~60 MP and its smallest window a sliver). None: absolute pixels at any size.
        dense_tile: dense mode runs levels of more than ``dense_tile ** 2`` pixels in tiles of
            at most that many (same results, bounded memory, more time); 0 never tiles.
    """

    windows_hw: tuple[tuple[int, int], ...] | None = DEFAULT_WINDOWS
    step: float | tuple[float, float] = DEFAULT_STEP
    scale: float = 1.5
    max_levels: int | None = None
    min_score: float = 0.5
    iou: float = 0.5
    batch_size: int = 16
    mode: Mode = Mode.AUTO
    align: bool = True
    scoring: Scoring = Scoring.GROUP_SUM
    merge: Merge = Merge.NMS
    ios: float = 0.6
    soft_sigma: float = SOFT_SIGMA
    reference_side: int | None = REFERENCE_SIDE
    dense_tile: int = DEFAULT_MAX_TILE

    def __post_init__(self):
        object.__setattr__(self, "merge", Merge(self.merge))
        object.__setattr__(self, "mode", Mode(self.mode))
        object.__setattr__(self, "scoring", Scoring(self.scoring))
        if self.mode is Mode.DENSE and not self.align:
            raise ValueError("dense mode needs aligned levels (align=True)")
        if self.windows_hw is not None and not self.windows_hw or any(h < 8 or w < 8 for h, w in self.windows_hw or ()):
            raise ValueError(f"window sizes must be at least 8x8, got {self.windows_hw}")
        self._check_numbers()

    def _check_numbers(self) -> None:
        steps = self.step if isinstance(self.step, tuple) else (self.step,)
        numbers = (*steps, self.scale, self.min_score, self.iou, self.ios, self.soft_sigma)
        if not all(math.isfinite(v) for v in numbers):
            raise ValueError("step, scale, min_score and iou must be finite numbers")
        if not all(st > 0 for st in steps) or not self.scale > 1:
            raise ValueError("step must be > 0 and scale > 1")
        if self.align and any(st != int(st) for st in steps):
            raise ValueError(f"the step (--stride) must be a whole number of pixels, got {self.step}")
        if not 1 <= self.batch_size <= MAX_BATCH_SIZE:
            raise ValueError(f"batch_size (--batch-size) must lie in [1, {MAX_BATCH_SIZE}], got {self.batch_size} "
                             "(larger batches only cost memory)")
        if not 0 <= self.min_score <= 1 or not 0 < self.iou <= 1:
            raise ValueError("min_score must lie in [0, 1] and iou in (0, 1]")
        if self.max_levels is not None and self.max_levels < 1:
            raise ValueError(f"max_levels must be at least 1, got {self.max_levels}")
        if self.reference_side is not None and self.reference_side < 1:
            raise ValueError(f"reference_side must be a positive number of pixels or None, got {self.reference_side}")
        if self.dense_tile < 0:
            raise ValueError(f"dense_tile must be >= 0, got {self.dense_tile}")
