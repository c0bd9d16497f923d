"""The model contract: what every ONNX file slidewin writes says about itself, in one place.

Exporters and the runtime both read these names; no other module spells them out.

Every model takes one input named `INPUT_NAME`: RGB, NHWC, values 0-255, dtype uint8 (float32
is accepted by the runtime too), preprocessing inside the graph. A classifier outputs
`PROBABILITIES` (N, num_labels); its dense rewrite outputs `PROBABILITY_MAP` (N, rows, cols,
num_labels); a region-proposal model outputs `REGION_OUTPUTS` (boxes, scores, labels). The
graph's ``metadata_props`` hold the `Key` entries, parsed into a `ModelMeta`.

A contract, not runtime code: it imports nothing heavy (no ONNX Runtime, no onnx, no OpenCV), so
`slidewin.core` and the exporters can read it without loading a runtime.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

__all__ = [
    "FEATURE_MAP", "FORMAT_VERSION", "INPUT_FORMAT", "INPUT_NAME", "PROBABILITIES", "PROBABILITY_MAP",
    "REGION_OUTPUTS", "Key", "LabelSet", "ModelKind", "ModelMeta", "Precision", "Weights", "read_props",
    "write_metadata",
]

FORMAT_VERSION = "1"

#: The one input of every slidewin model.
INPUT_NAME = "image"
#: A classifier's output: (N, num_labels) probabilities.
PROBABILITIES = "probabilities"
#: The dense rewrite's output: (N, rows, cols, num_labels), one cell per window position.
PROBABILITY_MAP = "probability_map"
#: The dense rewrite's second output: the last feature map (N, channels, rows, cols), one cell per
#: ``feature_stride`` pixels, before the classifier's pooling (for pooled proposal scoring).
FEATURE_MAP = "feature_map"
#: A region-proposal model's outputs, in this order: xyxy boxes, scores, label ids.
REGION_OUTPUTS = ("boxes", "scores", "labels")
#: What ``input_format`` records.
INPUT_FORMAT = "RGB NHWC 0-255"


class ModelKind(StrEnum):
    CLASSIFIER = "classifier"
    REGION_PROPOSAL = "region-proposal"


class LabelSet(StrEnum):
    """Which label list a model's outputs follow."""

    IMAGENET_1K = "imagenet-1k"
    COCO = "coco"
    CUSTOM = "custom"


class Precision(StrEnum):
    """Numeric precision of a model's weights and compute."""

    FP32 = "fp32"
    FP16 = "fp16"
    INT8 = "int8"


class Weights:
    """Values of the ``weights`` key; a user's own weights are ``sha256:<hex>`` of their file."""

    IMAGENET = "imagenet"
    COCO = "coco"
    RANDOM = "random"


class Key(StrEnum):
    """Keys of ``metadata_props``."""

    FORMAT = "slidewin_format"
    KIND = "kind"
    INPUT_SIZE = "input_size"
    INPUT_FORMAT = "input_format"
    LABELS = "labels"
    LABEL_SET = "label_set"
    WEIGHTS = "weights"
    ARCHITECTURE = "architecture"
    SOURCE_FRAMEWORK = "source_framework"
    PRECISION = "precision"
    FEATURE_STRIDE = "feature_stride"
    # how the graph preprocesses its uint8 RGB input: `slidewin.core.preprocessing.Preprocessing` as JSON
    PREPROCESS = "preprocess"
    # Keras exports of a weights file
    WEIGHTS_FILE_SHA256 = "weights_file_sha256"
    # int8 exports
    CALIBRATION = "calibration"
    QUANTIZATION = "quantization"
    # region-proposal models
    LETTERBOX = "letterbox"
    LETTERBOX_PAD_RGB = "letterbox_pad_rgb"
    BOX_SCORE_THRESH = "box_score_thresh"
    DETECTIONS_PER_IMAGE = "detections_per_image"
    RPN_PROPOSALS = "rpn_proposals"
    # the dense rewrite of a classifier
    DENSE = "dense"
    DENSE_POOL = "dense_pool"
    DENSE_SOURCE = "dense_source_sha256"
    DENSE_CONTEXT = "dense_context"
    DENSE_FORMAT = "dense_format"
    DENSE_SOURCE_FILES = "dense_source_files"


# Keys that become ModelMeta fields; every other key is kept in ``extra``.
_FIELD_KEYS = frozenset(k.value for k in (
    Key.FORMAT, Key.KIND, Key.INPUT_SIZE, Key.INPUT_FORMAT, Key.LABELS, Key.LABEL_SET, Key.WEIGHTS,
    Key.ARCHITECTURE, Key.SOURCE_FRAMEWORK, Key.PRECISION, Key.FEATURE_STRIDE,
))


