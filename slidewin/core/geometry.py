"""Pure geometry: pyramid levels, window grids and mapping boxes back to the original image.

Conventions: sizes are ``(height, width)`` (``_hw``), boxes are ``xyxy`` in pixels with the
right/bottom edge exclusive, so a window starting at x covering w pixels is ``[x, x + w)``.

A *level* is the original image resized by ``(fx, fy)`` so that one detection window of the
requested size becomes exactly one classifier input (e.g. 224x224). Windows on a level are then
plain slices of the resized image - no per-window resize - and the dense (fully-convolutional)
mode computes the very same grid in one pass when the step equals the network stride.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Level:
    """One resized copy of the image and the window grid on it.

    Attributes:
        size_hw: (height, width) of the resized image.
        scale_xy: (fx, fy) = resized size / original size, per axis.
        window_hw: the window's size in original-image pixels (before rounding of the level size).
        xs: int64 left edges of the windows on the resized image.
        ys: int64 top edges of the windows on the resized image.
    """

    size_hw: tuple[int, int]
    scale_xy: tuple[float, float]
    window_hw: tuple[int, int]
    xs: np.ndarray
    ys: np.ndarray

    @property
    def num_windows(self) -> int:
        return len(self.xs) * len(self.ys)


def window_starts(length: int, window: int, step: float) -> np.ndarray:
    """Start offsets of windows of size ``window`` sliding by ``step`` over ``[0, length)``.

    The grid is ``0, step, 2*step, ...`` (rounded to whole pixels); when it does not end flush
    with the edge, one last window is snapped to ``length - window`` so that the whole extent is
    covered. When ``length <= window`` there is a single window at 0.

    Args:
        length: extent in pixels (>= 1).
        window: window size in pixels (>= 1).
        step: distance between consecutive windows in pixels (> 0).

    Returns:
        int64 (K,) strictly increasing starts, each in ``[0, max(length - window, 0)]``.
    """
    if length < 1 or window < 1 or not step > 0:
        raise ValueError(f"need length >= 1, window >= 1, step > 0; got {length}, {window}, {step}")
    last = length - window
    if last <= 0:
        return np.zeros(1, np.int64)
    starts = np.round(np.arange(0.0, last + 1e-9, step)).astype(np.int64)
    starts = starts[starts <= last]
    # Non-decreasing, so duplicates are neighbours (np.unique would also load numpy.ma: 18 ms).
    starts = starts[np.concatenate(([True], starts[1:] != starts[:-1]))]
    if starts[-1] != last:
        starts = np.append(starts, last)
    return starts


def pyramid_scales(scale: float, max_levels: int | None = None) -> "np.ndarray":
    """Geometric pyramid factors ``1, 1/scale, 1/scale**2, ...`` (``max_levels`` of them, default 32)."""
    if not scale > 1.0:
        raise ValueError(f"pyramid scale must be > 1, got {scale}")
    n = 32 if max_levels is None else max_levels
    return scale ** -np.arange(n, dtype=np.float64)


def scale_windows(windows_hw: list[tuple[int, int]], image_hw: tuple[int, int],
                  reference_side: int | None) -> list[tuple[int, int]]:
    """Window sizes for an image: unchanged when its longer side is at most ``reference_side``
    (or when that is None), else scaled by ``long_side / reference_side`` (rounded)."""
    long_side = max(image_hw)
    if reference_side is None or long_side <= reference_side:
        return list(windows_hw)
    f = long_side / reference_side
    return [(max(1, round(h * f)), max(1, round(w * f))) for h, w in windows_hw]


def plan_levels(
    image_hw: tuple[int, int],
    input_hw: tuple[int, int],
    windows_hw: list[tuple[int, int]],
    step: float | tuple[float, float],
    scale: float = 1.5,
    max_levels: int | None = None,
    align: bool = False,
) -> list[Level]:
    """The pyramid levels and window grids for one image.

    For every window size and every pyramid factor ``p`` the image is resized by
    ``fx = p * input_w / window_w``, ``fy = p * input_h / window_h``: a window of ``window_hw``
    pixels at pyramid factor ``p`` (covering ``window / p`` original pixels) becomes exactly one
    classifier input. Levels stop once the resized image is smaller than the input; the first
    level of each window size is kept even then, stretched so the single window covers the image
    along the short side (an image smaller than the window yields one window covering it).

    Args:
        image_hw: original image (height, width).
        input_hw: classifier input (height, width), e.g. (224, 224).
        windows_hw: window sizes in original-image pixels at the first pyramid level.
        step: distance between windows in classifier-input pixels (e.g. 32; the network
            stride for dense mode), or (step_y, step_x).
        scale: pyramid factor between levels (> 1).
        max_levels: at most this many pyramid levels per window size.
        align: round each level's size to ``input + k * step`` (integer ``step`` only), so that
            the windows tile it exactly with no snapped last window. This is the grid a
            fully-convolutional pass computes (one output cell per ``step`` pixels), so patch
            and dense modes then evaluate identical windows. It changes each axis' scale by at
            most ``step / 2`` pixels over the level's size.

    Returns:
        The levels, largest first within each window size.
    """
    step_y, step_x = step if isinstance(step, tuple) else (step, step)
    if align and (step_x != int(step_x) or step_y != int(step_y)):
        raise ValueError(f"aligned levels need a whole-pixel step, got {step}")
    h, w = image_hw
    in_h, in_w = input_hw
    if h < 1 or w < 1:
        raise ValueError(f"image must be at least 1x1, got {image_hw}")
    levels: list[Level] = []
    for win_h, win_w in windows_hw:
        for k, p in enumerate(pyramid_scales(scale, max_levels)):
            fx, fy = p * in_w / win_w, p * in_h / win_h
            lw, lh = round(w * fx), round(h * fy)
            if lw < in_w or lh < in_h:
                if k > 0:
                    break
                # Image smaller than the window: stretch that axis so one window covers it all.
                lw, lh = max(lw, in_w), max(lh, in_h)
            if align:
                lw = in_w + round((lw - in_w) / step_x) * int(step_x)
                lh = in_h + round((lh - in_h) / step_y) * int(step_y)
            levels.append(
                Level(
                    size_hw=(lh, lw),
                    scale_xy=(lw / w, lh / h),
                    window_hw=(win_h, win_w),
                    xs=window_starts(lw, in_w, step_x),
                    ys=window_starts(lh, in_h, step_y),
                )
            )
    return levels


def level_window_boxes(level: Level, input_hw: tuple[int, int]) -> np.ndarray:
    """All window boxes of a level in resized-level pixels, row-major (y outer, x inner).

    Returns:
        float32 (len(ys) * len(xs), 4) xyxy.
    """
    in_h, in_w = input_hw
    yy, xx = np.meshgrid(level.ys, level.xs, indexing="ij")
    x1, y1 = xx.ravel().astype(np.float32), yy.ravel().astype(np.float32)
    return np.stack([x1, y1, x1 + in_w, y1 + in_h], axis=1)


def to_image_coords(xyxy: np.ndarray, scale_xy: tuple[float, float], image_hw: tuple[int, int]) -> np.ndarray:
    """Map boxes from a resized level back to original pixels and clip to the image.

    Args:
        xyxy: float (N, 4) boxes on the level.
        scale_xy: the level's (fx, fy).
        image_hw: original (height, width).

    Returns:
        float32 (N, 4) with ``0 <= x1 < x2 <= W`` for any box that overlaps the image.
    """
    fx, fy = scale_xy
    h, w = image_hw
    out = np.asarray(xyxy, np.float32) / np.array([fx, fy, fx, fy], np.float32)
    np.clip(out[:, 0::2], 0, w, out=out[:, 0::2])
    np.clip(out[:, 1::2], 0, h, out=out[:, 1::2])
    return out


def letterbox_params(image_hw: tuple[int, int], canvas_hw: tuple[int, int]) -> tuple[float, int, int]:
    """Uniform scale and top-left padding that fit an image inside a canvas, centred.

    Returns:
        (scale, pad_x, pad_y): the image is resized by ``scale`` (aspect kept) and placed at
        ``(pad_x, pad_y)``; boxes map back with ``(xyxy - [pad_x, pad_y] * 2) / scale``.
    """
    h, w = image_hw
    ch, cw = canvas_hw
    s = min(cw / w, ch / h)
    nw, nh = min(cw, round(w * s)), min(ch, round(h * s))
    return s, (cw - nw) // 2, (ch - nh) // 2
