"""`ProposalDetector` (R-CNN without training): the `ClassifierDetector` of a `ProposalConfig`.

Regions: selective search (`SelectiveSearch`: boxes that fit objects, cleaned: clipped, minimum
side, no duplicates, at most ``max_proposals``), or the window grid for ``method=windows`` (every
window of the plan: ``min_size`` and ``max_proposals`` are selective search's, not the grid's).
Scorer: pooled from the shared dense feature maps (`PooledScorer`, with the ring contrast) or
crops (`CropScorer`). The boxes are the regions themselves: they fit objects, windows do not.

Proposals need no network, so `prepare` computes them (in a worker thread, while the network
scores the previous image, in folder runs and evaluation) and `detect` takes them.
"""

from __future__ import annotations

from slidewin.core.merge import MergeConfig
from slidewin.core.targets import Targets
from slidewin.pipeline.config import DetectorConfig
from slidewin.pipeline.detector import ClassifierDetector
from slidewin.pipeline.regions import SelectiveSearch, WindowGrid
from slidewin.pipeline.scorers import CropScorer, PooledScorer
from slidewin.proposals.detector import ProposalConfig
from slidewin.proposals.generators import ProposalMethod
from slidewin.proposals.scoring import ProposalScoring

__all__ = ["ProposalConfig", "ProposalDetector", "proposal_parts"]


def proposal_parts(classifier, config: ProposalConfig, window_config: DetectorConfig | None = None):
    """The regions and scorer of a `ProposalConfig` (``window_config``: the grid's settings for
    ``method=windows``, default `DetectorConfig()`)."""
    c = config
    if c.method is ProposalMethod.WINDOWS:
        wc = window_config or DetectorConfig()
        regions = WindowGrid.from_config(wc, classifier.input_hw, float(wc.step) if not isinstance(wc.step, tuple)
                                         else wc.step)
    else:
        regions = SelectiveSearch(c.method, c.min_size, c.max_proposals)
    if c.scoring is ProposalScoring.POOLED:
        from slidewin.runtime.dense import DenseClassifier

        scorer = PooledScorer(DenseClassifier(classifier), c.context, c.max_scale, c.level_factor, c.fit,
                              c.ring if c.uses_ring else 0.0, c.contrast if c.uses_ring else 0.0)
    else:
        scorer = CropScorer(classifier, c.context, c.batch_size)
    return regions, scorer


class ProposalDetector(ClassifierDetector):
    """A classifier scoring region proposals, from a `ProposalConfig` (`proposal_parts`).

    Args:
        classifier: the `Classifier`.
        targets: which classes to look for (default: every label of the classifier).
        config: proposals, scoring and thresholds.
        window_config: the sliding-window settings, for ``method=windows`` (default: `DetectorConfig()`).
    """

    def __init__(self, classifier, targets: Targets | None = None, config: ProposalConfig | None = None,
                 window_config: DetectorConfig | None = None):
        self.config = config or ProposalConfig()
        regions, scorer = proposal_parts(classifier, self.config, window_config)
        super().__init__(regions, scorer, targets or Targets.all_labels(classifier.labels),
                         MergeConfig(self.config.merge, self.config.iou), self.config.min_score)
