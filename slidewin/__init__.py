"""slidewin: turn an image classifier into an object detector on ONNX Runtime.

    from slidewin import Classifier, SlidingWindowDetector, Targets, load_image
    clf = Classifier("models/efficientnet-lite0.onnx")
    detector = SlidingWindowDetector(clf, Targets.parse("coco", clf.labels, clf.meta.label_set))
    dets = detector.detect(load_image("photo.jpg"))
    for box, score, name in zip(dets.xyxy, dets.scores, dets.label_names): ...

The package follows the data flow:

- ``slidewin.core``: results, pure math and the model contract: `Detections`, the `Detector` interface, box
  geometry, NMS and soft-NMS, merging, target classes;
- ``slidewin.runtime``: ONNX Runtime: sessions, the classifier, its dense
  rewrite, region-proposal models;
- ``slidewin.pipeline``: detectors built from those: one classifier detector from parts
  (regions, scorer, merge), its config in the same three parts, the factory that opens any model
  as a detector;
- ``slidewin.io``: images in and out, drawing, files;
- ``slidewin.apps``: folder runs, comparison, COCO evaluation and reports;
- ``slidewin.cli``: the command line.

No training framework is imported here: TensorFlow and torch live in ``slidewin_export``.
"""

from importlib import import_module

__version__ = "0.1.0"

# The public API, imported on first use (PEP 562): `import slidewin` costs nothing, and a command
# loads only what it runs (`slidewin classify` never loads the detectors).
_EXPORTS = {
    "Box": "slidewin.core.detections",
    "Detections": "slidewin.core.detections",
    "Detector": "slidewin.core.detector",
    "RunStats": "slidewin.core.detector",
    "Stage": "slidewin.core.detector",
    "Level": "slidewin.core.geometry",
    "plan_levels": "slidewin.core.geometry",
    "to_image_coords": "slidewin.core.geometry",
    "window_starts": "slidewin.core.geometry",
    "Targets": "slidewin.core.targets",
    "ImageError": "slidewin.errors",
    "ModelError": "slidewin.errors",
    "SlidewinError": "slidewin.errors",
    "UntrainedModelError": "slidewin.errors",
    "draw_detections": "slidewin.io.drawing",
    "as_rgb": "slidewin.io.images",
    "load_image": "slidewin.io.images",
    "save_image": "slidewin.io.images",
    "DetectorConfig": "slidewin.pipeline.config",
    "WindowGridConfig": "slidewin.pipeline.config",
    "SelectiveSearchConfig": "slidewin.pipeline.config",
    "ScoringConfig": "slidewin.pipeline.config",
    "MergeConfig": "slidewin.core.merge",
    "Mode": "slidewin.pipeline.config",
    "Preset": "slidewin.pipeline.config",
    "preset": "slidewin.pipeline.config",
    "build_detector": "slidewin.pipeline.factory",
    "ClassifierDetector": "slidewin.pipeline.detector",
    "SlidingWindowDetector": "slidewin.pipeline.sliding",
    "ProposalConfig": "slidewin.pipeline.config",
    "ProposalDetector": "slidewin.pipeline.proposal",
    "FasterRCNNDetector": "slidewin.runtime.region",
    "Classifier": "slidewin.runtime.classifier",
    "Prediction": "slidewin.runtime.classifier",
    "ModelKind": "slidewin.core.contract",
    "ModelMeta": "slidewin.core.contract",
}

__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'slidewin' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
