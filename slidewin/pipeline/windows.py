"""Cutting windows out of an image pyramid: resized levels, and crops in fixed-size batches."""

from __future__ import annotations

import time
from collections.abc import Iterator

import cv2
import numpy as np

from slidewin.core.detector import RunStats, Stage
from slidewin.core.geometry import Level, level_window_boxes, to_image_coords


def resize_to(image: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """The image resized to (height, width) (area interpolation when shrinking, linear when growing)."""
    lh, lw = size_hw
    if (lh, lw) == image.shape[:2]:
        return image
    shrink = lh * lw < image.shape[0] * image.shape[1]
    return cv2.resize(image, (lw, lh), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def resize_level(image: np.ndarray, level: Level) -> np.ndarray:
    """The image resized to a level."""
    return resize_to(image, level.size_hw)


def level_boxes(level: Level, input_hw: tuple[int, int], image_hw: tuple[int, int]) -> np.ndarray:
    """float32 (K, 4) boxes of a level's windows in original-image pixels, row-major."""
    return to_image_coords(level_window_boxes(level, input_hw), level.scale_xy, image_hw)


def iter_window_batches(
    image: np.ndarray, levels: list[Level], input_hw: tuple[int, int], batch_size: int, stats: RunStats | None = None
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Windows of all levels in fixed-size batches (spanning levels, so batches stay full).

    Yields:
        (crops, boxes): uint8 (B, in_h, in_w, 3) crops and float32 (B, 4) their boxes in
        original-image pixels; B == batch_size except for the last batch. The two arrays are
        reused for the next batch (no per-batch allocation): copy what must outlive the step.
    """
    in_h, in_w = input_hw
    buf = np.empty((batch_size, in_h, in_w, 3), np.uint8)
    boxes = np.empty((batch_size, 4), np.float32)
    n = 0
    t0 = time.perf_counter()
    for level in levels:
        resized = resize_level(image, level)
        boxes_of_level = level_boxes(level, input_hw, image.shape[:2])
        i = 0
        for y in level.ys.tolist():
            for x in level.xs.tolist():
                buf[n] = resized[y:y + in_h, x:x + in_w]
                boxes[n] = boxes_of_level[i]
                i += 1
                n += 1
                if n == batch_size:
                    if stats is not None:
                        stats.add(Stage.PYRAMID, time.perf_counter() - t0)
                    yield buf, boxes
                    t0 = time.perf_counter()
                    n = 0
    if stats is not None:
        stats.add(Stage.PYRAMID, time.perf_counter() - t0)
    if n:
        yield buf[:n], boxes[:n]