@dataclass(frozen=True)
class ModelMeta:
    """What an ONNX model says about itself.

    Attributes:
        kind: classifier or region-proposal.
        input_hw: (height, width) the network was trained at (the window size for a classifier;
            the letterbox canvas for a region-proposal model).
        labels: label names indexed by output class id.
        label_set: a `LabelSet` value ("imagenet-1k", "coco", "custom").
        weights: a `Weights` value, or "sha256:<hex>" of a weights file.
        architecture: e.g. "resnet50", "efficientnet-lite0", "fasterrcnn_resnet50_fpn_v2".
        source_framework: e.g. "keras 3.15.0 (tensorflow 2.21.0)".
        precision: a `Precision` value.
        feature_stride: the network's output stride in input pixels (32 for ResNet50); 0 if unknown.
        extra: any further keys (`Key` values and others), kept as they are.
    """

    kind: ModelKind
    input_hw: tuple[int, int]
    labels: tuple[str, ...]
    label_set: str
    weights: str
    architecture: str
    source_framework: str
    precision: str = Precision.FP32.value
    feature_stride: int = 0
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def is_random(self) -> bool:
        """True when the weights are untrained: speed figures are fine, accuracy figures are not."""
        return self.weights == Weights.RANDOM

    @property
    def preprocessing(self):
        """The `Preprocessing` the graph applies, or None when the model predates the record."""
        from slidewin.core.preprocessing import Preprocessing

        text = self.extra.get(Key.PREPROCESS.value)
        if not text:
            return None
        try:
            return Preprocessing.from_json(text)
        except ValueError:
            return None

    def get(self, key: Key, default: str | None = None) -> str | None:
        """An ``extra`` key's value."""
        return self.extra.get(key.value, default)

    def to_props(self) -> dict[str, str]:
        props = {
            Key.FORMAT.value: FORMAT_VERSION,
            Key.KIND.value: self.kind.value,
            Key.INPUT_SIZE.value: f"{self.input_hw[0]}x{self.input_hw[1]}",
            Key.INPUT_FORMAT.value: INPUT_FORMAT,
            Key.LABELS.value: json.dumps(list(self.labels)),
            Key.LABEL_SET.value: self.label_set,
            Key.WEIGHTS.value: self.weights,
            Key.ARCHITECTURE.value: self.architecture,
            Key.SOURCE_FRAMEWORK.value: self.source_framework,
            Key.PRECISION.value: self.precision,
            Key.FEATURE_STRIDE.value: str(self.feature_stride),
        }
        props.update({(k.value if isinstance(k, Key) else k): v for k, v in self.extra.items()})
        return props

    @classmethod
    def from_props(cls, props: dict[str, str], source: str | Path = "model") -> "ModelMeta":
        """Parse metadata_props; raises ModelError naming the missing or malformed key."""
        from slidewin.errors import ModelError

        required = (Key.KIND, Key.INPUT_SIZE, Key.LABELS, Key.WEIGHTS)
        missing = [k.value for k in required if k.value not in props]
        if missing:
            raise ModelError(
                f"not a slidewin model: metadata lacks {', '.join(missing)} "
                "(wrap an ONNX classifier with `slidewin export onnx MODEL.onnx --labels FILE "
                "--preprocess PRESET --out OUT.onnx`, or see `slidewin export --help`)",
                source,
            )
        try:
            kind = ModelKind(props[Key.KIND])
        except ValueError:
            raise ModelError(f"unknown model kind {props[Key.KIND]!r} in metadata", source) from None
        try:
            h, w = (int(v) for v in props[Key.INPUT_SIZE].lower().split("x"))
            if h < 1 or w < 1:
                raise ValueError
            labels = json.loads(props[Key.LABELS])
            if not isinstance(labels, list) or not all(isinstance(s, str) for s in labels):
                raise ValueError
            stride = int(props.get(Key.FEATURE_STRIDE, "0") or 0)
        except ValueError:
            raise ModelError("malformed metadata (input_size, labels or feature_stride)", source) from None
        return cls(
            kind=kind,
            input_hw=(h, w),
            labels=tuple(labels),
            label_set=props.get(Key.LABEL_SET, LabelSet.CUSTOM.value),
            weights=props[Key.WEIGHTS],
            architecture=props.get(Key.ARCHITECTURE, "unknown"),
            source_framework=props.get(Key.SOURCE_FRAMEWORK, "unknown"),
            precision=props.get(Key.PRECISION, Precision.FP32.value),
            feature_stride=stride,
            extra={k: v for k, v in props.items() if k not in _FIELD_KEYS},
        )


def write_metadata(model, meta: ModelMeta) -> None:
    """Replace the slidewin keys of an ``onnx.ModelProto``'s metadata_props with ``meta``."""
    props = meta.to_props()
    keep = [p for p in model.metadata_props if p.key not in props]
    del model.metadata_props[:]
    for p in keep:
        model.metadata_props.add(key=p.key, value=p.value)
    for k, v in props.items():
        model.metadata_props.add(key=k, value=v)


def read_props(model) -> dict[str, str]:
    """``metadata_props`` of an ``onnx.ModelProto`` as a dict."""
    return {p.key: p.value for p in model.metadata_props}

