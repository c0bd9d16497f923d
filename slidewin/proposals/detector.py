"""`ProposalDetector` (R-CNN without training): proposals -> classifier -> target scores -> NMS.

Data flow: a generator (`generators`) proposes boxes that fit objects; they are cleaned (clipped,
minimum side, duplicates, at most ``max_proposals``), scored with the classifier (`scoring`:
crops, or pooled from the shared dense feature maps), turned into target scores with the same
label groups as the sliding-window detector, kept above ``min_score`` and merged with
class-aware NMS. The boxes are the proposals themselves: they fit objects, windows do not.

Proposals need no network, so `prepare` computes them (in a worker thread, while the network
scores the previous image, in folder runs and evaluation) and `detect` takes them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from slidewin.core.detections import Detections
from slidewin.core.detector import RunStats, Stage, Unit
from slidewin.core.merge import Merge, merge_detections
from slidewin.core.targets import Targets
from slidewin.proposals.generators import ProposalMethod, SelectiveSearch, WindowGrid, clean_proposals
from slidewin.proposals.scoring import CropScorer, PooledScorer, ProposalScoring, contrast_scores


@dataclass(frozen=True)
class ProposalConfig:
    """Proposal-detector settings (defaults chosen on coco-dev and coco-train: README, ablation).

    Attributes:
        method: where proposals come from (a selective-search mode, or ``windows``).
        scoring: ``pooled`` (shared dense features) or ``crops`` (one network pass per box).
        min_size: proposals narrower or shorter than this many pixels are dropped.
        max_proposals: at most this many proposals, in the generator's rank order.
        context: boxes grow by this fraction of their size on each side before scoring.
        min_score: keep (proposal, target) pairs scoring at least this.
        iou: class-aware NMS IoU threshold.
        merge: how overlapping candidates become one box.
        batch_size: crops per inference call (``crops`` scoring).
        max_scale, level_factor: the pooled pyramid: largest scale and the factor between levels.
        fit: pooled scoring takes each box at the level where its side is this fraction of the
            classifier's input side.
        ring, contrast: pooled scoring also scores the ring between each box and the box grown by
            ``ring`` of its size a side, and multiplies the box's score by
            ``(1 - ring score) ** contrast`` (0: off), which demotes parts of objects.
            Crops scoring has no ring: it would cost another network pass per box.
    """

    method: ProposalMethod = ProposalMethod.SELECTIVE_SEARCH_FAST
    scoring: ProposalScoring = ProposalScoring.POOLED
    min_size: float = 16.0
    max_proposals: int = 2000
    context: float = 0.0
    min_score: float = 0.5
    iou: float = 0.7
    merge: Merge = Merge.NMS
    batch_size: int = 16
    max_scale: float = 3.0
    level_factor: float = 1.5
    fit: float = 0.7
    ring: float = 0.5
    contrast: float = 3.0

    def __post_init__(self):
        object.__setattr__(self, "method", ProposalMethod(self.method))
        object.__setattr__(self, "scoring", ProposalScoring(self.scoring))
        object.__setattr__(self, "merge", Merge(self.merge))
        if not (self.min_size >= 0 and self.max_proposals >= 1 and 0 <= self.context <= 2):
            raise ValueError("min_size must be >= 0, max_proposals >= 1 and context in [0, 2]")
        if not (0 <= self.min_score <= 1 and 0 < self.iou <= 1 and self.batch_size >= 1):
            raise ValueError("min_score must lie in [0, 1], iou in (0, 1] and batch_size >= 1")
        if not (self.max_scale > 0 and self.level_factor > 1 and self.fit > 0):
            raise ValueError("max_scale and fit must be > 0 and level_factor > 1")
        if not (0 <= self.ring <= 2 and self.contrast >= 0):
            raise ValueError("ring must lie in [0, 2] and contrast be >= 0")

    @property
    def uses_ring(self) -> bool:
        """True when scores are contrasted with the ring around each box (pooled scoring only)."""
        return self.scoring is ProposalScoring.POOLED and self.ring > 0 and self.contrast > 0


class ProposalDetector:
    """A classifier scoring region proposals: a `slidewin.core.detector.Detector`.

    Args:
        classifier: the `Classifier`.
        targets: which classes to look for (default: every label of the classifier).
        config: proposals, scoring and thresholds.
        window_config: the sliding-window settings, for ``method=windows`` (default: `DetectorConfig()`).
    """

    def __init__(self, classifier, targets: Targets | None = None, config: ProposalConfig | None = None,
                 window_config=None):
        self.classifier = classifier
        self.targets = targets or Targets.all_labels(classifier.labels)
        self.config = config or ProposalConfig()
        c = self.config
        if c.method is ProposalMethod.WINDOWS:
            from slidewin.pipeline.config import DetectorConfig

            self.generator = WindowGrid(window_config or DetectorConfig(), classifier.input_hw)
        else:
            self.generator = SelectiveSearch(c.method)
        if c.scoring is ProposalScoring.POOLED:
            from slidewin.runtime.dense import DenseClassifier

            self.scorer = PooledScorer(DenseClassifier(classifier), c.context, c.max_scale, c.level_factor,
                                       c.fit, c.ring if c.uses_ring else 0.0)
        else:
            self.scorer = CropScorer(classifier, c.context, c.batch_size)
        self.last_stats: RunStats | None = None

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

    def prepare(self, image: np.ndarray) -> tuple[np.ndarray, float]:
        """The image's proposals, cleaned, and the seconds they took (thread-safe)."""
        t0 = time.perf_counter()
        boxes = clean_proposals(self.generator(image), image.shape[:2], self.config.min_size,
                                self.config.max_proposals)
        return boxes, time.perf_counter() - t0

    def detect(self, image: np.ndarray, prepared: tuple[np.ndarray, float] | None = None) -> Detections:
        """Detect in a uint8 RGB (H, W, 3) image; boxes in its pixels. Stats in `last_stats`."""
        c = self.config
        boxes, seconds = prepared if prepared is not None else self.prepare(image)
        stats = RunStats.for_stages(Stage.PROPOSALS, Stage.PYRAMID, Stage.INFERENCE, Stage.SCORING, Stage.NMS,
                                    unit=Unit.PROPOSALS, levels=1)
        stats.add(Stage.PROPOSALS, seconds)
        stats.windows, stats.regions = len(boxes), boxes
        if c.uses_ring:
            probs, ring = self.scorer.probabilities_and_ring(image, boxes, stats)
        else:
            probs, ring = self.scorer.probabilities(image, boxes, stats), None
        t0 = time.perf_counter()
        scores = self.targets.score(probs)
        if ring is not None:
            scores = contrast_scores(scores, self.targets.score(ring), c.contrast)
        win, cls = np.nonzero(scores >= c.min_score)
        candidates = Detections(boxes[win], scores[win, cls], cls, self.labels)
        stats.candidates = len(candidates)
        t1 = time.perf_counter()
        dets = merge_detections(candidates, c.merge, c.iou, min_score=c.min_score)
        stats.add(Stage.SCORING, t1 - t0)
        stats.add(Stage.NMS, time.perf_counter() - t1)
        self.last_stats = stats
        return dets
