"""Dense (fully-convolutional) classifiers: one pass per pyramid level instead of one per window.

OverFeat's observation (Sermanet et al. 2013): a CNN classifier whose head is global average
pooling + a dense layer computes, for a window, ``softmax(W @ mean(F[window]) + b)`` where F is
its last feature map. Replacing the global pool by an average pool of the feature-map size the
network was trained at (7x7 for 224 px at stride 32), with stride 1, and the dense layer by the
equivalent 1x1 convolution, gives one class-probability vector per window position at the
network's stride, for all windows of an image at once, sharing the convolutions.

The rewrite works on any slidewin classifier whose graph ends in
``GlobalAveragePool -> (Reshape|Squeeze|Flatten)* -> MatMul [+ Add] | Gemm -> Softmax``
(both exporters produce that). It is done once and cached beside the model (or in
``~/.cache/slidewin`` when that folder is read-only), keyed by the model's sha256.

Big levels are run in tiles (`tile_spans`) so that memory stays bounded whatever the image size:
each tile computes a block of window cells exactly once, plus a *context margin* of extra pixels
around it. A cell's value depends on every pixel in its receptive field, which reaches well past
the window (851 px for EfficientNet-Lite0, 483 px for ResNet50, against 224 px windows); without
the margin, cells near a tile edge would see zero padding where the untiled pass sees the image.
The margin is derived from the kernels and strides of the graph when the dense form is built,
so tiled maps equal the untiled pass up to float noise (tests/test_folder.py).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np

from slidewin.errors import ModelError
from slidewin.model_meta import ModelMeta, sha256_of, write_metadata

OUTPUT_NAME = "probability_map"
_PASS_THROUGH = {"Reshape", "Squeeze", "Flatten", "Identity"}
_SOURCE_KEY = "dense_source_sha256"
_CONTEXT_KEY = "dense_context"  # "HxW" pixels of context a tile needs around its cells, or "unbounded"

#: Levels of more than DEFAULT_MAX_TILE ** 2 pixels are run in tiles of at most that many. Tiles
#: recompute their context margins (~450 px a side for EfficientNet-Lite0), so smaller ones cost
#: time: one 4480 x 4480 level of EfficientNet-Lite0 on 2 CPU cores peaks at 4.5 GB in 8.9 s
#: untiled, 2.5 GB in 13.5 s with this default (5 strips), 1.3 GB in 29 s at 2048 (24 tiles).
DEFAULT_MAX_TILE = 3072

# Ops whose output at one place depends on the whole input: no finite context margin exists.
_GLOBAL_OPS = {
    "GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool", "ReduceMean", "ReduceMax", "ReduceMin",
    "ReduceSum", "ReduceProd", "ReduceL1", "ReduceL2", "ReduceLogSumExp", "MatMul", "MatMulInteger",
    "QLinearMatMul", "Gemm", "Einsum", "Attention", "MultiHeadAttention", "ConvTranspose",
    "Resize", "Upsample",
}
_CONV_WEIGHT_INPUT = {"Conv": 1, "ConvInteger": 1, "QLinearConv": 3, "FusedConv": 1}
_POOLS = {"MaxPool", "AveragePool", "LpPool"}


def _producers(graph) -> dict:
    return {out: node for node in graph.node for out in node.output}


def _constant(graph, name: str) -> np.ndarray | None:
    from onnx import numpy_helper

    for t in graph.initializer:
        if t.name == name:
            return numpy_helper.to_array(t)
    for node in graph.node:
        if node.op_type == "Constant" and node.output[0] == name:
            return numpy_helper.to_array(node.attribute[0].t)
    return None


def _find_head(graph, output_name: str):
    """(GlobalAveragePool node, weight (C, K), bias (K,), nodes of the head) or raise ModelError."""
    prod = _producers(graph)
    softmax = prod.get(output_name)
    if softmax is None or softmax.op_type != "Softmax":
        raise ModelError("dense mode needs a graph ending in Softmax")
    head = [softmax]
    node = prod.get(softmax.input[0])
    bias = None
    if node is not None and node.op_type == "Add":
        head.append(node)
        a, b = node.input
        bias = _constant(graph, b)
        if bias is None:
            a, b = b, a
            bias = _constant(graph, b)
        node = prod.get(a)
    if node is None or node.op_type not in ("MatMul", "Gemm"):
        raise ModelError("dense mode needs a dense (MatMul/Gemm) layer before the Softmax")
    head.append(node)
    weight = _constant(graph, node.input[1])
    if weight is None:
        raise ModelError("dense mode needs the dense layer's weights as constants")
    if node.op_type == "Gemm":
        attrs = {a.name: a for a in node.attribute}
        if "transA" in attrs and attrs["transA"].i:
            raise ModelError("dense mode does not support Gemm with transA")
        if "transB" in attrs and attrs["transB"].i:
            weight = weight.T
        alpha = attrs["alpha"].f if "alpha" in attrs else 1.0
        beta = attrs["beta"].f if "beta" in attrs else 1.0
        weight = weight * alpha
        if len(node.input) > 2:
            c = _constant(graph, node.input[2])
            bias = (0 if bias is None else bias) + beta * c
    k = weight.shape[1]
    bias = np.zeros(k, np.float32) if bias is None else np.broadcast_to(bias, (k,))
    node = prod.get(node.input[0])
    while node is not None and node.op_type in _PASS_THROUGH:
        head.append(node)
        node = prod.get(node.input[0])
    if node is None or node.op_type != "GlobalAveragePool":
        raise ModelError("dense mode needs global average pooling before the dense layer")
    head.append(node)
    return node, weight.astype(np.float32), bias.astype(np.float32), head


def _feature_hw(model, feature_name: str, meta: ModelMeta) -> tuple[int, int]:
    """Spatial size of the last feature map at the trained input size (7x7 for ResNet50 at 224)."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    for vi in inferred.graph.value_info:
        if vi.name == feature_name:
            dims = [d.dim_value for d in vi.type.tensor_type.shape.dim]
            if len(dims) == 4 and dims[2] > 0 and dims[3] > 0:
                return dims[2], dims[3]
    if meta.feature_stride:
        return meta.input_hw[0] // meta.feature_stride, meta.input_hw[1] // meta.feature_stride
    raise ModelError("cannot tell the feature-map size (no shape information, no feature_stride)")


