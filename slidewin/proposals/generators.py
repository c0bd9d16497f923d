"""Proposal generators: image -> candidate boxes, deterministic, behind one small interface.

A generator is any callable ``generate(image) -> float32 (K, 4) xyxy`` in image pixels, ranked
best first, the same boxes every time for the same image. Two kinds:

- **selective search** (Uijlings et al. 2013, OpenCV's ``ximgproc``, one thread): hierarchical
  grouping of a graph-based over-segmentation; boxes that fit objects. Three of OpenCV's modes:
  ``selective-search-single`` (one colour space, one segmentation: ~430 boxes, 0.4 s on a 640 px
  photo), ``selective-search-fast`` (2 colour spaces x 2 segmentations x 2 strategies: ~2,000
  boxes, ~2.5 s) and ``selective-search`` (the full method: more colour spaces and segmentations;
  several times slower).
- **windows**: the sliding-window grid itself (`slidewin.pipeline.regions.WindowGrid`, the one
  window planner), so that windows and proposals are measured on the same terms.

Selective search costs time and memory that grow faster than the pixel count, and worse on long
thin images (measured, one core: 2 s and 0.1 GB at 640x422, 19 s at 1280x844, 51 s at 1920x1266;
a 4000x100 strip of 0.4 MP 12 s, 8000x100 51 s and 0.6 GB), so it runs on a *working copy*
(`working_plan`): the photo scaled down to at most `WORK_PIXELS` pixels (640x640: any COCO
photo runs at its own size, as before), its short side kept at `MIN_WORK_SIDE` pixels where that budget would make
a strip thinner (up to `STRIP_PIXELS` times that budget), and a copy longer than `MAX_ASPECT` times
its short side cut into overlapping tiles of that shape (each overlapping the next by its short
side, so that an object up to the strip's height lies whole in one tile). The boxes are mapped
back to the photo's pixels, ranked, and at most `MAX_REGIONS` kept, so time, memory and the
region count are bounded by the working size whatever the photo; scoring still uses the photo
at full resolution. The recall this costs is measured in docs/quality.md (benchmarks/quality/
ss_working_size.py).

`clean_proposals` does what every generator's output needs: clip to the image, drop boxes
smaller than a minimum side, drop exact duplicates, keep the first ``max_count``.
"""

from __future__ import annotations

import math
from enum import StrEnum

import cv2
import numpy as np

from slidewin.core.detector import Stage, Unit
from slidewin.errors import MissingDependencyError


class ProposalMethod(StrEnum):
    """Where candidate boxes come from (``--proposals``)."""

    WINDOWS = "windows"
    SELECTIVE_SEARCH = "selective-search"
    SELECTIVE_SEARCH_FAST = "selective-search-fast"
    SELECTIVE_SEARCH_SINGLE = "selective-search-single"


#: Selective search runs on a copy of the photo scaled to at most this many pixels (640x640: any
#: COCO photo runs at its own size, as before; a 4:3 photo of any size at 739x554); chosen from
#: the recall and time measured in docs/quality.md.
WORK_PIXELS = 640 * 640
#: The working copy's short side is kept at least this many pixels when `WORK_PIXELS` would make
#: it thinner (a 30000x200 strip would become 7838x52) ...
MIN_WORK_SIDE = 64
#: ... as long as the copy stays within this many times `WORK_PIXELS` (past it the short side
#: shrinks too).
STRIP_PIXELS = 4
#: A working copy longer than this many times its short side is searched in tiles of that shape.
MAX_ASPECT = 4.0
#: At most this many boxes (best ranked) are kept from one photo, whatever its tiles gave.
MAX_REGIONS = 20_000

_SS_MODES = {
    ProposalMethod.SELECTIVE_SEARCH: "switchToSelectiveSearchQuality",
    ProposalMethod.SELECTIVE_SEARCH_FAST: "switchToSelectiveSearchFast",
    ProposalMethod.SELECTIVE_SEARCH_SINGLE: "switchToSingleStrategy",
}


