"""Opening a model file: the runtime dispatches on the model's own metadata."""

from __future__ import annotations

from pathlib import Path

from slidewin.classifier import Classifier
from slidewin.detector import DetectorConfig, SlidingWindowDetector
from slidewin.errors import ModelError
from slidewin.model_meta import ModelKind
from slidewin.session import Device, create_session, read_meta
from slidewin.targets import Targets


def build_detector(path: str | Path, config: DetectorConfig | None = None, classes=None,
                   device: Device | str = Device.AUTO, threads: int | None = None):
    """A detector for any slidewin model, chosen by the model's metadata ``kind``.

    A classifier becomes a `SlidingWindowDetector` looking for ``classes`` (see `Targets.parse`).
    """
    session = create_session(path, device, threads)
    meta = read_meta(session, path)
    if meta.kind is ModelKind.CLASSIFIER:
        clf = Classifier(path, session=session)
        return SlidingWindowDetector(clf, Targets.parse(classes, clf.labels, clf.meta.label_set), config)
    raise ModelError(f"{meta.kind.value} models are not supported yet", path)
