"""Drawing `Detections` on an image: a fixed palette by class id, labels that stay inside the
image and off each other, and title bars whose text fits.

Colours are a fixed palette of 80, one per class id up to COCO's 80 categories, so that no two
classes of a COCO picture share or nearly share a colour (hashing the label name gave cat and
laptop the same hue; Kelly's 20 alone, repeated, gave person and dining table the same yellow).
The first 20 are Kelly's colours of maximum contrast (1965) without white and black, in his
order; the other 60 were picked from the sRGB cube (a 15-step grid, CIELAB lightness 32-90, so
that both the colour and its label text read) farthest-first in CIELAB from all those before,
then ordered so that neighbouring ids differ by more than 30 (Delta E 1976). Any two of the 80
differ by at least 15, the distance of Kelly's own closest pair (tests/io/test_drawing.py). Ids
past 80 (an ImageNet model with every label a target) take the colour of ``id % 80`` made
darker or lighter by 9-36 lightness units, a different step per round of 80, so ids 80-320
apart differ too.

Labels are placed greedily, strongest box first: above the box, else inside its top, else below
it, else inside its bottom, shifted sideways to stay inside the image; where all four collide
with labels already placed, the nearest free row above or below is taken. Labels are drawn after
every box, so no box line crosses a label.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from itertools import islice

import cv2
import numpy as np

from slidewin.core.detections import Detections

#: Kelly's colours of maximum contrast, in his order, without white and black, then 60 more spread
#: out in CIELAB (see the module's docstring): one RGB colour per class id, 0-79.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (243, 195, 0), (135, 86, 146), (243, 132, 0), (161, 202, 241), (190, 0, 50), (194, 178, 128),
    (132, 132, 130), (0, 136, 86), (230, 143, 172), (0, 103, 165), (249, 147, 121), (96, 78, 151),
    (246, 166, 0), (179, 68, 108), (220, 211, 0), (136, 45, 23), (141, 182, 0), (101, 69, 34),
    (226, 88, 34), (43, 61, 38),
    (60, 225, 255), (75, 60, 195), (105, 150, 255), (255, 210, 210), (195, 90, 90), (30, 210, 45),
    (120, 15, 165), (15, 150, 165), (120, 75, 90), (120, 180, 135), (165, 90, 255), (165, 105, 15),
    (255, 15, 105), (180, 225, 210), (15, 105, 255), (0, 0, 255), (150, 240, 0), (255, 180, 105),
    (30, 240, 225), (75, 255, 150), (0, 150, 30), (255, 105, 120), (0, 180, 165), (210, 180, 255),
    (165, 150, 0), (255, 0, 60), (0, 255, 0), (90, 105, 0), (120, 45, 135), (60, 210, 150),
    (60, 45, 225), (255, 165, 240), (240, 60, 195), (150, 120, 60), (240, 225, 120), (255, 120, 195),
    (210, 75, 225), (0, 180, 255), (135, 135, 180), (255, 0, 0), (0, 90, 195), (105, 120, 75),
    (45, 90, 105), (135, 105, 225), (195, 225, 105), (255, 0, 150), (180, 0, 0), (0, 90, 0),
    (75, 150, 195), (180, 45, 150), (0, 105, 90), (225, 135, 255), (150, 240, 105), (210, 180, 210),
    (120, 165, 75), (255, 0, 225), (180, 120, 105), (180, 30, 255), (180, 240, 165), (195, 0, 105),
)
#: Lightness steps (CIELAB L, 0-100) of the palette for ids 80-159, 160-239, 240-319 and 320-399,
#: then again: every round differs from the palette and from the other rounds by at least 8 (Delta E).
_ROUND_STEPS = (18, 36, 9, 27)

FONT = cv2.FONT_HERSHEY_SIMPLEX


def color_for(class_id: int) -> tuple[int, int, int]:
    """The RGB colour of a class id (fixed: the same in every picture): ``PALETTE[class_id]`` for
    ids 0-79, the colour of ``class_id % 80`` darker or lighter for ids past it."""
    rounds, i = divmod(int(class_id), len(PALETTE))
    if not rounds:
        return PALETTE[i]
    return _shifted(i, _ROUND_STEPS[(rounds - 1) % len(_ROUND_STEPS)])


@lru_cache(maxsize=None)
def _shifted(i: int, step: int) -> tuple[int, int, int]:
    """``PALETTE[i]`` made ``step`` CIELAB lightness units darker if it is light, lighter if it is
    dark (every palette colour has room for 36 either way that way: its lightness is 25-90)."""
    lab = cv2.cvtColor(np.float32([[PALETTE[i]]]) / 255, cv2.COLOR_RGB2LAB)
    lab[0, 0, 0] += -step if lab[0, 0, 0] > 56 else step
    rgb = cv2.cvtColor(lab, cv2.COLOR_LAB2RGB)[0, 0]
    return tuple(int(v) for v in np.clip(np.round(rgb * 255), 0, 255))


def text_color_on(rgb: tuple[int, int, int]) -> tuple[int, int, int]:
    """Black or white, whichever reads better on ``rgb`` (relative luminance, ITU-R BT.709)."""
    r, g, b = rgb
    return (0, 0, 0) if 0.2126 * r + 0.7152 * g + 0.0722 * b > 140 else (255, 255, 255)


@dataclass(frozen=True)
class LabelSpot:
    """Where one box's label goes.

    Attributes:
        index: the box it belongs to (index into the `Detections`).
        text: what it says.
        rect: (x1, y1, x2, y2) of its filled background, in pixels, x2/y2 exclusive.
    """

    index: int
    text: str
    rect: tuple[int, int, int, int]


@dataclass(frozen=True)
class Style:
    """Sizes that follow the image: line thickness, font scale and weight, label padding."""

    thickness: int
    font_scale: float
    font_weight: int
    pad: int

    @classmethod
    def for_image(cls, hw: tuple[int, int], thickness: int | None = None) -> "Style":
        side = max(hw)
        scale = max(0.4, side / 1600)
        return cls(thickness or max(2, round(side / 450)), scale, 1 if scale < 0.9 else 2, max(2, round(3 * scale)))


def _label_size(text: str, style: Style) -> tuple[int, int]:
    """(width, height) of a label's background."""
    (tw, th), base = cv2.getTextSize(text, FONT, style.font_scale, style.font_weight)
    return tw + 2 * style.pad, th + base + 2 * style.pad


