"""`ProposalDetector` (R-CNN without training): the name the library had for a classifier scoring
region proposals. It is the `ClassifierDetector` of a `DetectorConfig` whose regions are
selective search (`SelectiveSearchConfig`: boxes that fit objects, cleaned: clipped, minimum side,
no duplicates, at most ``max_proposals``), scored pooled from the shared dense feature maps
(`PooledScorer`, with the ring contrast) or as crops (`CropScorer`). The boxes are the regions
themselves: they fit objects, windows do not.

Proposals need no network, so `prepare` computes them (in a worker thread, while the network
scores the previous image, in folder runs and evaluation) and `detect` takes them.
"""

from __future__ import annotations

from slidewin.core.targets import Targets
from slidewin.pipeline.config import DetectorConfig, ProposalConfig, WindowGridConfig
from slidewin.pipeline.detector import ClassifierDetector
from slidewin.pipeline.parts import box_parts
from slidewin.pipeline.sliding import from_config

__all__ = ["ProposalConfig", "ProposalDetector", "box_parts"]


class ProposalDetector(ClassifierDetector):
    """A classifier scoring region proposals: the `ClassifierDetector` of a `DetectorConfig`.

    Args:
        classifier: the `Classifier`.
        targets: which classes to look for (default: every label of the classifier).
        config: the settings (default `ProposalConfig()`: selective-search-fast, pooled scoring).
        window_config: the grid's settings where ``config``'s regions are the grid (its
            ``regions`` replace ``config``'s).
    """

    def __init__(self, classifier, targets: Targets | None = None, config: DetectorConfig | None = None,
                 window_config: DetectorConfig | None = None):
        config = config or ProposalConfig()
        if window_config is not None and isinstance(config.regions, WindowGridConfig):
            config = config.updated(regions=window_config.regions)
        from_config(self, classifier, targets, config)
