"""Drawing a heat map over a photo: each class in its box colour, and a legend.

The photo is dimmed and mostly desaturated (`PHOTO_SATURATION`, `PHOTO_BRIGHTNESS`) so that the
class colours stand out while the scene stays recognisable. At each pixel the class with the
most heat is painted in its colour (`slidewin.io.drawing.color_for`, the same as its boxes),
with an opacity that grows with the heat (nothing below `FLOOR`, `MAX_OPACITY` from `FULL`
up), and a line in that colour, as thick as a box's, marks where the heat crosses `EDGE` (half the
probability mass: "the classifier sees it here"). A legend in the top-left corner names each
class with its peak score. Rows are drawn a band at a time: memory is the photo, the picture
and one band of heat, whatever the photo's size.
"""

from __future__ import annotations

import cv2
import numpy as np

from slidewin.io.drawing import FONT, Style, color_for

#: How much colour the photo keeps (0: grey, 1: as it is) and how bright it stays.
PHOTO_SATURATION = 0.35
PHOTO_BRIGHTNESS = 0.85
#: Opacity of a class colour from a score of `FULL` up; it grows linearly from nothing at `FLOOR`.
MAX_OPACITY = 0.75
#: Scores below this are not painted (the faint probability every class has everywhere) ...
FLOOR = 0.05
#: ... and from this one up, a class is painted as strongly as it can be.
FULL = 0.6
#: The heat level outlined.
EDGE = 0.5
#: Pixels per band of rows drawn at once (1 M: ~60 MB of float32 work arrays with three classes).
BAND_PIXELS = 1 << 20


def draw_heatmap(image: np.ndarray, heat, band_pixels: int = BAND_PIXELS) -> np.ndarray:
    """A uint8 RGB (H, W, 3) picture of ``heat`` (a `slidewin.apps.heatmap.Heat` of this image)
    blended over ``image``, with a legend.

    Args:
        image: uint8 RGB (H, W, 3).
        heat: anything with ``image_hw``, ``class_ids``, ``names``, ``peaks`` and ``rows(y0, y1)``
            -> float32 (y1 - y0, W, T) scores in [0, 1].
        band_pixels: pixels drawn at a time (whole rows; the picture is the same for any value).
    """
    h, w = image.shape[:2]
    if tuple(heat.image_hw) != (h, w):
        raise ValueError(f"heat of a {heat.image_hw[1]}x{heat.image_hw[0]} image for a {w}x{h} one")
    colours = np.float32([color_for(i) for i in heat.class_ids]).reshape(-1, 3)
    out = np.empty_like(image)
    line = Style.for_image((h, w)).thickness
    band = max(1, band_pixels // max(w, 1))
    for y0 in range(0, h, band):
        # rows of context on each side, so that lines at the edges between bands are whole
        a, b = max(0, y0 - line), min(h, y0 + band + line)
        out[y0:y0 + band] = _blend(image[a:b], heat.rows(a, b), colours, line)[y0 - a:y0 - a + min(band, h - y0)]
    _legend(out, heat)
    return out


def _blend(photo: np.ndarray, scores: np.ndarray, colours: np.ndarray, line: int) -> np.ndarray:
    """One band: the dimmed photo, each pixel's strongest class painted over it, outlined at `EDGE`."""
    rgb = photo.astype(np.float32)
    grey = rgb @ np.float32([0.2126, 0.7152, 0.0722])
    base = PHOTO_BRIGHTNESS * (PHOTO_SATURATION * rgb + (1 - PHOTO_SATURATION) * grey[..., None])
    if not scores.shape[-1]:
        return base.astype(np.uint8)
    best = scores.argmax(axis=-1)
    top = np.take_along_axis(scores, best[..., None], axis=-1)[..., 0]
    alpha = MAX_OPACITY * np.clip((top - FLOOR) / (FULL - FLOOR), 0, 1)[..., None]
    out = base * (1 - alpha) + colours[best] * alpha
    # where the heat crosses EDGE between a pixel and its right or lower neighbour: a line
    above = top >= EDGE
    edge = np.zeros_like(above)
    edge[:, 1:] |= above[:, 1:] != above[:, :-1]
    edge[1:, :] |= above[1:, :] != above[:-1, :]
    edge = cv2.dilate(edge.view(np.uint8), np.ones((line, line), np.uint8)).astype(bool) & above
    out[edge] = colours[best[edge]]
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def _legend(out: np.ndarray, heat) -> None:
    """Each class's colour, name and peak score, top left, on a dark box (in place)."""
    if not len(heat.names):
        return
    h, w = out.shape[:2]
    style = Style.for_image((h, w))
    scale, weight, pad = style.font_scale * 1.15, style.font_weight, style.pad + 1
    texts = [f"{name}  {peak:.2f}" for name, peak in zip(heat.names, heat.peaks)]
    sizes = [cv2.getTextSize(t, FONT, scale, weight) for t in texts]
    line = max(th + base for (_, th), base in sizes) + 2 * pad
    swatch = line - 2 * pad
    width = min(w, 3 * pad + swatch + max(tw for (tw, _), _ in sizes) + pad)
    height = min(h, len(texts) * line + pad)
    x0 = y0 = min(pad, max(0, w - width), max(0, h - height))
    box = out[y0:y0 + height, x0:x0 + width]
    box[:] = (box.astype(np.float32) * 0.3).astype(np.uint8)  # darkened, so white text reads on any photo
    for k, (text, cid) in enumerate(zip(texts, heat.class_ids)):
        top = y0 + pad + k * line
        colour = color_for(cid)
        cv2.rectangle(out, (x0 + pad, top + pad // 2), (x0 + pad + swatch, top + pad // 2 + swatch), colour, -1)
        (_, th), base = sizes[k]
        cv2.putText(out, text, (x0 + 2 * pad + swatch + pad, top + (line + th) // 2 - base // 2 + 1), FONT, scale,
                    (255, 255, 255), weight, cv2.LINE_AA)
