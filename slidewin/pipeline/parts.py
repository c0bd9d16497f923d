"""The parts a `DetectorConfig` names, made for one classifier: regions and a scorer.

- `window_parts`: the `WindowGrid` and a plan scorer (`PatchScorer`, or `DenseScorer` where the
  config's mode asks for the dense form or allows it, ``auto``);
- `box_parts`: selective search (or the grid's windows as boxes) and a box scorer (`CropScorer`,
  or `PooledScorer` on the dense form's shared features, with the ring contrast);
- `config_parts`: whichever of the two the config's scorer calls for.

The merge part is the config's `MergeConfig` as it is. `slidewin.pipeline.factory` puts the parts
together into a `ClassifierDetector`.
"""

from __future__ import annotations

from slidewin.errors import SlidewinError
from slidewin.pipeline.config import DetectorConfig, NetworkStride, Scorer, WindowGridConfig
from slidewin.pipeline.regions import SelectiveSearch, WindowGrid
from slidewin.pipeline.scorers import CropScorer, DenseScorer, PatchScorer, PooledScorer
from slidewin.runtime.classifier import Classifier

__all__ = ["box_parts", "config_parts", "dense_capable", "dense_form", "note_patch_mode", "window_parts"]


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

    grid, s, clf = config.regions, config.scoring, classifier
    if s.scorer is Scorer.PATCH:
        return None
    auto = s.scorer is Scorer.AUTO
    stated = clf.meta.feature_stride
    if auto and (not grid.align or (stated and not _follows_stride(grid.step) and set(_steps(grid.step)) != {stated})):
        return None  # the user's settings: patch mode without building anything
    try:
        dense = DenseClassifier(clf, max_tile=s.dense_tile)
    except UnsupportedGraph as e:
        if auto:
            note_patch_mode(clf.path, e)
            return None
        raise UnsupportedGraph(f"{e.problem}; use --mode patch", e.path or clf.path) from None
    if not _follows_stride(grid.step) and set(_steps(grid.step)) != {dense.stride}:
        if auto:
            return None
        got = str(grid.step) if isinstance(grid.step, tuple) else f"{grid.step:g}"
        raise SlidewinError(f"dense mode steps by the network stride: --stride must be {dense.stride}, got {got}")
    return dense


def _grid(classifier: Classifier, grid: WindowGridConfig, step) -> WindowGrid:
    return WindowGrid(classifier.input_hw, grid.windows_hw, step, grid.scale, grid.max_levels, grid.align,
                      grid.reference_side)


def window_parts(classifier: Classifier, config: DetectorConfig) -> tuple[WindowGrid, PatchScorer | DenseScorer]:
    """The regions and scorer of a config that scores the grid's plan: the grid, stepping by the
    dense form's stride in dense mode (the configured step otherwise), and the patch or dense scorer."""
    dense = dense_form(classifier, config)
    grid = config.regions
    if dense is None:
        step = float(grid.step) if _follows_stride(grid.step) else grid.step
        return _grid(classifier, grid, step), PatchScorer(classifier, config.scoring.batch_size)
    return _grid(classifier, grid, dense.stride), DenseScorer(dense)


def box_parts(classifier: Classifier, config: DetectorConfig):
    """The regions and scorer of a config that scores boxes: selective search (or every window of
    the grid, as boxes), and the crops or pooled scorer."""
    r, s = config.regions, config.scoring
    if isinstance(r, WindowGridConfig):
        regions = _grid(classifier, r, float(r.step) if not isinstance(r.step, tuple) else r.step)
    else:
        regions = SelectiveSearch(r.method, r.min_size, r.max_proposals)
    if config.scorer is Scorer.POOLED:
        from slidewin.runtime.dense import DenseClassifier

        ring = s.ring > 0 and s.contrast > 0  # the ring's contrast (`ScoringConfig.uses_ring`), auto included
        scorer = PooledScorer(DenseClassifier(classifier), s.context, s.max_scale, s.level_factor, s.fit,
                              s.ring if ring else 0.0, s.contrast if ring else 0.0)
    else:
        scorer = CropScorer(classifier, s.context, s.batch_size)
    return regions, scorer


def config_parts(classifier: Classifier, config: DetectorConfig):
    """The regions and scorer a `DetectorConfig` names, for this classifier."""
    if config.scoring.scores_plan:
        if config.searches:  # DetectorConfig refuses patch and dense here; auto means pooled
            return box_parts(classifier, config)
        return window_parts(classifier, config)
    return box_parts(classifier, config)

