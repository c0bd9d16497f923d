"""`SlidingWindowDetector`: the name the library always had for a classifier slid over an image
pyramid. It is a `ClassifierDetector` (`slidewin.pipeline.detector`) made from the parts a
`DetectorConfig` names (`slidewin.pipeline.parts`): by default a `WindowGrid` plan scored by a
`PatchScorer` (crops classified in batches) or a `DenseScorer` (one fully-convolutional pass per
level), and the config's `MergeConfig`; ``auto`` mode chooses dense when the classifier can be
rewritten and the settings allow it.
"""

from __future__ import annotations

from slidewin.core.targets import Targets
from slidewin.pipeline.config import DetectorConfig, Scoring
from slidewin.pipeline.detector import MAX_PLAN_BYTES, MAX_WINDOWS, ClassifierDetector
from slidewin.pipeline.parts import config_parts, dense_capable, dense_form, note_patch_mode, window_parts
from slidewin.runtime.classifier import Classifier

__all__ = ["MAX_PLAN_BYTES", "MAX_WINDOWS", "SlidingWindowDetector", "dense_capable", "dense_form",
           "from_config", "note_patch_mode", "window_parts"]


def from_config(detector: ClassifierDetector, classifier: Classifier, targets: Targets | None,
                config: DetectorConfig) -> None:
    """Initialise ``detector`` (a `ClassifierDetector`) from the parts ``config`` names."""
    regions, scorer = config_parts(classifier, config)
    ClassifierDetector.__init__(detector, regions, scorer, targets or Targets.all_labels(classifier.labels),
                                config.merge, config.scoring.min_score, config.scoring.rule is Scoring.TOP1)
    detector.config = config


class SlidingWindowDetector(ClassifierDetector):
    """A classifier slid over an image pyramid: the `ClassifierDetector` of a `DetectorConfig`.

    Args:
        classifier: the classifier to slide.
        targets: which classes to look for (default: every label of the classifier).
        config: the settings (default `DetectorConfig()`: the window grid, ``auto`` mode).

    Attributes:
        config: the `DetectorConfig`.
        mode: the mode in use, ``patch`` or ``dense`` (``auto`` resolved, see `Mode`).
        step: the step in use: the dense form's stride in dense mode, the configured step otherwise.
    """

    def __init__(self, classifier: Classifier, targets: Targets | None = None, config: DetectorConfig | None = None):
        from_config(self, classifier, targets, config or DetectorConfig())
