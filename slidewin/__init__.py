"""slidewin: turn an image classifier into an object detector on ONNX Runtime.

    from slidewin import Classifier, SlidingWindowDetector, DetectorConfig, Targets, load_image
    clf = Classifier("models/efficientnet-lite0.onnx")
    detector = SlidingWindowDetector(clf, Targets.parse("coco", clf.labels, clf.meta.label_set))
    dets = detector.detect(load_image("photo.jpg"))
    for box, score, name in zip(dets.xyxy, dets.scores, dets.label_names): ...

NMS lives in ``slidewin.nms`` (``nms``, ``batched_nms``). No training framework is imported here: TensorFlow and torch live in ``slidewin_export``.
"""

from slidewin.classifier import Classifier, Prediction
from slidewin.detections import Detections
from slidewin.detector import DetectorConfig, Mode, RunStats, SlidingWindowDetector
from slidewin.draw import draw_detections
from slidewin.errors import ImageError, ModelError, SlidewinError, UntrainedModelError
from slidewin.geometry import Level, plan_levels, to_image_coords, window_starts
from slidewin.images import load_image, save_image
from slidewin.loading import build_detector
from slidewin.model_meta import ModelKind, ModelMeta
from slidewin.targets import Targets

__version__ = "0.1.0"

__all__ = [
    "Classifier", "Prediction", "Detections", "DetectorConfig", "Mode", "RunStats", "SlidingWindowDetector",
    "draw_detections", "ImageError", "ModelError", "SlidewinError", "UntrainedModelError", "Level",
    "plan_levels", "to_image_coords", "window_starts", "load_image", "save_image", "build_detector",
    "ModelKind", "ModelMeta", "Targets", "__version__",
]
