"""`FasterRCNNDetector` (formerly `RegionProposalDetector`): a slidewin region-proposal ONNX model
(Faster R-CNN) on ONNX Runtime.

The graph takes one fixed-size square *canvas* (uint8 RGB NHWC, batch 1) and returns
``boxes`` float32 (K, 4) xyxy in canvas pixels, ``scores`` float32 (K,) and ``labels`` int64 (K,)
indexing the metadata's labels. The runtime letterboxes each image into that canvas (uniform
scale, centred, constant padding), runs the graph, and maps the boxes back to the image.
Normalisation, the network, box decoding and NMS all live inside the graph, so this module needs
only NumPy, OpenCV and ONNX Runtime.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path

import cv2
import numpy as np

from slidewin.core.detections import Detections
from slidewin.core.detector import Detector, RunStats, Stage, Unit
from slidewin.core.geometry import letterbox_params, to_image_coords
from slidewin.errors import ModelError, SlidewinError
from slidewin.core.contract import REGION_OUTPUTS, Key, ModelKind, ModelMeta
from slidewin.runtime.sessions import Device, SessionSettings, check_finite, check_image_input, open_session, read_meta

# torchvision pads its batches with zeros *after* normalisation, i.e. with the ImageNet mean
# colour; padding the letterbox with that colour shows the network what it saw in training.
DEFAULT_PAD_RGB = (124, 116, 104)


def letterbox_image(image: np.ndarray, canvas_hw: tuple[int, int],
                    pad_rgb: tuple[int, int, int] = DEFAULT_PAD_RGB) -> tuple[np.ndarray, tuple[float, float], tuple[int, int]]:
    """Fit an image inside a canvas with its aspect ratio kept, centred, padded with a constant colour.

    The uniform scale and the padding come from `geometry.letterbox_params`; the resized image is
    ``min(W, round(w * scale))`` by ``min(H, round(h * scale))`` pixels.

    Args:
        image: uint8 (h, w, 3) RGB.
        canvas_hw: (H, W) of the canvas.
        pad_rgb: colour of the padding.

    Returns:
        (canvas, scale_xy, pad_xy): uint8 (H, W, 3); the per-axis scale actually applied
        (resized size / original size, which differs from the uniform scale only by rounding);
        the top-left offset of the image on the canvas.
    """
    h, w = image.shape[:2]
    ch, cw = canvas_hw
    s, pad_x, pad_y = letterbox_params((h, w), canvas_hw)
    nw, nh = min(cw, round(w * s)), min(ch, round(h * s))
    canvas = np.empty((ch, cw, 3), np.uint8)
    canvas[:] = np.asarray(pad_rgb, np.uint8)
    if (nh, nw) == (h, w):
        resized = image
    else:
        shrink = nw * nh < w * h
        resized = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    canvas[pad_y:pad_y + nh, pad_x:pad_x + nw] = resized
    return canvas, (nw / w, nh / h), (pad_x, pad_y)


def canvas_to_image(xyxy: np.ndarray, scale_xy: tuple[float, float], pad_xy: tuple[int, int],
                    image_hw: tuple[int, int]) -> np.ndarray:
    """Map canvas boxes back to the original image: ``(xyxy - pad) / scale``, clipped to the image.

    Args:
        xyxy: float (N, 4) boxes in canvas pixels.
        scale_xy, pad_xy: what `letterbox_image` returned.
        image_hw: original (height, width).

    Returns:
        float32 (N, 4) in original-image pixels, each coordinate in ``[0, W]`` / ``[0, H]``; boxes
        that lay wholly on the padding come out empty (``x1 == x2`` or ``y1 == y2``).
    """
    pad = np.array([pad_xy[0], pad_xy[1], pad_xy[0], pad_xy[1]], np.float32)
    return to_image_coords(np.asarray(xyxy, np.float32).reshape(-1, 4) - pad, scale_xy, image_hw)


def _parse_pad(meta: ModelMeta, path) -> tuple[int, int, int]:
    text = meta.get(Key.LETTERBOX_PAD_RGB)
    if not text:
        return DEFAULT_PAD_RGB
    try:
        rgb = tuple(int(v) for v in text.split(","))
        if len(rgb) != 3 or not all(0 <= v <= 255 for v in rgb):
            raise ValueError
    except ValueError:
        raise ModelError(f"malformed metadata {Key.LETTERBOX_PAD_RGB}={text!r} (expected R,G,B in 0-255)", path) from None
    return rgb  # type: ignore[return-value]


def _parse_rpn_proposals(meta: ModelMeta, path) -> int | None:
    """The RPN's post-NMS top-N from the metadata, if the model states it."""
    text = meta.get(Key.RPN_PROPOSALS)
    if text is None:
        return None
    if not (text.isascii() and text.isdigit() and 0 < int(text) < 1 << 31):
        raise ModelError(f"malformed metadata {Key.RPN_PROPOSALS}={text[:40]!r} (expected a positive whole number)",
                         path)
    return int(text)


