"""Self-describing ONNX models: the metadata contract shared by exporters and the runtime.

Every model slidewin writes takes one input named ``image``: RGB, NHWC, values 0-255, dtype
uint8 (float32 is accepted by the runtime too), preprocessing inside the graph. A classifier
outputs ``probabilities`` (N, num_labels); a region-proposal model outputs ``boxes``, ``scores``
and ``labels``. The graph's ``metadata_props`` hold the string keys below.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

FORMAT_VERSION = "1"


class ModelKind(str, Enum):
    CLASSIFIER = "classifier"
    REGION_PROPOSAL = "region-proposal"


RANDOM_WEIGHTS = "random"

_KNOWN_KEYS = frozenset((
    "slidewin_format", "kind", "input_size", "input_format", "labels", "label_set",
    "weights", "architecture", "source_framework", "precision", "feature_stride",
))


@dataclass(frozen=True)
class ModelMeta:
    """What an ONNX model says about itself.

    Attributes:
        kind: classifier or region-proposal.
        input_hw: (height, width) the network was trained at (the window size for a classifier;
            the letterbox canvas for a region-proposal model).
        labels: label names indexed by output class id.
        label_set: "imagenet-1k", "coco", or "custom".
        weights: "imagenet", "coco", "random", or "sha256:<hex>" of a weights file.
        architecture: e.g. "resnet50", "efficientnet-lite0", "fasterrcnn_resnet50_fpn_v2".
        source_framework: e.g. "keras 3.15.0 (tensorflow 2.21.0)".
        precision: "fp32", "fp16" or "int8".
        feature_stride: the network's output stride in input pixels (32 for ResNet50); 0 if unknown.
        extra: any further string keys, kept as they are.
    """

    kind: ModelKind
    input_hw: tuple[int, int]
    labels: tuple[str, ...]
    label_set: str
    weights: str
    architecture: str
    source_framework: str
    precision: str = "fp32"
    feature_stride: int = 0
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def is_random(self) -> bool:
        """True when the weights are untrained: speed figures are fine, accuracy figures are not."""
        return self.weights == RANDOM_WEIGHTS

    def to_props(self) -> dict[str, str]:
        props = {
            "slidewin_format": FORMAT_VERSION,
            "kind": self.kind.value,
            "input_size": f"{self.input_hw[0]}x{self.input_hw[1]}",
            "input_format": "RGB NHWC 0-255",
            "labels": json.dumps(list(self.labels)),
            "label_set": self.label_set,
            "weights": self.weights,
            "architecture": self.architecture,
            "source_framework": self.source_framework,
            "precision": self.precision,
            "feature_stride": str(self.feature_stride),
        }
        props.update(self.extra)
        return props

    @classmethod
    def from_props(cls, props: dict[str, str], source: str | Path = "model") -> "ModelMeta":
        """Parse metadata_props; raises ModelError naming the missing or malformed key."""
        from slidewin.errors import ModelError

        required = ("kind", "input_size", "labels", "weights")
        missing = [k for k in required if k not in props]
        if missing:
            raise ModelError(
                f"not a slidewin model: metadata lacks {', '.join(missing)} "
                "(export it with `slidewin export ...`)",
                source,
            )
        try:
            kind = ModelKind(props["kind"])
        except ValueError:
            raise ModelError(f"unknown model kind {props['kind']!r} in metadata", source) from None
        try:
            h, w = (int(v) for v in props["input_size"].lower().split("x"))
            if h < 1 or w < 1:
                raise ValueError
            labels = json.loads(props["labels"])
            if not isinstance(labels, list) or not all(isinstance(s, str) for s in labels):
                raise ValueError
            stride = int(props.get("feature_stride", "0") or 0)
        except ValueError:
            raise ModelError("malformed metadata (input_size, labels or feature_stride)", source) from None
        extra = {k: v for k, v in props.items() if k not in _KNOWN_KEYS}
        return cls(
            kind=kind,
            input_hw=(h, w),
            labels=tuple(labels),
            label_set=props.get("label_set", "custom"),
            weights=props["weights"],
            architecture=props.get("architecture", "unknown"),
            source_framework=props.get("source_framework", "unknown"),
            precision=props.get("precision", "fp32"),
            feature_stride=stride,
            extra=extra,
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


def sha256_of(path: str | Path) -> str:
    """``sha256:<hex>`` of a file, the weights origin recorded for a user's own weights."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return "sha256:" + h.hexdigest()
