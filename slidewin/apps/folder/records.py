"""The record of one image: what ``--json`` writes, what each ``results.jsonl`` line holds, and
what the Ray actors send back, typed as `DetectionRecord`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from slidewin.core.detections import Detections
from slidewin.core.detector import RunStats, Stage


@dataclass
class DetectionRecord:
    """What slidewin found in one image, or why it could not look.

    Attributes:
        image: the image's path or URI, as given.
        width, height: the decoded image's size in pixels (None: not decoded).
        model: the model file, as given.
        detections: one ``{"xyxy", "score", "class_id", "label"}`` per box
            (`Detections.to_records`); empty for an image that failed.
        windows: windows (or proposals) scored.
        seconds: seconds per stage, ``decode`` first.
        error: why the image could not be processed, in one line (None: it was).
        warnings: the decoder's harmless messages about the file.
    """

    image: str
    width: int | None
    height: int | None
    model: str
    detections: list[dict]
    windows: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when the image was processed (its detections may still be none)."""
        return self.error is None

    @classmethod
    def of(cls, image_path: str | Path, image: np.ndarray | None, model: str | Path,
           dets: Detections | None = None, stats: RunStats | None = None, decode_seconds: float = 0.0,
           error: str | None = None, warnings: list[str] | None = None) -> "DetectionRecord":
        """The record of ``image`` (HxWx3, or None when it could not be decoded) and what the
        detector found in it (``dets``, ``stats``), or the one-line ``error``."""
        return cls(
            image=str(image_path),
            width=None if image is None else int(image.shape[1]),
            height=None if image is None else int(image.shape[0]),
            model=str(model),
            detections=[] if dets is None else dets.to_records(),
            windows=0 if stats is None else stats.windows,
            seconds={Stage.DECODE.value: round(decode_seconds, 4),
                     **({} if stats is None else {k: round(v, 4) for k, v in stats.seconds.items()})},
            error=error,
            warnings=list(warnings or ()),
        )

    def to_json(self) -> dict:
        """``{"image", "width", "height", "model", "detections", "windows", "seconds"}`` in this
        order, plus ``"error"`` and ``"warnings"`` only when there are any: the JSON slidewin
        has always written (``json.dumps`` of it is the ``results.jsonl`` line)."""
        value = {"image": self.image, "width": self.width, "height": self.height, "model": self.model,
                 "detections": self.detections, "windows": self.windows, "seconds": self.seconds}
        if self.error is not None:
            value["error"] = self.error
        if self.warnings:
            value["warnings"] = list(self.warnings)
        return value

    @classmethod
    def from_json(cls, value: dict) -> "DetectionRecord":
        """A record read back from `to_json`'s dict (a ``results.jsonl`` line, a Ray row).

        Only ``image`` is required: a line written by an older slidewin, or by hand, still
        says which image is done (and ``error`` whether it failed).

        Raises:
            ValueError: ``value`` is not a record (not a dict, or no ``image`` string).
        """
        if not isinstance(value, dict) or not isinstance(value.get("image"), str):
            raise ValueError("not a detection record (no image)")
        error = value.get("error")
        return cls(image=value["image"], width=value.get("width"), height=value.get("height"),
                   model=str(value.get("model")), detections=list(value.get("detections") or ()),
                   windows=value.get("windows", 0), seconds=dict(value.get("seconds") or {}),
                   error=None if error is None and "error" not in value else str(error),
                   warnings=list(value.get("warnings") or ()))

