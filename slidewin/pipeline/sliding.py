"""`SlidingWindowDetector`: a classifier slid over an image pyramid, returning `Detections`.

It is a `ClassifierDetector` (`slidewin.pipeline.detector`) whose parts a `DetectorConfig` names:
a `WindowGrid` plan scored by a `PatchScorer` (crops classified in batches) or a `DenseScorer`
(one fully-convolutional pass per level), and the config's `MergeConfig`. `window_parts` makes
those parts; ``auto`` mode chooses dense when the classifier can be rewritten and the settings
allow it.
"""

from __future__ import annotations

from slidewin.core.merge import MergeConfig
from slidewin.core.targets import Targets
from slidewin.errors import SlidewinError
from slidewin.pipeline.config import DetectorConfig, Mode, NetworkStride, Scoring
from slidewin.pipeline.detector import MAX_PLAN_BYTES, MAX_WINDOWS, ClassifierDetector
from slidewin.pipeline.regions import WindowGrid
from slidewin.pipeline.scorers import DenseScorer, PatchScorer
from slidewin.runtime.classifier import Classifier

__all__ = ["MAX_PLAN_BYTES", "MAX_WINDOWS", "SlidingWindowDetector", "dense_capable", "merge_config",
           "window_parts"]


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


def dense_form(classifier: Classifier, config: DetectorConfig):
    """The classifier's dense form when the config's mode asks for it (or allows it, ``auto``).

    ``auto`` runs patch mode for settings dense mode cannot follow (a step other than the
    network stride, unaligned levels), and for graphs the rewrite does not know, saying why
    in one line (`note_patch_mode`). ``dense`` refuses both in one line. A dense form that
    cannot be written is an error in both."""
    from slidewin.runtime.dense import DenseClassifier
    from slidewin.runtime.dense_graph import UnsupportedGraph

    c, clf = config, classifier
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


def window_parts(classifier: Classifier, config: DetectorConfig) -> tuple[WindowGrid, PatchScorer | DenseScorer]:
    """The regions and scorer of a `DetectorConfig`: the grid, stepping by the dense form's stride
    in dense mode (the configured step otherwise), and the patch or dense scorer."""
    dense = dense_form(classifier, config)
    if dense is None:
        step = float(config.step) if _follows_stride(config.step) else config.step
        return WindowGrid.from_config(config, classifier.input_hw, step), PatchScorer(classifier, config.batch_size)
    return WindowGrid.from_config(config, classifier.input_hw, dense.stride), DenseScorer(dense)


def merge_config(config) -> MergeConfig:
    """The merge part of a `DetectorConfig` (or of any config with ``merge`` and ``iou``)."""
    from slidewin.core.merge import SOFT_SIGMA

    return MergeConfig(config.merge, config.iou, ios=getattr(config, "ios", 0.6),
                       soft_sigma=getattr(config, "soft_sigma", SOFT_SIGMA))


class SlidingWindowDetector(ClassifierDetector):
    """A classifier slid over an image pyramid: the `ClassifierDetector` of a `DetectorConfig`
    (`window_parts`, `merge_config`), kept as the name the library always had.

    Args:
        classifier: the classifier to slide.
        targets: which classes to look for (default: every label of the classifier).
        config: window sizes, step, pyramid, thresholds, mode.

    Attributes:
        config: the `DetectorConfig`.
        mode: the mode in use, ``patch`` or ``dense`` (``auto`` resolved, see `Mode`).
        step: the step in use: the dense form's stride in dense mode, the configured step otherwise.
    """

    def __init__(self, classifier: Classifier, targets: Targets | None = None, config: DetectorConfig | None = None):
        self.config = config or DetectorConfig()
        regions, scorer = window_parts(classifier, self.config)
        super().__init__(regions, scorer, targets or Targets.all_labels(classifier.labels),
                         merge_config(self.config), self.config.min_score, self.config.scoring is Scoring.TOP1)
