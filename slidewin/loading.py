"""Opening a model file: the runtime dispatches on the model's own metadata."""

from __future__ import annotations

from pathlib import Path

from slidewin.classifier import Classifier
from slidewin.detector import DetectorConfig, SlidingWindowDetector
from slidewin.errors import ModelError
from slidewin.model_meta import ModelKind
from slidewin.session import Device, create_session, read_meta
from slidewin.targets import Targets

_ALL_CLASSES = ("", "all", "coco")


def region_classes(classes) -> list[str] | None:
    """A ``--classes`` value for a region-proposal model: None, "all" or "coco" mean every label;
    otherwise label names, comma-separated or as a list (e.g. ``"person,traffic light"``)."""
    if classes is None:
        return None
    items = classes.split(",") if isinstance(classes, str) else list(classes)
    names = [str(c).strip() for c in items if str(c).strip()]
    if not names or (len(names) == 1 and names[0].lower() in _ALL_CLASSES):
        return None
    return names


def build_detector(path: str | Path, config: DetectorConfig | None = None, classes=None,
                   device: Device | str = Device.AUTO, threads: int | None = None):
    """A detector for any slidewin model, chosen by the model's metadata ``kind``.

    A classifier becomes a `SlidingWindowDetector` looking for ``classes`` (see `Targets.parse`).
    A region-proposal model becomes a `RegionProposalDetector` keeping ``classes`` (label names,
    see `region_classes`) scoring at least ``config.min_score``; the sliding-window settings of
    ``config`` do not apply to it.
    """
    session = create_session(path, device, threads)
    meta = read_meta(session, path)
    if meta.kind is ModelKind.CLASSIFIER:
        clf = Classifier(path, session=session)
        return SlidingWindowDetector(clf, Targets.parse(classes, clf.labels, clf.meta.label_set), config)
    if meta.kind is ModelKind.REGION_PROPOSAL:
        from slidewin.region import RegionProposalDetector

        min_score = config.min_score if config is not None else 0.5
        return RegionProposalDetector(path, min_score=min_score, classes=region_classes(classes), session=session)
    raise ModelError(f"{meta.kind.value} models are not supported yet", path)