def clean_proposals(xyxy: np.ndarray, image_hw: tuple[int, int], min_size: float = 0.0,
                    max_count: int | None = None) -> np.ndarray:
    """Clip boxes to the image, drop those narrower or shorter than ``min_size`` pixels and exact
    duplicates (the first copy stays), and keep the first ``max_count``, in their order.

    Returns:
        float32 (K, 4) with ``0 <= x1 < x2 <= W`` and ``0 <= y1 < y2 <= H``.
    """
    h, w = image_hw
    b = np.asarray(xyxy, np.float32).reshape(-1, 4).copy()
    np.clip(b[:, 0::2], 0, w, out=b[:, 0::2])
    np.clip(b[:, 1::2], 0, h, out=b[:, 1::2])
    big = (b[:, 2] - b[:, 0] >= max(min_size, 1e-6)) & (b[:, 3] - b[:, 1] >= max(min_size, 1e-6))
    b = b[big]
    _, first = np.unique(b, axis=0, return_index=True)
    b = b[np.sort(first)]
    return b[:max_count] if max_count is not None else b


def working_size(image_hw: tuple[int, int], work_pixels: int | None = WORK_PIXELS) -> tuple[int, int]:
    """(height, width) of the copy selective search runs on: the image scaled (never up) to at most
    ``work_pixels`` pixels, its short side kept at `MIN_WORK_SIDE` (or the image's) as long as the
    copy stays within `STRIP_PIXELS` times ``work_pixels``. ``work_pixels`` None: the image's own
    size."""
    h, w = image_hw
    if work_pixels is None or h * w <= work_pixels:
        return h, w
    scale = math.sqrt(work_pixels / (h * w))
    short = min(h, w)
    if short * scale < MIN_WORK_SIDE:  # a strip: keep its height (width) rather than its pixel budget
        scale = max(scale, min(1.0, MIN_WORK_SIDE / short, math.sqrt(STRIP_PIXELS * work_pixels / (h * w))))
    return max(1, int(h * scale + 1e-6)), max(1, int(w * scale + 1e-6))  # never past the budget


def tile_spans(length: int, short: int, max_aspect: float = MAX_ASPECT) -> list[tuple[int, int]]:
    """``[start, end)`` spans along an axis ``length`` long of tiles at most ``max_aspect * short``
    long, each overlapping the next by ``short`` (so that anything up to ``short`` long lies whole
    in one tile); one span when the axis is short enough."""
    tile = max(short + 1, int(max_aspect * short))
    if length <= tile:
        return [(0, length)]
    step = tile - short
    starts = list(range(0, length - tile, step)) + [length - tile]
    return [(a, a + tile) for a in starts]


def working_plan(image_hw: tuple[int, int], work_pixels: int | None = WORK_PIXELS
                 ) -> tuple[tuple[int, int], list[tuple[int, int, int, int]]]:
    """The working copy's size (`working_size`) and its tiles ``(y0, y1, x0, x1)`` in working
    pixels: one tile unless it is longer than `MAX_ASPECT` times its short side (`tile_spans`).
    ``work_pixels`` None: the image itself in one piece (unbounded; for comparison)."""
    wh, ww = working_size(image_hw, work_pixels)
    if work_pixels is None:
        return (wh, ww), [(0, wh, 0, ww)]
    if ww >= wh:
        return (wh, ww), [(0, wh, x0, x1) for x0, x1 in tile_spans(ww, wh)]
    return (wh, ww), [(y0, y1, 0, ww) for y0, y1 in tile_spans(wh, ww)]


