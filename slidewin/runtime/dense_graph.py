"""The dense rewrite of a classifier, done once on the ONNX graph and cached.

OverFeat's observation (Sermanet et al. 2013): a CNN classifier whose head is global average
pooling + a dense layer computes, for a window, ``softmax(W @ mean(F[window]) + b)`` where F is
its last feature map. Replacing the global pool by an average pool of the feature-map size the
network was trained at (7x7 for 224 px at stride 32), with stride 1, and the dense layer by the
equivalent 1x1 convolution, gives one class-probability vector per window position at the
network's stride, for all windows of an image at once, sharing the convolutions.

The rewrite works on any slidewin classifier whose graph ends in
``GlobalAveragePool -> (Reshape|Squeeze|Flatten)* -> MatMul [+ Add] | Gemm -> Softmax``
(both exporters produce that). It is built once (`build_dense_model`) and cached beside the model,
or in the cache folder when that cannot be written. A cached file is used only when it passes
two checks, which `slidewin.runtime.dense.DenseClassifier` makes each time it opens one:

- it records the digest of everything the model reads (the .onnx file and its external data
  files, `source_digest`), and that digest is still today's: a rewritten weight file makes it
  stale;
- it computes what the classifier computes: at the trained input size its one probability cell
  equals the classifier's output on a probe image. A file that carries the right digest but
  holds another network fails this.

Either failure rebuilds it. The checks cost a hash of the model files and two small inferences
(tens of milliseconds), where rebuilding costs 0.3 s for EfficientNet-Lite0 and about 1.5 s for
ResNet50 on the 2-core CPU. Both are made once per version of the files: the hashes and a passed
probe are remembered in the cache folder for as long as the files stay the same
(`slidewin.io.filememo`), so a one-photo command pays neither.

The rewritten model also records how much context a tile of a level needs around its windows
(`receptive_field`, `context_margin`), which `slidewin.runtime.dense` uses to run big levels in
tiles that equal the untiled pass.
"""

from __future__ import annotations

import math
from functools import lru_cache
from dataclasses import replace
from pathlib import Path

import numpy as np

from slidewin.errors import ModelError
from slidewin.runtime.model_meta import (DENSE_HEAD_BIAS, DENSE_HEAD_WEIGHT, FEATURE_MAP, PROBABILITY_MAP, Key, ModelMeta,
                                         write_metadata)

_PASS_THROUGH = {"Reshape", "Squeeze", "Flatten", "Identity"}
#: What a cached dense model must say in ``dense_format``; older caches are rebuilt.
#: 2: the feature map is a second output (pooled proposal scoring).
DENSE_FORMAT = "2"
#: ``dense_context`` when no finite margin reproduces the untiled pass.
UNBOUNDED = "unbounded"

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
        raise UnsupportedGraph("dense mode needs a graph ending in Softmax")
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
        raise UnsupportedGraph("dense mode needs a dense (MatMul/Gemm) layer before the Softmax")
    head.append(node)
    weight = _constant(graph, node.input[1])
    if weight is None:
        raise UnsupportedGraph("dense mode needs the dense layer's weights as constants")
    if node.op_type == "Gemm":
        attrs = {a.name: a for a in node.attribute}
        if "transA" in attrs and attrs["transA"].i:
            raise UnsupportedGraph("dense mode does not support Gemm with transA")
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
        raise UnsupportedGraph("dense mode needs global average pooling before the dense layer")
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
    raise UnsupportedGraph("cannot tell the feature-map size (no shape information, no feature_stride)")


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


def make_dense(model, meta: ModelMeta, source_sha256: str = ""):
    """Rewrite a slidewin classifier (``onnx.ModelProto``) into its dense form, in place.

    The result takes ``image`` uint8 (N, H, W, 3) of any size that is the trained size plus a
    multiple of the stride, and returns ``probability_map`` float32 (N, rows, cols, K): cell
    (i, j) is the classifier's output for the window at ``(j * stride, i * stride)``; and
    ``feature_map`` float32 (N, C, rows', cols'), the last feature map the head pools over, whose
    fh x fw blocks (7x7 at 224 px) average into the probability map's cells.
    """
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    gap, weight, bias, head = _find_head(graph, graph.output[0].name)
    feature = gap.input[0]
    fh, fw = _feature_hw(model, feature, meta)
    c, k = weight.shape
    field = receptive_field(graph, feature)
    if field is None:
        context = UNBOUNDED
    else:
        rh, rw, jh, jw = field
        context = (f"{context_margin(rh, jh, fh, meta.input_hw[0])}x"
                   f"{context_margin(rw, jw, fw, meta.input_hw[1])}")
    drop = {id(n) for n in head}
    kept = [n for n in graph.node if id(n) not in drop]
    w_name, b_name = DENSE_HEAD_WEIGHT, DENSE_HEAD_BIAS
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
        helper.make_node("Transpose", ["slidewin_dense/probs"], [PROBABILITY_MAP], perm=[0, 2, 3, 1],
                         name="slidewin_dense/to_nhwc"),
        helper.make_node("Identity", [feature], [FEATURE_MAP], name="slidewin_dense/features"),
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
    graph.output.append(helper.make_tensor_value_info(PROBABILITY_MAP, TensorProto.FLOAT, ["batch", "rows", "cols", k]))
    graph.output.append(helper.make_tensor_value_info(FEATURE_MAP, TensorProto.FLOAT,
                                                      ["batch", c, "feature_rows", "feature_cols"]))
    del graph.value_info[:]
    extra = dict(meta.extra, **{Key.DENSE: "true", Key.DENSE_POOL: f"{fh}x{fw}",
                                Key.DENSE_SOURCE: source_sha256, Key.DENSE_CONTEXT: context,
                                Key.DENSE_FORMAT: DENSE_FORMAT})
    write_metadata(model, replace(meta, extra=extra))
    return model