def _kernel(node, initializers: dict):
    """((kh, kw), (sh, sw), (dh, dw)) of a convolution or pooling node; None when unknown."""
    from onnx import helper

    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    kernel = attrs.get("kernel_shape")
    if kernel is None and node.op_type in _CONV_WEIGHT_INPUT:
        idx = _CONV_WEIGHT_INPUT[node.op_type]
        w = initializers.get(node.input[idx]) if len(node.input) > idx else None
        kernel = list(w.dims[2:]) if w is not None else None
    if kernel is None or len(kernel) != 2:
        return None
    strides = attrs.get("strides") or [1, 1]
    dilations = attrs.get("dilations") or [1, 1]
    return tuple(kernel), tuple(strides), tuple(dilations)


def receptive_field(graph, feature: str) -> tuple[int, int, int, int] | None:
    """Receptive field and stride of a tensor, in input pixels, from the graph's kernels and strides.

    Walks the (topologically sorted) graph from its image input: a convolution or pooling of
    kernel k, stride s, dilation d grows the field by ``d * (k - 1) * jump`` and the jump by
    ``s``; joins (residual adds, concats) take the largest field; other ops pass it through.

    Returns:
        ``(rf_h, rf_w, jump_h, jump_w)``, or None when an op with a global extent (a squeeze-
        and-excite pool, attention, resizing) or an unknown kernel comes first: then no finite
        margin reproduces the untiled pass.
    """
    inits = {t.name: t for t in graph.initializer}
    field: dict[str, tuple[int, int, int, int] | None] = {graph.input[0].name: (1, 1, 1, 1)}
    for node in graph.node:
        known = [field[i] for i in node.input if i in field]
        if not known:
            continue
        out = None
        if node.op_type not in _GLOBAL_OPS and all(k is not None for k in known):
            rh, rw, jh, jw = (max(k[i] for k in known) for i in range(4))
            out = (rh, rw, jh, jw)
            if node.op_type in _CONV_WEIGHT_INPUT or node.op_type in _POOLS:
                kernel = _kernel(node, inits)
                if kernel is None:
                    out = None
                else:
                    (kh, kw), (sh, sw), (dh, dw) = kernel
                    out = (rh + dh * (kh - 1) * jh, rw + dw * (kw - 1) * jw, jh * sh, jw * sw)
        for o in node.output:
            field[o] = out
        if feature in node.output:
            break
    return field.get(feature)


