"""Opening a model file as a detector: the composition root.

The model's own metadata decides: a classifier becomes a `ClassifierDetector` from the parts a
`DetectorConfig` names (regions x scorer x merge, `classifier_detector`), a region-proposal model
a `FasterRCNNDetector`.
"""

from __future__ import annotations

from pathlib import Path

from slidewin.core.contract import LabelSet, ModelKind
from slidewin.core.detector import Detector
from slidewin.core.targets import Targets, class_items
from slidewin.errors import ModelError
from slidewin.pipeline.config import DetectorConfig, WindowGridConfig
from slidewin.pipeline.detector import ClassifierDetector
from slidewin.pipeline.sliding import from_config
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


def default_classes(meta) -> str | None:
    """What ``slidewin detect`` looks for without ``--classes``: the COCO groups (``"coco"``) for
    an ImageNet-1k classifier, whose 1,000 labels name sea slugs and freight cars that everyday
    photos do not hold; every label (None) for any other model."""
    if meta.kind is ModelKind.CLASSIFIER and meta.label_set == LabelSet.IMAGENET_1K:
        return "coco"
    return None


def model_classes(path: str | Path, classes=None):
    """``classes`` as given, else what ``slidewin detect`` looks for in this model (`default_classes`)."""
    if classes is not None:
        return classes
    info, _ = model_info(path)
    return default_classes(info.meta(path))


def build_detector(path: str | Path, config: DetectorConfig | None = None, classes=None,
                   device: Device | str = Device.AUTO, threads: int | None = None,
                   proposals: DetectorConfig | None = None) -> Detector:
    """A detector for any slidewin model, chosen by the model's metadata ``kind``.

    A classifier becomes a `ClassifierDetector` looking for ``classes`` (see `Targets.parse`; a
    function of the model's `ModelMeta`, such as `default_classes`, chooses them by the model),
    made from the parts ``config`` names (`classifier_detector`). A region-proposal model becomes
    a `FasterRCNNDetector` keeping ``classes`` (label names, see `region_classes`) scoring at least
    ``config.scoring.min_score``; the other settings of ``config`` do not apply to it.

    ``proposals`` is the older spelling of a config whose regions are selective search (what
    ``ProposalConfig(...)`` gives): where it has such regions, it is used instead of ``config``.
    """
    if proposals is not None and not isinstance(proposals.regions, WindowGridConfig):
        config = proposals
    settings = SessionSettings(device=device, threads=threads)
    info, session = model_info(path, settings)  # no session when the file is known (see `model_info`)
    meta = info.meta(path)
    if callable(classes):
        classes = classes(meta)
    if meta.kind is ModelKind.CLASSIFIER:
        clf = Classifier(path, device, threads, session=session, info=info)
        targets = Targets.parse(classes, clf.labels, clf.meta.label_set)
        return classifier_detector(clf, targets, config)
    if meta.kind is ModelKind.REGION_PROPOSAL:
        from slidewin.runtime.region import FasterRCNNDetector

        min_score = (config or DetectorConfig()).scoring.min_score
        return FasterRCNNDetector(path, min_score=min_score, classes=region_classes(classes),
                                  device=device, threads=threads, session=session)
    raise ModelError(f"{meta.kind.value} models are not supported yet", path)


def classifier_detector(classifier: Classifier, targets: Targets | None = None,
                        config: DetectorConfig | None = None) -> ClassifierDetector:
    """The `ClassifierDetector` of ``config`` (default `DetectorConfig()`): its regions (the window
    grid, or selective search), its scorer (patch or dense for the grid's plan, crops or pooled for
    boxes; see `slidewin.pipeline.parts`) and its merge. ``detector.config`` is the config. Its class
    keeps the name such a detector always had: `SlidingWindowDetector` for the grid's plan,
    `ProposalDetector` for boxes."""
    from slidewin.pipeline.proposal import ProposalDetector
    from slidewin.pipeline.sliding import SlidingWindowDetector

    config = config or DetectorConfig()
    plan = config.scoring.scores_plan and not config.searches
    kind = SlidingWindowDetector if plan else ProposalDetector
    detector = kind.__new__(kind)
    from_config(detector, classifier, targets, config)
    return detector


def settings_parts(config: DetectorConfig | None, proposals: DetectorConfig | None = None) -> dict[str, dict]:
    """The settings a classifier detector uses, in its three parts (``regions``, ``scoring``,
    ``merge``): `DetectorConfig.record` of ``proposals`` where its regions are selective search
    (as `build_detector` takes it), else of ``config`` (default `DetectorConfig()`)."""
    if proposals is not None and not isinstance(proposals.regions, WindowGridConfig):
        config = proposals
    return (config or DetectorConfig()).record()