def check_region_outputs(boxes: np.ndarray, scores: np.ndarray, class_ids: np.ndarray, num_labels: int,
                         path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The graph's outputs as (K, 4) float32 boxes, (K,) float32 scores and (K,) int64 label ids,
    or one ModelError saying how they break the contract (a hand-made or damaged graph):
    another shape, counts that differ, non-finite values, a label id outside the labels."""
    boxes, scores, class_ids = np.asarray(boxes), np.asarray(scores), np.asarray(class_ids)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ModelError(f"output boxes has shape {boxes.shape}, expected (K, 4) xyxy boxes", path)
    k = boxes.shape[0]
    for name, out in (("scores", scores), ("labels", class_ids)):
        if out.shape != (k,):
            raise ModelError(f"output {name} has shape {out.shape}, expected ({k},): one per box", path)
    if not all(np.issubdtype(o.dtype, np.number) for o in (boxes, scores, class_ids)):
        raise ModelError("outputs boxes, scores and labels must be numbers", path)
    check_finite(boxes, path)
    check_finite(scores, path)
    if not np.issubdtype(class_ids.dtype, np.integer):
        check_finite(class_ids, path)
        if (class_ids != np.round(class_ids)).any():
            raise ModelError("output labels holds fractions, expected label ids", path)
    bad = (class_ids < 0) | (class_ids >= num_labels)
    if bad.any():
        raise ModelError(f"output labels holds id {class_ids[bad][0]:g}, outside the model's {num_labels} labels "
                         f"(0-{num_labels - 1})", path)
    return boxes.astype(np.float32, copy=False), scores.astype(np.float32, copy=False), class_ids.astype(np.int64)


class FasterRCNNDetector(Detector):
    """Runs a slidewin region-proposal model and returns `Detections` in original-image pixels.

    A `slidewin.core.detector.Detector`.

    Args:
        model: ONNX file written by ``slidewin export frcnn-resnet50-fpn-v2``.
        min_score: keep boxes scoring at least this (the graph itself keeps everything above
            its own low export threshold, 0.05 for Faster R-CNN).
        classes: label names to keep (e.g. ``["person", "dog"]``), or None for every label.
        device: ``auto`` (CUDA when usable, else CPU), ``cpu`` or ``cuda``.
        threads: ORT intra-op threads (default: physical cores).
        session: an already open session of ``model`` when ``model`` is a path (skips opening it again).

    ``class_ids`` of the result index into the model's own label list (``meta.labels``; for COCO
    the 91 torchvision categories, including ``__background__`` and the ``N/A`` gaps).
    """

    def __init__(self, model: str | Path, min_score: float = 0.5, classes: Iterable[str] | None = None,
                 device: Device | str = Device.AUTO, threads: int | None = None, session=None):
        self.path = Path(model)
        self.session = session or open_session(self.path, SessionSettings(device=device, threads=threads))
        self.meta: ModelMeta = read_meta(self.session, self.path)
        self.last_stats: RunStats | None = None
        if self.meta.kind is not ModelKind.REGION_PROPOSAL:
            raise ModelError(f"is a {self.meta.kind.value} model, not a region-proposal model", self.path)
        self.input_name, self.input_dtype = check_image_input(self.session.get_inputs(), self.meta, self.path)
        batch = self.session.get_inputs()[0].shape[0]
        if isinstance(batch, int) and batch != 1:
            raise ModelError(f"input batch is {batch}; a region-proposal model takes one image (batch 1)", self.path)
        names = [o.name for o in self.session.get_outputs()]
        missing = [n for n in REGION_OUTPUTS if n not in names]
        if missing:
            raise ModelError(f"outputs {names} lack {', '.join(missing)} (expected boxes, scores, labels)", self.path)
        if not 0 <= min_score <= 1:
            raise SlidewinError(f"min_score must lie in [0, 1], got {min_score}")
        self.min_score = float(min_score)
        self.pad_rgb = _parse_pad(self.meta, self.path)
        self.rpn_proposals = _parse_rpn_proposals(self.meta, self.path)
        self.class_filter = self._class_ids(classes)

    def _class_ids(self, classes: Iterable[str] | None) -> np.ndarray | None:
        if classes is None:
            return None
        names = [c for c in classes]
        index = {name: i for i, name in enumerate(self.meta.labels)}
        unknown = [c for c in names if c not in index]
        if unknown:
            raise SlidewinError(
                f"unknown class {', '.join(map(repr, unknown))}: not a label of this {self.meta.label_set} model"
            )
        return np.array(sorted({index[c] for c in names}), np.int64)

    @property
    def labels(self) -> tuple[str, ...]:
        return self.meta.labels

    @property
    def input_hw(self) -> tuple[int, int]:
        """The canvas every image is letterboxed into."""
        return self.meta.input_hw

    @property
    def providers(self) -> list[str]:
        return self.session.get_providers()

    def prepare(self, image: np.ndarray) -> None:
        """Nothing to do ahead: proposals happen inside the graph."""
        return None

    def detect(self, image: np.ndarray, prepared: None = None) -> Detections:
        """Detect in a uint8 RGB (H, W, 3) image; boxes in its pixels.

        In `last_stats`, ``windows`` is the number of region proposals the ROI head
        scored (the RPN's post-NMS top-N, from the metadata key ``rpn_proposals``; the number of
        boxes the graph returned for models exported without it), ``unit`` is "proposals",
        ``candidates`` the number of returned boxes left after ``min_score`` and the class
        filter, ``levels`` is 1 (one canvas), and ``seconds`` has the stages ``letterbox``,
        ``inference`` and ``postprocess``.
        """
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise SlidewinError(f"expected a uint8 RGB (H, W, 3) image, got {image.dtype} {image.shape}")
        stats = RunStats.for_stages(Stage.LETTERBOX, Stage.INFERENCE, Stage.POSTPROCESS, levels=1,
                                    unit=Unit.PROPOSALS)
        t0 = time.perf_counter()
        canvas, scale_xy, pad_xy = letterbox_image(image, self.input_hw, self.pad_rgb)
        batch = canvas[None]
        if batch.dtype != self.input_dtype:
            batch = batch.astype(self.input_dtype)
        t1 = time.perf_counter()
        boxes, scores, class_ids = check_region_outputs(
            *self.session.run(list(REGION_OUTPUTS), {self.input_name: batch}), len(self.labels), self.path)
        t2 = time.perf_counter()
        stats.windows = len(boxes) if self.rpn_proposals is None else self.rpn_proposals
        keep = scores >= self.min_score
        if self.class_filter is not None:
            keep &= np.isin(class_ids, self.class_filter)
        stats.candidates = int(keep.sum())
        xyxy = canvas_to_image(boxes[keep], scale_xy, pad_xy, image.shape[:2])
        nonempty = (xyxy[:, 2] > xyxy[:, 0]) & (xyxy[:, 3] > xyxy[:, 1])
        dets = Detections(xyxy[nonempty], scores[keep][nonempty], class_ids[keep][nonempty], self.labels).sorted()
        stats.add(Stage.LETTERBOX, t1 - t0)
        stats.add(Stage.INFERENCE, t2 - t1)
        stats.add(Stage.POSTPROCESS, time.perf_counter() - t2)
        self.last_stats = stats
        return dets


#: The name this detector had before issue 21 ("proposal" named three things).
RegionProposalDetector = FasterRCNNDetector
