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

`clean_proposals` does what every generator's output needs: clip to the image, drop boxes
smaller than a minimum side, drop exact duplicates, keep the first ``max_count``.
"""

from __future__ import annotations

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


class SelectiveSearch:
    """OpenCV's selective search as a generator.

    Args:
        method: one of the ``selective-search*`` `ProposalMethod` values.

    The boxes are the same for the same image, and so is their order: see `rank_proposals`. It
    runs on one thread (``cv2.setNumThreads`` does not change it) and releases the GIL, so it runs
    in a worker thread beside ONNX Runtime.
    """

    unit = Unit.PROPOSALS
    stages = (Stage.PROPOSALS,)
    gives_plan = False  # boxes only: a plan scorer (patch, dense) cannot score them

    def __init__(self, method: ProposalMethod | str = ProposalMethod.SELECTIVE_SEARCH_FAST,
                 min_size: float = 16.0, max_proposals: int | None = 2000):
        self.method = ProposalMethod(method)
        self.min_size, self.max_proposals = min_size, max_proposals
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
        """uint8 RGB (H, W, 3) -> float32 (K, 4) xyxy, best first (as OpenCV gives them, ranked)."""
        ss = cv2.ximgproc.segmentation.createSelectiveSearchSegmentation()
        ss.setBaseImage(cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        getattr(ss, _SS_MODES[self.method])()
        rects = ss.process()
        if rects is None or len(rects) == 0:
            return np.zeros((0, 4), np.float32)
        r = np.asarray(rects, np.float32).reshape(-1, 4)  # x, y, w, h
        return rank_proposals(np.stack([r[:, 0], r[:, 1], r[:, 0] + r[:, 2], r[:, 1] + r[:, 3]], axis=1))


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