class DenseCacheError(ModelError):
    """The dense form could be built but written nowhere (not beside the model, not in the cache)."""


class UnsupportedGraph(ModelError):
    """The rewrite does not know this classifier's graph (dense mode is not possible: patch mode)."""


def external_files(model) -> list[str]:
    """The external data files an ``onnx.ModelProto`` reads, relative to its folder, sorted."""
    from onnx.external_data_helper import uses_external_data

    locations = set()
    for tensor in model.graph.initializer:
        if uses_external_data(tensor):
            locations.update(e.value for e in tensor.external_data if e.key == "location")
    return sorted(locations)


@lru_cache(maxsize=32)
def _file_sha(path: str, identity: tuple[int, ...]) -> str:
    from slidewin.io.filememo import file_sha256

    return file_sha256(path)


def file_sha(path: Path) -> str:
    """``sha256:<hex>`` of a file, hashed once per version of the file: remembered in the cache
    folder across processes (`slidewin.io.filememo`), and in this process."""
    from slidewin.io.filememo import identity

    ident = identity(path)
    if ident is None:
        raise FileNotFoundError(f"not a file: {path}")
    return _file_sha(str(path), tuple(ident))


def source_digest(path: Path, files: list[str]) -> str:
    """``sha256:<hex>`` of everything a model reads: its .onnx file and its external data ``files``.

    A rewritten weight file changes it (dense mode must not answer with the old weights); a
    changed list of files changes the .onnx file, so it changes too.
    """
    import hashlib

    h = hashlib.sha256(file_sha(path).encode())
    for location in files:
        h.update(location.encode() + file_sha(path.parent / location).encode())
    return "sha256:" + h.hexdigest()


def dense_model_paths(path: Path) -> list[Path]:
    """Where the dense form of ``path`` may be cached, in order: beside it, then in the cache
    folder under a name that holds the hash of the model file (several models named alike)."""
    from slidewin.io.files import cache_dir

    return [path.with_name(path.stem + ".dense.onnx"),
            cache_dir() / f"{path.stem}-{file_sha(path)[7:23]}.dense.onnx"]


def cached_digest(props: dict[str, str], path: Path) -> str | None:
    """The source digest a cached dense form must carry today, from the files it records (None
    when it records none, or in another format)."""
    import json

    if props.get(Key.DENSE_FORMAT) != DENSE_FORMAT or Key.DENSE_SOURCE_FILES not in props:
        return None
    try:
        files = json.loads(props[Key.DENSE_SOURCE_FILES])
        return source_digest(path, [str(f) for f in files])
    except (ValueError, TypeError, OSError):
        return None


def build_dense_model(path: str | Path, meta: ModelMeta) -> Path:
    """Rewrite the classifier into its dense form and write it to the first place that takes it.

    Raises:
        UnsupportedGraph: the rewrite does not know the graph.
        DenseCacheError: it could be written nowhere (the error names both places).
    """
    import json

    import onnx

    from slidewin.io.files import atomic_write_bytes

    path = Path(path)
    try:
        source = onnx.load(str(path))
    except Exception as e:  # onnx raises several types for a file ONNX Runtime did open
        raise UnsupportedGraph(f"dense mode cannot read the model's graph ({str(e).strip()[:200]})", path) from None
    files = external_files(onnx.load(str(path), load_external_data=False))
    model = make_dense(source, meta, source_digest(path, files))
    model.metadata_props.add(key=Key.DENSE_SOURCE_FILES.value, value=json.dumps(files))
    onnx.checker.check_model(model)
    data = model.SerializeToString()
    reasons = []
    for target in dense_model_paths(path):
        if target.is_dir():
            reasons.append(f"{target} is a directory")
            continue
        try:
            atomic_write_bytes(target, data)
            return target
        except OSError as e:
            reasons.append(f"{target}: {e.strerror}")
    raise DenseCacheError(f"cannot write the model's dense form ({'; '.join(reasons)}): make one of those "
                          "places writable, or use --mode patch", path)
