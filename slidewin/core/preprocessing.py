"""Preprocessing, stated: how a classifier wants its pixels, as data rather than as code.

Every slidewin model takes uint8 RGB pixels and does its own preprocessing inside the graph; the
exporter builds those nodes from a `Preprocessing`, records it in the model's metadata
(``preprocess``), and checks parity by feeding the source framework `Preprocessing.apply`'s
output. The runtime only reads it back to say what a model does (``classify``/``detect`` print
it in their header line).

One formula covers every convention in use::

    x = pixels[..., ::-1] if bgr else pixels     # float32, 0-255
    x = (x * scale - mean) / std                 # per channel, in the model's channel order

The presets carry Keras' own names for the three ImageNet conventions
(``keras.applications.imagenet_utils.preprocess_input(mode=...)``), plus ``raw`` and ``unit``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocessing:
    """``x = (pixels[, BGR] * scale - mean) / std``, per channel.

    Attributes:
        name: a preset's name (``caffe``, ``tf``, ``torch``, ``raw``, ``unit``) or ``custom``.
        scale: multiplies the 0-255 pixel values first (``1/255`` for [0, 1]).
        mean: subtracted per channel after scaling, in the model's channel order (BGR when ``bgr``).
        std: divides per channel after the mean.
        bgr: the model takes its channels as BGR.
    """

    name: str
    scale: float = 1.0
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    bgr: bool = False

    def __post_init__(self) -> None:
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ValueError(f"mean and std need 3 values each (got {len(self.mean)} and {len(self.std)})")
        values = (self.scale, *self.mean, *self.std)
        if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in values):
            raise ValueError("scale, mean and std must be finite numbers")
        if self.scale == 0 or any(s == 0 for s in self.std):
            raise ValueError("scale and std must be non-zero")

    @property
    def is_identity(self) -> bool:
        """True when the model takes the 0-255 RGB pixels as they are (``raw``)."""
        return not self.bgr and self.scale == 1.0 and self.mean == (0.0, 0.0, 0.0) and self.std == (1.0, 1.0, 1.0)

    def apply(self, images: np.ndarray) -> np.ndarray:
        """The same arithmetic in NumPy, float32 (the reference the parity checks feed frameworks).

        Args:
            images: uint8 or float ``(..., H, W, 3)`` RGB, 0-255.

        Returns:
            float32 ``(..., H, W, 3)``, channels in the model's order.
        """
        x = np.asarray(images, dtype=np.float32)
        if self.bgr:
            x = x[..., ::-1]
        x = x * np.float32(self.scale) - np.asarray(self.mean, np.float32)
        return np.ascontiguousarray(x / np.asarray(self.std, np.float32), dtype=np.float32)

    def to_json(self) -> str:
        return json.dumps({"name": self.name, "scale": self.scale, "mean": list(self.mean),
                           "std": list(self.std), "bgr": self.bgr}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "Preprocessing":
        """Parse `to_json`'s output; ValueError on anything else."""
        try:
            d = json.loads(text)
            return cls(name=str(d["name"]), scale=float(d["scale"]), mean=tuple(float(v) for v in d["mean"]),
                       std=tuple(float(v) for v in d["std"]), bgr=bool(d["bgr"]))
        except (TypeError, KeyError, ValueError, json.JSONDecodeError) as e:
            raise ValueError(f"malformed preprocessing record: {e}") from None

    def describe(self) -> str:
        """One short phrase for headers: ``torch (RGB x/255, mean 0.485,0.456,0.406, std ...)``."""
        parts = ["BGR" if self.bgr else "RGB"]
        if self.scale != 1.0:
            inv = 1 / self.scale  # x/255 and x/127.5 read better than x0.00392157
            parts.append(f"x/{_num(inv)}" if abs(4 * inv - round(4 * inv)) < 1e-6 else f"x{_num(self.scale)}")
        if self.mean != (0.0, 0.0, 0.0):
            parts.append("mean " + ",".join(_num(v) for v in self.mean))
        if self.std != (1.0, 1.0, 1.0):
            parts.append("std " + ",".join(_num(v) for v in self.std))
        return f"{self.name} ({' '.join(parts)})"


def _num(v: float) -> str:
    return f"{v:.6g}"


#: The named conventions. ``caffe``, ``tf`` and ``torch`` are Keras' names for the ImageNet ones.
PRESETS: dict[str, Preprocessing] = {
    # Keras ResNet/VGG: BGR, ImageNet mean subtracted on 0-255, no scaling.
    "caffe": Preprocessing("caffe", 1.0, (103.939, 116.779, 123.68), (1.0, 1.0, 1.0), bgr=True),
    # Keras MobileNet/Inception/Xception: [-1, 1].
    "tf": Preprocessing("tf", 1 / 127.5, (1.0, 1.0, 1.0)),
    # torchvision and most torch models: ImageNet mean/std on [0, 1].
    "torch": Preprocessing("torch", 1 / 255, _IMAGENET_MEAN, _IMAGENET_STD),
    # 0-255 float as they are (Keras EfficientNet/ConvNeXt/RegNet, which normalise inside).
    "raw": Preprocessing("raw"),
    # [0, 1].
    "unit": Preprocessing("unit", 1 / 255),
}


def preset(name: str) -> Preprocessing:
    """A preset by name; ValueError listing the presets for an unknown one."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preprocessing {name!r}; choose one of {', '.join(PRESETS)} "
                         "or give --mean/--std/--scale/--bgr") from None