def context_margin(rf: int, jump: int, pool: int, window: int) -> int:
    """Pixels of context a tile needs on each side of its windows, a whole number of strides.

    A window of ``window`` pixels averages ``pool`` feature cells ``jump`` pixels apart, whose
    receptive fields (``rf`` pixels) reach ``rf + (pool - 1) * jump - window`` pixels past the
    window in all. Padding is about centred, so half of that lies on each side; one more stride
    absorbs the asymmetry of 'same' padding at strided layers.

    >>> context_margin(851, 32, 7, 224)   # EfficientNet-Lite0
    448
    """
    beyond = max(0, rf + (pool - 1) * jump - window)
    return jump * (math.ceil(beyond / 2 / jump) + 1)


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


def make_dense(model, meta: ModelMeta, source_sha256: str = ""):
    """Rewrite a slidewin classifier (``onnx.ModelProto``) into its dense form, in place.

    The result takes ``image`` uint8 (N, H, W, 3) of any size that is the trained size plus a
    multiple of the stride, and returns ``probability_map`` float32 (N, rows, cols, K): cell
    (i, j) is the classifier's output for the window at ``(j * stride, i * stride)``.
    """
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    gap, weight, bias, head = _find_head(graph, graph.output[0].name)
    feature = gap.input[0]
    fh, fw = _feature_hw(model, feature, meta)
    c, k = weight.shape
    field = receptive_field(graph, feature)
    if field is None:
        context = "unbounded"
    else:
        rh, rw, jh, jw = field
        context = (f"{context_margin(rh, jh, fh, meta.input_hw[0])}x"
                   f"{context_margin(rw, jw, fw, meta.input_hw[1])}")
    drop = {id(n) for n in head}
    kept = [n for n in graph.node if id(n) not in drop]
    w_name, b_name = "slidewin_dense/weight", "slidewin_dense/bias"
    graph.initializer.extend([
        numpy_helper.from_array(np.ascontiguousarray(weight.T).reshape(k, c, 1, 1), w_name),
        numpy_helper.from_array(bias, b_name),
    ])
    new = [
        helper.make_node("AveragePool", [feature], ["slidewin_dense/pooled"], kernel_shape=[fh, fw],
                         strides=[1, 1], name="slidewin_dense/pool"),
        helper.make_node("Conv", ["slidewin_dense/pooled", w_name, b_name], ["slidewin_dense/logits"],
                         kernel_shape=[1, 1], name="slidewin_dense/conv1x1"),
        helper.make_node("Softmax", ["slidewin_dense/logits"], ["slidewin_dense/probs"], axis=1,
                         name="slidewin_dense/softmax"),
        helper.make_node("Transpose", ["slidewin_dense/probs"], [OUTPUT_NAME], perm=[0, 2, 3, 1],
                         name="slidewin_dense/to_nhwc"),
    ]
    del graph.node[:]
    graph.node.extend(kept + new)
    # Drop initializers nobody reads any more (the old dense weights).
    used = {i for n in graph.node for i in n.input}
    keep_init = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep_init)
    inp = graph.input[0]
    dims = inp.type.tensor_type.shape.dim
    dims[1].Clear()
    dims[1].dim_param = "height"
    dims[2].Clear()
    dims[2].dim_param = "width"
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["batch", "rows", "cols", k]))
    del graph.value_info[:]
    extra = dict(meta.extra, dense="true", dense_pool=f"{fh}x{fw}",
                 **{_SOURCE_KEY: source_sha256, _CONTEXT_KEY: context})
    write_metadata(model, replace(meta, extra=extra))
    return model


