"""Drawing `Detections` on an image."""

from __future__ import annotations

import zlib

import cv2
import numpy as np

from slidewin.core.detections import Detections


def color_for(label: str) -> tuple[int, int, int]:
    """A stable, saturated RGB colour per label name."""
    hue = zlib.crc32(label.encode()) % 180
    hsv = np.uint8([[[hue, 220, 230]]])
    return tuple(int(v) for v in cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0])


def draw_detections(image: np.ndarray, dets: Detections, thickness: int | None = None,
                    show_scores: bool = True) -> np.ndarray:
    """A copy of a uint8 RGB image with each box and ``label score`` (or just ``label``) drawn on it."""
    out = np.ascontiguousarray(image).copy()
    h, w = out.shape[:2]
    t = thickness or max(2, round(max(h, w) / 400))
    font_scale = max(0.45, max(h, w) / 1400)
    names = dets.label_names
    # Draw low scores first so that the strongest box and its label end up on top.
    for i in np.argsort(dets.scores, kind="stable"):
        x1, y1, x2, y2 = (int(round(v)) for v in dets.xyxy[i])
        name = names[i]
        color = color_for(name)
        cv2.rectangle(out, (x1, y1), (x2 - 1, y2 - 1), color, t, cv2.LINE_AA)
        text = f"{name} {dets.scores[i]:.2f}" if show_scores else name
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, 1)
        ty = y1 - 4 if y1 - th - base - 4 >= 0 else y1 + th + base + 4
        cv2.rectangle(out, (x1, ty - th - base), (x1 + tw + 4, ty + base - 2), color, -1)
        cv2.putText(out, text, (x1 + 2, ty - 2), cv2.FONT_HERSHEY_SIMPLEX, font_scale, (0, 0, 0), 1, cv2.LINE_AA)
    return out