class SelectiveSearch:
    """OpenCV's selective search as a generator.

    Args:
        method: one of the ``selective-search*`` `ProposalMethod` values.
        work_pixels: search a copy of at most this many pixels, tiled when long and thin
            (`working_plan`; None: the photo itself, untiled, whatever its size: unbounded).

    The boxes are the same for the same image, and so is their order: see `rank_proposals`. It
    runs on one thread (``cv2.setNumThreads`` does not change it) and releases the GIL, so it runs
    in a worker thread beside ONNX Runtime.
    """

    unit = Unit.PROPOSALS
    stages = (Stage.PROPOSALS,)
    gives_plan = False  # boxes only: a plan scorer (patch, dense) cannot score them

    def __init__(self, method: ProposalMethod | str = ProposalMethod.SELECTIVE_SEARCH_FAST,
                 min_size: float = 16.0, max_proposals: int | None = 2000, work_pixels: int | None = WORK_PIXELS):
        self.method = ProposalMethod(method)
        self.min_size, self.max_proposals, self.work_pixels = min_size, max_proposals, work_pixels
        if self.method not in _SS_MODES:
            raise ValueError(f"{self.method} is not a selective-search method")
        if not hasattr(cv2, "ximgproc"):  # a plain OpenCV wheel: no contrib modules
            raise MissingDependencyError(
                "selective search needs OpenCV's contrib modules: pip uninstall opencv-python-headless "
                "opencv-python && pip install opencv-contrib-python-headless")

    def boxes(self, image: np.ndarray) -> np.ndarray:
        """The regions of a classifier detector: the proposals cleaned (`clean_proposals` with
        ``min_size`` and ``max_proposals``), float32 (K, 4) xyxy, best first."""
        return clean_proposals(self(image), image.shape[:2], self.min_size, self.max_proposals)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """uint8 RGB (H, W, 3) -> float32 (K, 4) xyxy in the image's pixels, best first (ranked by
        `rank_proposals`), at most `MAX_REGIONS`: found on the working copy (`working_plan`)."""
        h, w = image.shape[:2]
        (wh, ww), tiles = working_plan((h, w), self.work_pixels)
        work = image if (wh, ww) == (h, w) else cv2.resize(image, (ww, wh), interpolation=cv2.INTER_AREA)
        found = []
        for y0, y1, x0, x1 in tiles:
            boxes = self._search(work[y0:y1, x0:x1])
            found.append(boxes + np.array([x0, y0, x0, y0], np.float32))
        xyxy = np.concatenate(found) if found else np.zeros((0, 4), np.float32)
        if (wh, ww) != (h, w):
            xyxy *= np.array([w / ww, h / wh, w / ww, h / wh], np.float32)
            np.minimum(xyxy, np.array([w, h, w, h], np.float32), out=xyxy)
        return rank_proposals(xyxy)[:MAX_REGIONS]

    def _search(self, image: np.ndarray) -> np.ndarray:
        """OpenCV's boxes for one uint8 RGB image or tile: float32 (K, 4) xyxy, in its order."""
        ss = cv2.ximgproc.segmentation.createSelectiveSearchSegmentation()
        ss.setBaseImage(cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2BGR))
        getattr(ss, _SS_MODES[self.method])()
        rects = ss.process()
        if rects is None or len(rects) == 0:
            return np.zeros((0, 4), np.float32)
        r = np.asarray(rects, np.float32).reshape(-1, 4)  # x, y, w, h
        return np.stack([r[:, 0], r[:, 1], r[:, 0] + r[:, 2], r[:, 1] + r[:, 3]], axis=1)


def rank_proposals(xyxy: np.ndarray) -> np.ndarray:
    """Selective-search boxes in a reproducible rank order, best first.

    Uijlings et al. rank a region by its hierarchy level times a random number, so that small
    (early) and large (late) regions mix near the top. OpenCV does that with C ``rand()``, but its
    order is not reproducible in a process that has loaded ONNX Runtime, even reseeded (measured:
    2 to 5 calls in 20 gave another order of the very same boxes). So the boxes are ranked here the
    same way from what they are: a fixed pseudo-random factor in [0, 1) hashed from the box's
    coordinates, times a level proxy, ``1 + log2(area / smallest area)``; ascending, ties by box.
    """
    b = np.asarray(xyxy, np.float32).reshape(-1, 4)
    if len(b) == 0:
        return b
    ints = np.round(b).astype(np.uint64)
    h = np.full(len(b), 1469598103934665603, np.uint64)  # FNV-1a over the four coordinates
    with np.errstate(over="ignore"):
        for k in range(4):
            h = (h ^ ints[:, k]) * np.uint64(1099511628211)
    u = (h >> np.uint64(11)).astype(np.float64) / float(1 << 53)
    area = np.maximum((b[:, 2] - b[:, 0]).astype(np.float64) * (b[:, 3] - b[:, 1]), 1.0)
    key = u * (1.0 + np.log2(area / area.min()))
    return b[np.lexsort((b[:, 3], b[:, 2], b[:, 1], b[:, 0], key))]

