"""Opening a model file as a detector: the composition root.

The model's own metadata decides: a classifier becomes a `ClassifierDetector` from parts
(regions x scorer x merge, `classifier_detector`), a region-proposal model a `FasterRCNNDetector`.
"""

from __future__ import annotations

from pathlib import Path

from slidewin.core.contract import ModelKind
from slidewin.core.detector import Detector
from slidewin.core.targets import Targets, class_items
from slidewin.errors import ModelError
from slidewin.pipeline.config import DetectorConfig
from slidewin.pipeline.detector import ClassifierDetector
from slidewin.pipeline.proposal import ProposalDetector
from slidewin.pipeline.sliding import SlidingWindowDetector
from slidewin.proposals.generators import ProposalMethod
from slidewin.runtime.classifier import Classifier
from slidewin.runtime.sessions import Device, SessionSettings, model_info

#: What --classes names "every label" with, for a region-proposal model.
_EVERY_LABEL = ("all", "coco")


def region_classes(classes) -> list[str] | None:
    """A ``--classes`` value for a region-proposal model: label names, or None for every label
    (None, "all" or "coco"); comma-separated or as a list (e.g. ``"person,traffic light"``)."""
    names = class_items(classes)
    if not names or (len(names) == 1 and names[0].lower() in _EVERY_LABEL):
        return None
    return names


def build_detector(path: str | Path, config: DetectorConfig | None = None, classes=None,
                   device: Device | str = Device.AUTO, threads: int | None = None,
                   proposals=None) -> Detector:
    """A detector for any slidewin model, chosen by the model's metadata ``kind``.

    A classifier becomes a `ClassifierDetector` looking for ``classes`` (see `Targets.parse`),
    made by `classifier_detector`. A region-proposal model becomes a `FasterRCNNDetector`
    keeping ``classes`` (label names, see `region_classes`) scoring at least ``config.min_score``;
    the sliding-window settings of ``config`` do not apply to it.
    """
    settings = SessionSettings(device=device, threads=threads)
    info, session = model_info(path, settings)  # no session when the file is known (see `model_info`)
    meta = info.meta(path)
    if meta.kind is ModelKind.CLASSIFIER:
        clf = Classifier(path, device, threads, session=session, info=info)
        targets = Targets.parse(classes, clf.labels, clf.meta.label_set)
        return classifier_detector(clf, targets, config, proposals)
    if meta.kind is ModelKind.REGION_PROPOSAL:
        from slidewin.runtime.region import FasterRCNNDetector

        min_score = (config or DetectorConfig()).min_score
        return FasterRCNNDetector(path, min_score=min_score, classes=region_classes(classes),
                                  device=device, threads=threads, session=session)
    raise ModelError(f"{meta.kind.value} models are not supported yet", path)



def classifier_detector(classifier: Classifier, targets: Targets | None = None, config: DetectorConfig | None = None,
                        proposals=None) -> ClassifierDetector:
    """The `ClassifierDetector` of the settings: ``proposals`` (a `ProposalConfig` whose method is
    not ``windows``) gives selective-search regions and a box scorer (`ProposalDetector`), with
    that config's thresholds and merge; otherwise ``config`` gives the window grid and a patch or
    dense scorer (`SlidingWindowDetector`). The other config plays no part: the CLI refuses its
    flags (`slidewin.cli.options.check_parts`)."""
    if proposals is not None and proposals.method is not ProposalMethod.WINDOWS:
        return ProposalDetector(classifier, targets, proposals, window_config=config)
    return SlidingWindowDetector(classifier, targets, config)


#: The fields of each config that make each part of a classifier detector (what `settings_parts`
#: records): the window grid with its patch/dense scorer, and selective search with a box scorer
#: (the pooled scorer's own fields only under pooled scoring, the batch only under crops).
_GRID_PARTS = {"regions": ("windows_hw", "step", "scale", "max_levels", "align", "reference_side"),
               "scoring": ("mode", "batch_size", "dense_tile", "min_score", "scoring"),
               "merge": ("merge", "iou", "ios", "soft_sigma")}
_SEARCH_PARTS = {"regions": ("method", "min_size", "max_proposals"),
                 "scoring": ("scoring", "context", "min_score"),
                 "merge": ("merge", "iou")}
_POOLED_FIELDS = ("max_scale", "level_factor", "fit", "ring", "contrast")


def settings_parts(config: DetectorConfig | None, proposals=None) -> dict[str, dict]:
    """The settings a classifier detector uses, in its three parts (``regions``, ``scoring``,
    ``merge``), each a dict of config fields: those of ``proposals`` (a `ProposalConfig` whose
    method is not ``windows``) or else of ``config`` (default `DetectorConfig()`), never both."""
    from slidewin.proposals.scoring import ProposalScoring

    if proposals is not None and proposals.method is not ProposalMethod.WINDOWS:
        source, parts = proposals, {k: list(v) for k, v in _SEARCH_PARTS.items()}
        parts["scoring"] += _POOLED_FIELDS if proposals.scoring is ProposalScoring.POOLED else ("batch_size",)
    else:
        source, parts = config or DetectorConfig(), _GRID_PARTS
    return {part: {name: getattr(source, name) for name in names} for part, names in parts.items()}
