"""`ProposalConfig`: the settings of a classifier scoring region proposals (R-CNN without training).

The detector itself, `ProposalDetector`, is a `slidewin.pipeline.detector.ClassifierDetector`
built from these settings (`slidewin.pipeline.proposal`); ``slidewin.proposals.detector.ProposalDetector``
still names it.
"""

from __future__ import annotations

from dataclasses import dataclass

from slidewin.core.merge import Merge
from slidewin.proposals.generators import ProposalMethod
from slidewin.proposals.scoring import ProposalScoring


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


def __getattr__(name: str):
    # The old import path of `ProposalDetector`, now a `ClassifierDetector` built in the pipeline
    # (which sits above this package): imported on first use only.
    if name == "ProposalDetector":
        from slidewin.pipeline.proposal import ProposalDetector

        return ProposalDetector
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
