"""The JSON record of one image: what ``--json`` writes and what each ``results.jsonl`` line holds."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from slidewin.core.detections import Detections
from slidewin.core.detector import RunStats, Stage


def detection_record(image_path: str | Path, image: np.ndarray | None, model: str | Path,
                     dets: Detections | None = None, stats: RunStats | None = None,
                     decode_seconds: float = 0.0, error: str | None = None,
                     warnings: list[str] | None = None) -> dict:
    """``{"image", "width", "height", "model", "detections", "windows", "seconds"}``, plus
    ``"error"`` (one line) for an image that could not be processed (then with no detections),
    and ``"warnings"`` (the decoder's harmless messages about the file) when there are any."""
    record = {
        "image": str(image_path),
        "width": None if image is None else int(image.shape[1]),
        "height": None if image is None else int(image.shape[0]),
        "model": str(model),
        "detections": [] if dets is None else dets.to_records(),
        "windows": 0 if stats is None else stats.windows,
        "seconds": {Stage.DECODE.value: round(decode_seconds, 4),
                    **({} if stats is None else {k: round(v, 4) for k, v in stats.seconds.items()})},
    }
    if error is not None:
        record["error"] = error
    if warnings:
        record["warnings"] = list(warnings)
    return record
