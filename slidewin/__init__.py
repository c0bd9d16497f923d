"""slidewin: turn an image classifier into an object detector on ONNX Runtime.

    from slidewin import Classifier, SlidingWindowDetector, Targets, load_image
    clf = Classifier("models/efficientnet-lite0.onnx")
    detector = SlidingWindowDetector(clf, Targets.parse("coco", clf.labels, clf.meta.label_set))
    dets = detector.detect(load_image("photo.jpg"))
    for box, score, name in zip(dets.xyxy, dets.scores, dets.label_names): ...

The package follows the data flow:

- ``slidewin.core``: results and pure math: `Detections`, the `Detector` interface, box
  geometry, NMS and soft-NMS, merging, target classes;
- ``slidewin.runtime``: ONNX Runtime: the model contract, sessions, the classifier, its dense
  rewrite, region-proposal models;
- ``slidewin.pipeline``: detectors built from those: the sliding-window detector, its config,
  the factory that opens any model as a detector;
- ``slidewin.io``: images in and out, drawing, files;
- ``slidewin.apps``: folder runs, comparison, COCO evaluation and reports;
- ``slidewin.cli``: the command line.

No training framework is imported here: TensorFlow and torch live in ``slidewin_export``.
"""

from slidewin.core.detections import Detections
from slidewin.core.detector import Detector, RunStats, Stage
from slidewin.core.geometry import Level, plan_levels, to_image_coords, window_starts
from slidewin.core.targets import Targets
from slidewin.errors import ImageError, ModelError, SlidewinError, UntrainedModelError
from slidewin.io.drawing import draw_detections
from slidewin.io.images import load_image, save_image
from slidewin.pipeline.config import DetectorConfig, Mode
from slidewin.pipeline.factory import build_detector
from slidewin.pipeline.sliding import SlidingWindowDetector
from slidewin.runtime.classifier import Classifier, Prediction
from slidewin.runtime.model_meta import ModelKind, ModelMeta

__version__ = "0.1.0"

__all__ = [
    "Classifier", "Prediction", "Detections", "Detector", "DetectorConfig", "Mode", "RunStats", "Stage",
    "SlidingWindowDetector", "draw_detections", "ImageError", "ModelError", "SlidewinError",
    "UntrainedModelError", "Level", "plan_levels", "to_image_coords", "window_starts", "load_image",
    "save_image", "build_detector", "ModelKind", "ModelMeta", "Targets", "__version__",
]