def dense_model_path(path: Path, sha: str) -> Path:
    """Where the dense form of ``path`` is cached: beside it, or in ~/.cache/slidewin if read-only."""
    beside = path.with_name(path.stem + ".dense.onnx")
    if os.access(path.parent, os.W_OK):
        return beside
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "slidewin"
    return cache / f"{path.stem}-{sha[7:23]}.dense.onnx"


def ensure_dense_model(path: str | Path, meta: ModelMeta) -> Path:
    """The dense form of a classifier, rewritten on first use and cached (atomically written)."""
    import onnx

    path = Path(path)
    sha = sha256_of(path)
    target = dense_model_path(path, sha)
    if target.exists():
        try:
            props = {p.key: p.value for p in onnx.load(str(target), load_external_data=False).metadata_props}
            if props.get(_SOURCE_KEY) == sha and _CONTEXT_KEY in props:
                return target
        except Exception:
            pass  # unreadable or stale cache: rebuild it
    model = make_dense(onnx.load(str(path)), meta, sha)
    onnx.checker.check_model(model)
    from slidewin.fileutil import atomic_save_onnx

    atomic_save_onnx(model, target)
    return target


def _dense_session(path: Path, device: str):
    """An ONNX Runtime session for a dense model: `create_session`'s settings, memory patterns off.

    ORT plans a memory pattern per input shape and keeps its block; every pyramid level of every
    image has its own shape, so with patterns a dense session's memory grows with each new one
    (EfficientNet-Lite0: 1.6 GB after one 2240x1792 level where a pass needs 1.0 GB, 2.0 GB after
    five shapes); without them it stays at ~1.1 GB, at the same speed.
    """
    import onnxruntime as ort

    from slidewin.session import physical_cores, providers_for

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = physical_cores()
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    opts.enable_mem_pattern = False
    try:
        return ort.InferenceSession(str(path), sess_options=opts, providers=providers_for(device))
    except Exception as e:  # a cached file damaged on disk
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelError(f"cannot load the dense model: {first[:200]}", path) from None


class DenseClassifier:
    """The dense form of a `Classifier`: one pass over a pyramid level gives every window's probabilities.

    Levels of more than ``max_tile ** 2`` pixels are run in tiles of at most that many pixels,
    with a context margin (`plan_tiles`), so memory is bounded by the tile size and the result
    equals one pass over the whole level up to float noise.

    Args:
        classifier: a slidewin classifier; its dense form is built (or read from the cache) here
            and opened on the same execution provider.
        max_tile: one pass holds at most ``max_tile ** 2`` pixels (0: never tile).

    Attributes:
        context_hw: (y, x) pixels of context each tile gets around its windows; set it to trade
            exactness for speed (smaller margins recompute less; 0 gives zero-padded tile edges).
    """

    def __init__(self, classifier, max_tile: int = DEFAULT_MAX_TILE):
        self.classifier = classifier
        self.path = ensure_dense_model(classifier.path, classifier.meta)
        device = "cuda" if "CUDAExecutionProvider" in classifier.providers else "cpu"
        self.session = _dense_session(self.path, device)
        self.input_name = self.session.get_inputs()[0].name
        self.input_dtype = classifier.input_dtype
        self.max_tile = max_tile
        self.stride = classifier.meta.feature_stride
        props = dict(self.session.get_modelmeta().custom_metadata_map)
        self.context_hw = self._context(props.get(_CONTEXT_KEY, "unbounded"))

    def _context(self, value: str) -> tuple[int, int]:
        try:
            h, w = (int(v) for v in value.lower().split("x"))
            return h, w
        except ValueError:
            # Unbounded receptive field (e.g. squeeze-and-excite): tiles cannot match the untiled
            # pass exactly; one window of context on each side keeps their edges close to it.
            return self.classifier.input_hw

    def _run(self, image: np.ndarray) -> np.ndarray:
        x = image[None]
        if x.dtype != self.input_dtype:
            x = x.astype(self.input_dtype)
        return self.session.run([OUTPUT_NAME], {self.input_name: x})[0][0]

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