def _overlaps(rect: tuple[int, int, int, int], placed: np.ndarray) -> bool:
    if not len(placed):
        return False
    x1, y1, x2, y2 = rect
    return bool(((placed[:, 0] < x2) & (x1 < placed[:, 2]) & (placed[:, 1] < y2) & (y1 < placed[:, 3])).any())


def _candidates(box: np.ndarray, size: tuple[int, int], hw: tuple[int, int]):
    """Label rectangles to try for one box, best first, each inside the image."""
    h, w = hw
    lw, lh = size
    x1, y1, x2, y2 = (int(round(v)) for v in box)
    xs = [min(max(x1, 0), max(w - lw, 0))]  # left-aligned with the box, shifted to stay inside
    if x2 - lw != xs[0]:
        xs.append(min(max(x2 - lw, 0), max(w - lw, 0)))  # right-aligned, for a crowded left edge
    ys = [y1 - lh, y1, y2, y2 - lh]  # above, inside top, below, inside bottom
    seen = set()
    for y in ys:
        for x in xs:
            y = min(max(y, 0), max(h - lh, 0))
            if (x, y) not in seen:
                seen.add((x, y))
                yield x, y
    # Then the nearest rows above and below the preferred spot, one label height apart.
    y0 = min(max(y1 - lh, 0), max(h - lh, 0))
    for k in range(1, h // max(lh, 1) + 1):
        for y in (y0 - k * lh, y0 + k * lh):
            if 0 <= y <= h - lh:
                for x in xs:
                    yield x, y


def layout_labels(dets: Detections, hw: tuple[int, int], style: Style | None = None,
                  show_scores: bool = True) -> list[LabelSpot]:
    """Where each box's label goes: inside the image, off the other labels where there is room.

    Args:
        dets: the boxes.
        hw: the image's (height, width).
        style: sizes (default `Style.for_image`).
        show_scores: ``label score`` rather than ``label``.

    Returns:
        One `LabelSpot` per box, strongest box first. A label only overlaps another when no
        free row is left in the image.
    """
    style = style or Style.for_image(hw)
    names = dets.label_names
    placed = np.zeros((len(dets), 4), np.int64)
    spots: list[LabelSpot] = []
    full = False  # once a label found no free row, weaker ones take their first spot unsearched
    for i in np.argsort(-dets.scores, kind="stable").tolist():
        text = f"{names[i]} {dets.scores[i]:.2f}" if show_scores else names[i]
        lw, lh = _label_size(text, style)
        first = None
        for x, y in islice(_candidates(dets.xyxy[i], (lw, lh), hw), 1 if full else None):
            rect = (x, y, x + lw, y + lh)
            first = first or rect
            if not _overlaps(rect, placed[:len(spots)]):
                break
        else:
            rect, full = first, True  # no free row left: the preferred spot, on top of another label
        placed[len(spots)] = rect
        spots.append(LabelSpot(i, text, rect))
    return spots


def draw_detections(image: np.ndarray, dets: Detections, thickness: int | None = None,
                    show_scores: bool = True) -> np.ndarray:
    """A copy of a uint8 RGB (H, W, 3) image with each box and its ``label score`` (or just
    ``label``) drawn on it, coloured by class id (`color_for`), labels laid out by `layout_labels`."""
    out = np.ascontiguousarray(image).copy()
    hw = out.shape[:2]
    style = Style.for_image(hw, thickness)
    # Weak boxes first, so that the strongest box's outline ends up on top.
    for i in np.argsort(dets.scores, kind="stable").tolist():
        x1, y1, x2, y2 = (int(round(v)) for v in dets.xyxy[i])
        cv2.rectangle(out, (x1, y1), (x2 - 1, y2 - 1), color_for(dets.class_ids[i]), style.thickness, cv2.LINE_AA)
    for spot in reversed(layout_labels(dets, hw, style, show_scores)):
        color = color_for(dets.class_ids[spot.index])
        x1, y1, x2, y2 = spot.rect
        cv2.rectangle(out, (x1, y1), (x2 - 1, y2 - 1), color, -1)
        _, base = cv2.getTextSize(spot.text, FONT, style.font_scale, style.font_weight)
        cv2.putText(out, spot.text, (x1 + style.pad, y2 - style.pad - base), FONT, style.font_scale,
                    text_color_on(color), style.font_weight, cv2.LINE_AA)
    return out


def fit_text(text: str, width: int, scale: float, min_scale: float = 0.4, weight: int = 1,
             max_lines: int = 3) -> tuple[list[str], float]:
    """Lines and a font scale at which ``text`` fits ``width`` pixels: the given scale if it
    fits, else smaller down to ``min_scale``, then wrapped at spaces (at most ``max_lines``
    lines, the last cut with ``..`` if even that is too long).

    Returns:
        (lines, scale).
    """
    def w_of(s: str, sc: float) -> int:
        return cv2.getTextSize(s, FONT, sc, weight)[0][0]

    full = w_of(text, scale)
    if full <= width:
        return [text], scale
    if w_of(text, min_scale) <= width:
        return [text], scale * width / full * 0.98  # width grows linearly with the scale
    lines: list[str] = []
    for word in text.split(" "):
        if lines and w_of(f"{lines[-1]} {word}", min_scale) <= width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    if len(lines) > max_lines:
        lines = lines[:max_lines - 1] + [" ".join(lines[max_lines - 1:])]
    cut = []
    for line in lines:
        while len(line) > 2 and w_of(line, min_scale) > width:
            line = line[:-3].rstrip() + ".."
        cut.append(line)
    return cut, min_scale


def title_bar(width: int, title: str, height: int, min_height: int = 0, background: int = 30) -> np.ndarray:
    """A uint8 RGB bar ``width`` pixels wide with ``title`` in white, fitted (`fit_text`): the
    font shrinks, then the text wraps and the bar grows by a line at a time.

    Args:
        width: the bar's width in pixels.
        title: the text.
        height: the bar's height for one line; the font is sized from it.
        min_height: make the bar at least this tall (bars side by side share one height).
        background: the grey level of the bar.

    Returns:
        uint8 (max(height, min_height, what the lines need), width, 3).
    """
    scale = height / 40
    pad = max(4, height // 5)
    lines, scale = fit_text(title, width - 2 * pad, scale, min_scale=min(scale, 0.45))
    (_, th), base = cv2.getTextSize("Ag", FONT, scale, 1)
    line_h = th + base + 2
    bar = np.full((max(height, min_height, len(lines) * line_h + 2), width, 3), background, np.uint8)
    top = (bar.shape[0] - len(lines) * line_h) // 2
    for k, line in enumerate(lines):
        cv2.putText(bar, line, (pad, top + k * line_h + th + 1), FONT, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return bar
