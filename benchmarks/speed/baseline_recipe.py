"""The usual tutorial recipe for "turn a classifier into a detector", as a baseline to time.

A faithful re-statement of the well-known PyImageSearch Keras script ("Turning any CNN image
classifier into an object detector", 2020): resize the image to width 600, build an image
pyramid (downscale by 1.5 until smaller than the ROI), slide a 200x150 ROI with step 16 over
every level, resize each ROI to 224x224, ``preprocess_input`` each one, then ONE
``model.predict`` over all windows (Keras' default batch of 32), keep windows whose top-1
probability is >= 0.9 and run imutils' ``non_max_suppression`` (overlap 0.3) per label.

Kept as the tutorial has it, on purpose: its quirks are part of the baseline's cost
(``sliding_window`` stops one step short of the edge, ``image_pyramid`` uses imutils' area
resize, the per-ROI Python loop and ``preprocess_input`` calls). Two deliberate changes: images
are RGB (the tutorial feeds cv2's BGR to a model expecting RGB, a bug that costs nothing), and
``decode_predictions`` (which downloads a class index) becomes argmax over our label list.
No imutils dependency: its three helpers are re-implemented here line for line.
No TensorFlow import here: the caller passes the model and ``preprocess_input``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import cv2
import numpy as np

WIDTH = 600
PYR_SCALE = 1.5
WIN_STEP = 16
ROI_SIZE = (200, 150)  # (w, h), as the tutorial writes it
INPUT_SIZE = (224, 224)  # (w, h)
MIN_CONF = 0.9
NMS_OVERLAP = 0.3


def imutils_resize(image: np.ndarray, width: int | None = None, height: int | None = None,
                   inter: int = cv2.INTER_AREA) -> np.ndarray:
    """``imutils.resize``: keep the aspect ratio, size given by width or height (truncated)."""
    h, w = image.shape[:2]
    if width is None and height is None:
        return image
    if width is None:
        r = height / float(h)
        dim = (int(w * r), height)
    else:
        r = width / float(w)
        dim = (width, int(h * r))
    return cv2.resize(image, dim, interpolation=inter)


def image_pyramid(image: np.ndarray, scale: float = PYR_SCALE, min_size: tuple[int, int] = ROI_SIZE) -> Iterator[np.ndarray]:
    """The tutorial's pyramid: the image, then each level ``1/scale`` narrower, until a level is
    smaller than ``min_size`` (w, h)."""
    yield image
    while True:
        w = int(image.shape[1] / scale)
        image = imutils_resize(image, width=w)
        if image.shape[0] < min_size[1] or image.shape[1] < min_size[0]:
            break
        yield image


def sliding_window(image: np.ndarray, step: int, ws: tuple[int, int]) -> Iterator[tuple[int, int, np.ndarray]]:
    """The tutorial's window generator: ``(x, y, roi)`` for ROIs of ``ws`` (w, h).

    ``range(0, H - h, step)``: a window flush with the bottom/right edge is never produced (and a
    level exactly the ROI's size yields none) - the tutorial's behaviour, kept.
    """
    for y in range(0, image.shape[0] - ws[1], step):
        for x in range(0, image.shape[1] - ws[0], step):
            yield x, y, image[y:y + ws[1], x:x + ws[0]]


def imutils_nms(boxes: np.ndarray, probs: np.ndarray | None = None, overlap_thresh: float = NMS_OVERLAP) -> np.ndarray:
    """``imutils.object_detection.non_max_suppression`` (Malisiewicz et al.), returning indices.

    Not IoU: the overlap is intersection over the *other* box's area, with the ``+ 1`` pixel
    convention; boxes are visited from the highest ``probs`` (or the lowest bottom edge).

    Args:
        boxes: (N, 4) xyxy. probs: (N,) scores or None. overlap_thresh: suppress above this.

    Returns:
        int64 (K,) indices of the kept boxes (imutils returns ``boxes[pick]``).
    """
    if len(boxes) == 0:
        return np.zeros(0, np.int64)
    boxes = np.asarray(boxes)
    if boxes.dtype.kind == "i":
        boxes = boxes.astype("float")
    pick = []
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    area = (x2 - x1 + 1) * (y2 - y1 + 1)
    idxs = np.argsort(y2 if probs is None else probs)
    while len(idxs) > 0:
        last = len(idxs) - 1
        i = idxs[last]
        pick.append(i)
        xx1 = np.maximum(x1[i], x1[idxs[:last]])
        yy1 = np.maximum(y1[i], y1[idxs[:last]])
        xx2 = np.minimum(x2[i], x2[idxs[:last]])
        yy2 = np.minimum(y2[i], y2[idxs[:last]])
        w = np.maximum(0, xx2 - xx1 + 1)
        h = np.maximum(0, yy2 - yy1 + 1)
        overlap = (w * h) / area[idxs[:last]]
        idxs = np.delete(idxs, np.concatenate(([last], np.where(overlap > overlap_thresh)[0])))
    return np.array(pick, np.int64)


def count_windows(image_hw: tuple[int, int], width: int | None = WIDTH, roi_size=ROI_SIZE, step: int = WIN_STEP,
                  scale: float = PYR_SCALE) -> tuple[int, int]:
    """``(levels, windows)`` the recipe produces for an image of ``image_hw``, without cutting them."""
    h, w = image_hw
    image = np.empty((h, w, 1), np.uint8)
    if width:
        image = imutils_resize(image, width=width)
    levels = windows = 0
    for level in image_pyramid(image, scale, roi_size):
        levels += 1
        windows += len(range(0, level.shape[0] - roi_size[1], step)) * len(range(0, level.shape[1] - roi_size[0], step))
    return levels, windows


@dataclass
class RecipeResult:
    """What one run of the recipe found and what it cost.

    Attributes:
        detections: label -> list of ((x1, y1, x2, y2), prob) kept by NMS, in the resized image's pixels.
        levels, windows: pyramid levels and ROIs classified.
        seconds: time per stage (rois: pyramid + crops + resize + preprocess; predict; nms).
    """

    detections: dict[str, list[tuple[tuple[int, int, int, int], float]]] = field(default_factory=dict)
    levels: int = 0
    windows: int = 0
    seconds: dict[str, float] = field(default_factory=lambda: {"rois": 0.0, "predict": 0.0, "nms": 0.0})

    @property
    def total(self) -> float:
        return sum(self.seconds.values())


def tutorial_detect(
    model,
    image: np.ndarray,
    preprocess: Callable[[np.ndarray], np.ndarray],
    labels: tuple[str, ...] | list[str],
    *,
    width: int | None = WIDTH,
    roi_size: tuple[int, int] = ROI_SIZE,
    step: int = WIN_STEP,
    scale: float = PYR_SCALE,
    min_conf: float = MIN_CONF,
    overlap: float = NMS_OVERLAP,
    max_windows: int | None = None,
) -> RecipeResult:
    """Run the tutorial recipe on one RGB image.

    Args:
        model: anything with Keras' ``predict(x)`` -> (N, C) probabilities (called once, with
            its default batch size, as the tutorial does).
        image: uint8 (H, W, 3) RGB.
        preprocess: ``keras.applications.resnet50.preprocess_input`` (applied per ROI).
        labels: C class names.
        width: the tutorial first resizes the image to this width (None: keep it).
        max_windows: stop cutting ROIs after this many (for smoke tests; None: all).

    Returns:
        RecipeResult with the kept boxes per label, counts and stage times.
    """
    res = RecipeResult()
    t0 = time.perf_counter()
    orig = imutils_resize(image, width=width) if width else image
    W = orig.shape[1]
    rois, locs = [], []
    for level in image_pyramid(orig, scale=scale, min_size=roi_size):
        res.levels += 1
        s = W / float(level.shape[1])
        for x, y, roi_orig in sliding_window(level, step, roi_size):
            if max_windows is not None and len(rois) >= max_windows:
                break
            x, y = int(x * s), int(y * s)
            w, h = int(roi_size[0] * s), int(roi_size[1] * s)
            roi = cv2.resize(roi_orig, INPUT_SIZE)
            roi = np.asarray(roi, dtype="float32")  # keras img_to_array
            roi = preprocess(roi)
            rois.append(roi)
            locs.append((x, y, x + w, y + h))
    rois = np.array(rois, dtype="float32")
    res.windows = len(rois)
    t1 = time.perf_counter()
    res.seconds["rois"] = t1 - t0
    if not len(rois):
        return res
    preds = np.asarray(model.predict(rois, verbose=0))
    t2 = time.perf_counter()
    res.seconds["predict"] = t2 - t1
    # decode_predictions(preds, top=1), without its download: top-1 label and probability.
    top = preds.argmax(axis=1)
    found: dict[str, list] = {}
    for i, (c, p) in enumerate(zip(top, preds[np.arange(len(preds)), top])):
        if p >= min_conf:
            found.setdefault(labels[int(c)], []).append((locs[i], float(p)))
    for label, items in found.items():
        boxes = np.array([b for b, _ in items])
        proba = np.array([p for _, p in items])
        keep = imutils_nms(boxes, proba, overlap)
        res.detections[label] = [(tuple(int(v) for v in boxes[k]), float(proba[k])) for k in keep]
    res.seconds["nms"] = time.perf_counter() - t2
    return res
