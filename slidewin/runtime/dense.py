"""Dense (fully-convolutional) classifiers at run time: one pass per pyramid level, in tiles.

`DenseClassifier` opens a classifier's dense rewrite (`slidewin.runtime.dense_graph`) with the
classifier's own session settings, and turns one pyramid level into every window's class
probabilities at once.

Big levels are run in tiles (`tile_spans`) so that memory stays bounded whatever the image size:
each tile computes a block of window cells exactly once, plus a *context margin* of extra pixels
around it. A cell's value depends on every pixel in its receptive field, which reaches well past
the window (851 px for EfficientNet-Lite0, 483 px for ResNet50, against 224 px windows); without
the margin, cells near a tile edge would see zero padding where the untiled pass sees the image.
The margin is derived from the kernels and strides of the graph when the dense form is built,
so tiled maps equal the untiled pass up to float noise (tests/runtime/test_dense.py).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import replace

import numpy as np

from slidewin.core.contract import FEATURE_MAP, PROBABILITY_MAP, Key
from slidewin.errors import ModelError
from slidewin.io.filememo import identity, recall, remember
# Levels of more than DEFAULT_MAX_TILE ** 2 pixels are run in tiles of at most that many (the
# default of --dense-tile, kept with the config, which must not load ONNX Runtime for it). Tiles
# recompute their context margins (~450 px a side for EfficientNet-Lite0), so smaller ones cost
# time: one 4480 x 4480 level of EfficientNet-Lite0 on 2 CPU cores peaks at 4.5 GB in 8.9 s
# untiled, 2.5 GB in 13.5 s with the default 3072 (5 strips), 1.3 GB in 29 s at 2048 (24 tiles).
from slidewin.pipeline.config import DEFAULT_MAX_TILE
from slidewin.runtime.dense_graph import (DenseCacheError, UnsupportedGraph, build_dense_model, cached_digest,
                                         dense_model_paths)
from slidewin.runtime.sessions import check_finite, open_session, open_session_bytes

#: A cached dense form is used only if, on a probe image at the trained size, its one probability
#: cell is within this of the classifier's output: float noise is ~1e-7, another network is far off.
PROBE_TOLERANCE = 1e-3
#: The `slidewin.io.filememo` key under which a dense file's passed probe is remembered: the
#: source digest the probe was made for.
_PROBED = "dense_probe_passed_for"


def tile_spans(length: int, window: int, stride: int, count: int, margin: int) -> list[tuple[int, int, int, int]]:
    """Split one axis of a dense level into ``count`` tiles that compute every window cell once.

    The level has ``cells = (length - window) // stride + 1`` windows along the axis, cell ``c``
    at pixels ``[c * stride, c * stride + window)``. A tile computes cells ``[c0, c1)`` from
    pixels ``[p0, p1)``: the cells' own pixels plus at least ``margin`` (rounded up to whole
    strides) on each side, or up to the level's edge. ``p0`` is a multiple of the stride, so the
    tile's cells lie on the level's grid. Cells are shared out evenly and every tile has the same
    extent ``window + k * stride`` (tiles at the edges take more context instead of shrinking):
    ONNX Runtime then reuses one set of buffers for all of them, where differently shaped passes
    would each grow its memory arena.

    Args:
        length: the level's extent in pixels, ``window + k * stride``.
        window: the network's input size along the axis.
        stride: the network's stride.
        count: tiles wanted (fewer when cells do not share out evenly; 1: the whole axis).
        margin: context pixels wanted on each side of a tile's cells.

    Returns:
        ``[(c0, c1, p0, p1), ...]`` in order; the ``[c0, c1)`` partition ``[0, cells)``.
    """
    if length < window or window < 1 or stride < 1:
        raise ValueError(f"need length >= window >= 1 and stride >= 1, got {length}, {window}, {stride}")
    cells = (length - window) // stride + 1
    per = math.ceil(cells / max(1, min(count, cells)))
    if per >= cells:
        return [(0, cells, 0, length)]
    extent = _tile_extent(length, window, stride, per, margin)
    spans = []
    for c0 in range(0, cells, per):
        p0 = min(max(0, c0 * stride - _whole(margin, stride)), length - extent)
        spans.append((c0, min(cells, c0 + per), p0, p0 + extent))
    return spans


def _whole(margin: int, stride: int) -> int:
    return stride * math.ceil(max(margin, 0) / stride)


def _tile_extent(length: int, window: int, stride: int, per: int, margin: int) -> int:
    """Extent of tiles of ``per`` cells with their margins (the whole axis when they cover it)."""
    cells = (length - window) // stride + 1
    if per >= cells:
        return length
    return min(length, (per - 1) * stride + window + 2 * _whole(margin, stride))


def plan_tiles(level_hw: tuple[int, int], input_hw: tuple[int, int], stride: int, max_pixels: int,
               margin_hw: tuple[int, int]) -> tuple[list, list]:
    """Row and column `tile_spans` for a level: one pass when it has at most ``max_pixels`` pixels,
    else the grid of tiles of at most ``max_pixels`` each that computes the fewest pixels in all
    (margins make many small tiles costly). When no tile of a cell and its margins fits, the
    smallest tiles there are.

    Returns:
        (row spans, column spans); the tiles are their product.
    """
    (h, w), (in_h, in_w) = level_hw, input_hw
    rows, cols = (h - in_h) // stride + 1, (w - in_w) // stride + 1
    if h * w <= max_pixels:
        return [(0, rows, 0, h)], [(0, cols, 0, w)]
    best = None  # (pixels over the budget, pixels computed, rows per tile, columns per tile)
    for per_y in range(1, rows + 1):
        ey = _tile_extent(h, in_h, stride, per_y, margin_hw[0])
        widest = max_pixels // ey
        if w <= widest:
            per_x = cols
        else:
            per_x = max(1, (widest - in_w - 2 * _whole(margin_hw[1], stride)) // stride + 1)
            per_x = math.ceil(cols / math.ceil(cols / per_x))
        ex = _tile_extent(w, in_w, stride, per_x, margin_hw[1])
        score = (max(0, ey * ex - max_pixels), math.ceil(rows / per_y) * math.ceil(cols / per_x) * ey * ex)
        if best is None or score < best[:2]:
            best = (*score, per_y, per_x)
    per_y, per_x = best[2:]
    return (tile_spans(h, in_h, stride, math.ceil(rows / per_y), margin_hw[0]),
            tile_spans(w, in_w, stride, math.ceil(cols / per_x), margin_hw[1]))


class DenseClassifier:
    """The dense form of a `Classifier`: one pass over a pyramid level gives every window's probabilities.

    Levels of more than ``max_tile ** 2`` pixels are run in tiles of at most that many pixels,
    with a context margin (`plan_tiles`), so memory is bounded by the tile size and the result
    equals one pass over the whole level up to float noise.

    Args:
        classifier: a slidewin classifier; its dense form is read from the cache when the cached
            file is today's and computes what the classifier computes, else built and cached
            (`slidewin.runtime.dense_graph`); where it can be written nowhere (beside the model,
            the cache folder), it is kept in memory for this run. It is opened with the
            classifier's settings.
        max_tile: one pass holds at most ``max_tile ** 2`` pixels (0: never tile).

    Raises:
        UnsupportedGraph: the rewrite does not know the graph, or does not reproduce its output.

    Attributes:
        context_hw: (y, x) pixels of context each tile gets around its windows; set it to trade
            exactness for speed (smaller margins recompute less; 0 gives zero-padded tile edges).
    """

    def __init__(self, classifier, max_tile: int = DEFAULT_MAX_TILE):
        self.classifier = classifier
        # The classifier's device, threads and provider options; memory patterns off, as every
        # level has its own shape (see `SessionSettings.memory_pattern`).
        self.settings = replace(classifier.settings, memory_pattern=False)
        self.input_dtype = classifier.input_dtype
        self._model_bytes: bytes | None = None
        #: The dense form's file; None when it could be written nowhere and is kept in memory.
        self.path: Path | None
        self.path, self.session = self._open()
        self.input_name = self.session.get_inputs()[0].name
        self.max_tile = max_tile
        props = dict(self.session.get_modelmeta().custom_metadata_map)
        # The stride the rewrite found in the graph (the metadata may not state one).
        self.stride = _int(props.get(Key.FEATURE_STRIDE)) or classifier.meta.feature_stride
        self.context_hw = self._context(props.get(Key.DENSE_CONTEXT, ""))
        #: Feature cells a window of the input size averages (7 x 7 for 224 px at stride 32).
        self.pool_hw = self._pool(props.get(Key.DENSE_POOL, ""))
        self._head: DenseHead | None = None

    def _open(self):
        """(path, session) of a cached dense form that passes the checks, or of a fresh one."""
        clf = self.classifier
        for candidate in dense_model_paths(clf.path):
            session = self._usable(candidate)
            if session is not None:
                return candidate, session
        try:
            path = build_dense_model(clf.path, clf.meta)
        except DenseCacheError as e:
            if e.model_bytes is None:
                raise
            # Neither beside the model nor in the cache folder can be written (a read-only
            # install, a locked-down container): this run keeps the dense form in memory, and
            # the next one builds it again (a second or two).
            session = open_session_bytes(e.model_bytes, self.settings, "dense model", clf.path)
            if not self._matches(session):
                raise UnsupportedGraph("the dense rewrite does not reproduce the classifier's output: use --mode "
                                       "patch", clf.path) from None
            self._model_bytes = e.model_bytes
            return None, session
        ident = identity(path)
        session = open_session(path, self.settings, what="dense model")
        if not self._matches(session):
            raise UnsupportedGraph("the dense rewrite does not reproduce the classifier's output: use --mode patch",
                                   clf.path)
        remember(path, _PROBED, dict(session.get_modelmeta().custom_metadata_map).get(Key.DENSE_SOURCE), ident)
        return path, session

    def _usable(self, candidate):
        """The session of a cached dense form, if it is today's and computes what the classifier does.

        The probe is made once per version of the cached file: its passing is remembered in the
        cache folder (`slidewin.io.filememo`) against the digest it was made for, so that later
        commands open neither the classifier's session nor run the probe."""
        ident = identity(candidate)
        if ident is None:
            return None
        try:
            session = open_session(candidate, self.settings, what="dense model")
        except ModelError:  # damaged: rebuild it
            return None
        props = dict(session.get_modelmeta().custom_metadata_map)
        digest = cached_digest(props, self.classifier.path)
        if digest is None or props.get(Key.DENSE_SOURCE) != digest:
            return None
        if recall(candidate, _PROBED, ident) == digest:
            return session
        if not self._matches(session):
            return None
        remember(candidate, _PROBED, digest, ident)
        return session

    def _matches(self, session) -> bool:
        """Whether a dense session's single cell at the trained size equals the classifier's output."""
        clf = self.classifier
        h, w = clf.input_hw
        yy, xx = np.mgrid[0:h, 0:w]
        probe = np.stack([xx * 255 // max(w - 1, 1), yy * 255 // max(h - 1, 1), (xx * yy) % 256], -1).astype(np.uint8)
        want = clf.predict(probe[None])[0]
        try:
            got = session.run([PROBABILITY_MAP], {session.get_inputs()[0].name: probe[None].astype(self.input_dtype)})[0][0]
        except Exception:  # a file with other inputs or outputs: not ours
            return False
        return got.shape == (1, 1, len(want)) and bool(np.abs(got[0, 0] - want).max() <= PROBE_TOLERANCE)

    def _pool(self, value: str) -> tuple[int, int]:
        try:
            h, w = (int(v) for v in value.lower().split("x"))
            return h, w
        except ValueError:
            s, (h, w) = self.stride or 1, self.classifier.input_hw
            return -(-h // s), -(-w // s)

    def _context(self, value: str) -> tuple[int, int]:
        try:
            h, w = (int(v) for v in value.lower().split("x"))
            return h, w
        except ValueError:
            # Unbounded receptive field (e.g. squeeze-and-excite): tiles cannot match the untiled
            # pass exactly; one window of context on each side keeps their edges close to it.
            return self.classifier.input_hw

    def _run(self, image: np.ndarray, output: str = PROBABILITY_MAP) -> np.ndarray:
        x = image[None]
        if x.dtype != self.input_dtype:
            x = x.astype(self.input_dtype)
        return check_finite(self.session.run([output], {self.input_name: x})[0][0], self.classifier.path)

    def feature_map(self, level_image: np.ndarray) -> np.ndarray:
        """uint8 (H, W, 3) level -> float32 (C, rows, cols): the last feature map, one cell per
        ``stride`` pixels, in one pass (callers keep levels within ``max_tile ** 2`` pixels)."""
        return self._run(level_image, FEATURE_MAP)

    def head(self) -> "DenseHead":
        """The classifier's head as the dense form computes it, on pooled feature vectors (for
        pooled proposal scoring): a `DenseHead`, read from the dense model once."""
        if self._head is None:
            import onnx

            from slidewin.runtime.dense_graph import dense_head

            source = onnx.load(str(self.path)) if self.path is not None else onnx.load_from_string(self._model_bytes)
            model, channels = dense_head(source)
            self._head = DenseHead(model, channels, len(self.classifier.labels), self.settings.threads)
        return self._head

    def tiles(self, level_hw: tuple[int, int]) -> list[tuple[tuple[int, int, int, int], tuple[int, int, int, int]]]:
        """The (row span, column span) of every pass over a level of this size (see `plan_tiles`)."""
        (h, w), (in_h, in_w) = level_hw, self.classifier.input_hw
        if not self.max_tile or not self.stride or h < in_h or w < in_w or h * w <= self.max_tile ** 2:
            step = self.stride or 1
            return [((0, 1 + max(h - in_h, 0) // step, 0, h), (0, 1 + max(w - in_w, 0) // step, 0, w))]
        rows, cols = plan_tiles(level_hw, (in_h, in_w), self.stride, self.max_tile ** 2, self.context_hw)
        return [(r, c) for r in rows for c in cols]

    def iter_tiles(self, level_image: np.ndarray) -> Iterator[tuple[slice, slice, np.ndarray]]:
        """Stream a level's probability map tile by tile.

        Yields:
            (rows, cols, probs): slices of the level's window grid and float32
            (len(rows), len(cols), num_labels) probabilities of those windows.
        """
        spans = self.tiles(level_image.shape[:2])
        if len(spans) == 1:
            pmap = self._run(level_image)
            yield slice(0, pmap.shape[0]), slice(0, pmap.shape[1]), pmap
            return
        s = self.stride
        for (r0, r1, y0, y1), (c0, c1, x0, x1) in spans:
            pmap = self._run(np.ascontiguousarray(level_image[y0:y1, x0:x1]))
            ro, co = (r0 * s - y0) // s, (c0 * s - x0) // s
            yield slice(r0, r1), slice(c0, c1), pmap[ro:ro + r1 - r0, co:co + c1 - c0]

    def predict_map(self, level_image: np.ndarray) -> np.ndarray:
        """uint8 (H, W, 3) level -> float32 (rows, cols, num_labels) window probabilities."""
        spans = self.tiles(level_image.shape[:2])
        if len(spans) == 1:
            return self._run(level_image)
        (_, n_rows, _, _), (_, n_cols, _, _) = spans[-1]
        out = None
        for rows, cols, probs in self.iter_tiles(level_image):
            if out is None:
                out = np.empty((n_rows, n_cols, probs.shape[2]), np.float32)
            out[rows, cols] = probs
        return out


def _int(value: str | None) -> int:
    try:
        return int(value or 0)
    except ValueError:
        return 0


class DenseHead:
    """A classifier's head alone: pooled feature vectors -> class probabilities.

    It is the classifier's own head nodes (dense layers, activations, normalisations, softmax),
    cut from its dense form (`slidewin.runtime.dense_graph.dense_head`) and run by ONNX Runtime
    on the CPU: a few small matrix products per batch of vectors.

    Attributes:
        channels: C, the length of a pooled vector.
        num_labels: K.
    """

    def __init__(self, model, channels: int, num_labels: int, threads: int | None = None):
        from slidewin.runtime.dense_head import VECTOR_PROBABILITIES
        from slidewin.runtime.sessions import open_in_memory

        self.session = open_in_memory(model, threads or 1)
        inp = self.session.get_inputs()[0]
        self._input, self._output = inp.name, VECTOR_PROBABILITIES
        self._dtype = np.float16 if "float16" in inp.type else np.float32
        self.channels, self.num_labels = channels, num_labels

    def __call__(self, pooled: np.ndarray) -> np.ndarray:
        """float (B, C) pooled vectors -> float32 (B, num_labels) probabilities."""
        if not len(pooled):
            return np.zeros((0, self.num_labels), np.float32)
        x = np.ascontiguousarray(pooled, dtype=self._dtype)
        return self.session.run([self._output], {self._input: x})[0].astype(np.float32, copy=False)
