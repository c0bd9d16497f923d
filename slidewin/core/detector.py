"""The `Detector` interface every detector implements, and what a run reports (`RunStats`).

The CLI, evaluation, comparison, folder runs and the Ray engine talk only to this interface:

    dets = detector.detect(image)       # Detections in the image's pixels
    detector.last_stats                 # RunStats of that call: counts and seconds per stage
    detector.labels, detector.meta      # what class_ids index; what the model says about itself

Work that does not need the network (region proposals) can run ahead, in another thread, while
the network works on the previous image: ``prepared = detector.prepare(image)`` there, then
``detector.detect(image, prepared)``. Detectors with nothing to prepare return None.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from slidewin.core.detections import Detections

if TYPE_CHECKING:
    from slidewin.core.contract import ModelMeta


class Stage(StrEnum):
    """Names of the timed stages in `RunStats.seconds` (and the ``seconds`` of JSON records)."""

    DECODE = "decode"            # reading and decoding the image (folder runs, records)
    PROPOSALS = "proposals"      # generating candidate boxes (proposal detectors)
    PYRAMID = "pyramid"          # resizing levels and cutting windows or crops
    LETTERBOX = "letterbox"      # fitting the image into a region-proposal model's canvas
    INFERENCE = "inference"      # inside ONNX Runtime
    SCORING = "scoring"          # probabilities -> target scores -> candidates
    NMS = "nms"                  # merging candidates into detections
    POSTPROCESS = "postprocess"  # a region-proposal model's boxes back to the image


class Unit(StrEnum):
    """What `RunStats.windows` counts."""

    WINDOWS = "windows"
    PROPOSALS = "proposals"


@dataclass
class RunStats:
    """What one detection run did, for records, tables and benchmarks.

    Attributes:
        levels: pyramid levels (1 for a single canvas).
        windows: candidate regions the classifier or model scored, counted in ``unit``.
        candidates: (region, class) pairs that passed the score threshold, before merging.
        unit: what ``windows`` counts.
        seconds: seconds per `Stage`, in the order the stages ran.
        regions: float32 (windows, 4) xyxy the regions scored, in image pixels, in the order
            their generator ranks them (windows: plan order); None when the model does not
            expose them (a region-proposal network's proposals live inside its graph).
    """

    levels: int = 0
    windows: int = 0
    candidates: int = 0
    unit: Unit = Unit.WINDOWS
    seconds: dict[str, float] = field(default_factory=dict)
    regions: np.ndarray | None = field(default=None, repr=False)

    @classmethod
    def for_stages(cls, *stages: Stage, **kwargs) -> "RunStats":
        """Stats with the given stages at 0 s, in that order."""
        return cls(seconds={s.value: 0.0 for s in stages}, **kwargs)

    def add(self, stage: Stage, seconds: float) -> None:
        self.seconds[stage.value] = self.seconds.get(stage.value, 0.0) + seconds

    @property
    def total(self) -> float:
        return sum(self.seconds.values())


@runtime_checkable
class Detector(Protocol):
    """Anything that turns an image into `Detections`.

    Attributes:
        labels: the names ``class_ids`` of the result index into.
        meta: the model's own description (`ModelMeta`).
        last_stats: `RunStats` of the latest `detect` call (None before the first).
        providers: the ONNX Runtime execution providers it runs on, in preference order.
    """

    # Annotations, not properties: a class that subclasses `Detector` may set these in
    # ``__init__`` or define them as properties.
    labels: tuple[str, ...]
    meta: "ModelMeta"
    last_stats: RunStats | None
    providers: list[str]

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        # A class that subclasses Detector takes every image `as_rgb` takes, in ``detect`` and
        # ``prepare``, without a line of its own (protocols that extend this one are left alone).
        if not cls.__dict__.get("_is_protocol", False):
            for name in ("detect", "prepare"):
                fn = cls.__dict__.get(name)
                if callable(fn) and not getattr(fn, "_accepts_images", False):
                    setattr(cls, name, accepts_images(fn))

    def prepare(self, image: np.ndarray) -> object | None:
        """What `detect` can be handed for this image, computed without the network (thread-safe)."""
        return None

    def detect(self, image: np.ndarray, prepared: object | None = None) -> Detections:
        """Detect in an image; boxes in its pixels.

        Args:
            image: uint8 RGB (H, W, 3); in a class that subclasses `Detector`, also anything
                `slidewin.io.images.as_rgb` takes (a path, a PIL image, a BGR array with
                ``bgr=True``), with its ``bgr=``, ``channels=`` and ``convert=`` keywords.
            prepared: what `prepare` returned for this image, or None.
        """
        ...


def accepts_images(method):
    """Wrap a detector's ``detect`` or ``prepare`` so that its image goes through
    `slidewin.io.images.as_rgb` first: a path, bytes, a PIL image or a stated BGR array becomes
    the uint8 RGB array the method expects (an RGB array passes unchanged, without a copy).

    Subclasses of `Detector` get this applied by themselves; a detector that only matches the
    protocol can apply it by hand (``detect = accepts_images(detect)`` in its class body).

    The wrapped method takes three more keyword arguments, ``bgr``, ``channels`` and
    ``convert`` (see `as_rgb`).
    """

    @functools.wraps(method)
    def wrapper(self, image, *args, bgr: bool | None = None, channels: str | None = None,
                convert: bool = False, **kwargs):
        from slidewin.io.images import as_rgb  # core stays free of image I/O until an image comes

        return method(self, as_rgb(image, bgr=bgr, channels=channels, convert=convert), *args, **kwargs)

    wrapper._accepts_images = True
    return wrapper
