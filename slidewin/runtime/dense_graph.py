"""The dense rewrite of a classifier, done once on the ONNX graph and cached.

OverFeat's observation (Sermanet et al. 2013): a CNN classifier whose head acts on one globally
pooled vector computes, for a window, ``head(mean(F[window]))`` where F is its last feature map.
Replacing the global pool by an average pool of the feature-map size the network was trained at
(7x7 for 224 px at stride 32), with stride 1, and applying the head at every position of the
result, gives one class-probability vector per window position at the network's stride, for all
windows of an image at once, sharing the convolutions.

The rewrite works on any slidewin classifier whose output is computed from one global average
pool (``GlobalAveragePool``, or ``ReduceMean`` over the two spatial axes, NCHW or NHWC) by layers
that act on each pooled vector alone: dense layers (``Gemm``, ``MatMul`` [+ ``Add``]), element-wise
activations, ``Dropout``, ``BatchNormalization``, ``LayerNormalization`` over the channels
(ConvNeXt), reshapes that keep the batch axis, ``Softmax`` (`slidewin.runtime.dense_head`). The
head's nodes are kept as they are and run on the window-pooled vectors laid out as a batch, so
the dense cell at the trained size is the classifier's output by construction; a head that mixes
the batch is caught by a numerical check when the form is built. A class token (ViT), attention
pooling or max pooling has no such form: the rewrite refuses it in one line naming the op.

The network's stride is the product of the strides on the way to the pooled map (checked against
the map's size at the trained input size; `infer_stride`), so models whose metadata does not
state ``feature_stride``, and inputs such as 260 px (9x9 cells at stride 32), work too; the
dense form records the stride it used.

It is built once (`build_dense_model`) and cached beside the model,
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
(`slidewin.io.hashing`, `slidewin.io.filememo`), so a one-photo command pays neither.

The rewritten model also records how much context a tile of a level needs around its windows
(`receptive_field`, `context_margin`), which `slidewin.runtime.dense` uses to run big levels in
tiles that equal the untiled pass.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np

from slidewin.errors import ModelError, first_line
from slidewin.io.hashing import file_sha256
from slidewin.runtime.dense_head import (VECTOR_PROBABILITIES, VECTORS, Head, HeadError, check_per_vector,
                                        find_head, head_model)
from slidewin.core.contract import FEATURE_MAP, PROBABILITY_MAP, Key, ModelMeta, write_metadata

#: What a cached dense model must say in ``dense_format``; older caches are rebuilt.
#: 2: the feature map is a second output (pooled proposal scoring).
#: 3: any per-vector head runs unchanged on the window-pooled vectors (`slidewin.runtime.dense_head`).
DENSE_FORMAT = "3"
#: ``dense_context`` when no finite margin reproduces the untiled pass.
UNBOUNDED = "unbounded"
#: A network whose pooled map is finer than this many input pixels per cell shares no convolutions
#: worth a dense pass (a "classifier" averaging its input pixels), and its windows would number
#: one per pixel: patch mode.
MIN_STRIDE = 2

# Ops whose output at one place depends on the whole input: no finite context margin exists.
_GLOBAL_OPS = {
    "GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool", "ReduceMean", "ReduceMax", "ReduceMin",
    "ReduceSum", "ReduceProd", "ReduceL1", "ReduceL2", "ReduceLogSumExp", "MatMul", "MatMulInteger",
    "QLinearMatMul", "Gemm", "Einsum", "Attention", "MultiHeadAttention", "ConvTranspose",
    "Resize", "Upsample",
}
_CONV_WEIGHT_INPUT = {"Conv": 1, "ConvInteger": 1, "QLinearConv": 3, "FusedConv": 1}
_POOLS = {"MaxPool", "AveragePool", "LpPool"}


def _value_dims(vi) -> list[int | None] | None:
    t = vi.type.tensor_type
    if not t.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in t.shape.dim]


def inferred_dims(model) -> dict[str, list[int | None]]:
    """Tensor name -> dims (None where unknown) by ONNX shape inference at the graph's input size
    (a slidewin classifier's input is fixed at its trained size); empty when inference fails."""
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # a convenience: the ORT probe (`_probe_dims`) answers where this cannot
        return {}
    g = inferred.graph
    dims = {}
    for vi in [*g.input, *g.value_info, *g.output]:
        d = _value_dims(vi)
        if d is not None:
            dims[vi.name] = d
    return dims


def _probe_dims(model, name: str, meta: ModelMeta) -> list[int]:
    """Dims of tensor ``name`` from one ONNX Runtime run on a blank image of the trained size
    (for graphs whose shapes inference cannot follow)."""
    from onnx import helper

    from slidewin.runtime.sessions import open_in_memory

    probe = type(model)()
    probe.CopyFrom(model)
    probe.graph.output.append(helper.make_empty_tensor_value_info(name))
    try:
        sess = open_in_memory(probe)
        inp = sess.get_inputs()[0]
        dtype = np.uint8 if "uint8" in inp.type else np.float32
        x = np.zeros((1, *meta.input_hw, 3), dtype)
        return list(sess.run([name], {inp.name: x})[0].shape)
    except Exception as e:  # ORT raises several types
        first = first_line(e)
        raise UnsupportedGraph(f"dense mode cannot tell the size of the pooled feature map ({first})") from None


def _feature_shape(model, head: Head, meta: ModelMeta, dims: dict) -> tuple[int, int, int]:
    """``(fh, fw, channels)`` of the pooled feature map at the trained input size (7, 7, 2048 for
    ResNet50 at 224 px)."""
    d = dims.get(head.feature)
    if not d or len(d) != 4 or not all(d[1:]):
        d = _probe_dims(model, head.feature, meta)
    if len(d) != 4:
        raise UnsupportedGraph(f"dense mode needs a rank-4 feature map before the global pool, got {d}")
    return (d[2], d[3], d[1]) if head.layout == "NCHW" else (d[1], d[2], d[3])


def feature_jump(graph, feature: str) -> tuple[int, int] | None:
    """Input pixels between neighbouring cells of tensor ``feature``: the product of the strides of
    the convolutions and pools on the way from the input (joins take the largest; branches through
    global ops, such as squeeze-and-excite, carry no grid). None when the walk does not reach it."""
    from onnx import helper

    jump: dict[str, tuple[int, int]] = {graph.input[0].name: (1, 1)}
    for node in graph.node:
        known = [jump[i] for i in node.input if i in jump]
        if not known or node.op_type in _GLOBAL_OPS:
            continue
        jh, jw = max(k[0] for k in known), max(k[1] for k in known)
        if node.op_type in _CONV_WEIGHT_INPUT or node.op_type in _POOLS:
            strides = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "strides"), None)
            sh, sw = strides if strides and len(strides) == 2 else (1, 1)
            jh, jw = jh * sh, jw * sw
        for o in node.output:
            jump[o] = (jh, jw)
        if feature in node.output:
            break
    return jump.get(feature)


def infer_stride(graph, feature: str, input_hw: tuple[int, int], feature_hw: tuple[int, int],
                 stated: int = 0) -> int:
    """The network's output stride: the strides on the way to the pooled map, when they agree with
    its size (``ceil(input / stride)`` or ``input // stride`` cells); else the stated
    ``feature_stride``; else the input-to-map ratio rounded to a power of two (a 260 px
    EfficientNet has 9 cells at stride 32)."""
    (h, w), (fh, fw) = input_hw, feature_hw

    def fits(s: int) -> bool:
        return s > 0 and fh in (-(-h // s), h // s) and fw in (-(-w // s), w // s)

    jump = feature_jump(graph, feature)
    if jump is not None and jump[0] == jump[1] and fits(jump[0]):
        return jump[0]
    if fits(stated):
        return stated
    return int(2 ** round(math.log2(max(h / fh, 1.0))))


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


def _opset(model) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def _needed(nodes: list, outputs: list[str]) -> list:
    """The nodes (in their order) that ``outputs`` need."""
    prod = {o: n for n in nodes for o in n.output}
    keep, stack, seen = set(), list(outputs), set()
    while stack:
        name = stack.pop()
        if name in seen or name not in prod:
            continue
        seen.add(name)
        keep.add(id(prod[name]))
        stack.extend(prod[name].input)
    return [n for n in nodes if id(n) in keep]


def dense_head(model):
    """The head of a dense form (`slidewin.runtime.dense_head.head_model`): pooled vectors
    (positions, C) -> probabilities (positions, K), as an ``onnx.ModelProto``."""
    out = next((o for o in model.graph.output if o.name == FEATURE_MAP), None)
    dims = out.type.tensor_type.shape.dim if out is not None else []
    channels = dims[1].dim_value if len(dims) > 1 and dims[1].dim_value > 0 else None
    return head_model(model, channels), channels


def make_dense(model, meta: ModelMeta, source_sha256: str = ""):
    """Rewrite a slidewin classifier (``onnx.ModelProto``) into its dense form, in place.

    The graph is cut at its global pool (`slidewin.runtime.dense_head.find_head`): the pool
    becomes an average pool of the trained feature-map size (fh x fw: 7x7 for 224 px at stride
    32) with stride 1, whose (N, C, rows, cols) output is laid out as rows*cols*N pooled vectors
    (`VECTORS`, (positions, C)); the classifier's head nodes then run unchanged on that batch of
    vectors, and their (positions, K) output is laid back out as the map.

    The result takes ``image`` uint8 (N, H, W, 3) of any size that is the trained size plus a
    multiple of the stride, and returns ``probability_map`` float32 (N, rows, cols, K): cell
    (i, j) is the classifier's output for the window at ``(j * stride, i * stride)``; and
    ``feature_map`` (N, C, rows', cols'), the last feature map the head pools over (NCHW), whose
    fh x fw blocks average into the probability map's cells.

    Raises:
        UnsupportedGraph: no global average pool followed by a per-vector head (the message
            names the op in the way), or a feature map finer than `MIN_STRIDE`.
    """
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    if _opset(model) < 11:
        raise UnsupportedGraph(f"dense mode needs ONNX opset 11 or later, the model has {_opset(model)}")
    dims = inferred_dims(model)
    try:
        head = find_head(model, graph.output[0].name, dims)
    except HeadError as e:
        raise UnsupportedGraph(e.problem) from None
    fh, fw, c = _feature_shape(model, head, meta, dims)
    stride = infer_stride(graph, head.feature, meta.input_hw, (fh, fw), meta.feature_stride)
    if stride < MIN_STRIDE:
        raise NoFeatureGrid(f"dense mode cannot rewrite this classifier: its global pool averages a "
                               f"{fh}x{fw} map of its {meta.input_hw[0]}x{meta.input_hw[1]} input "
                               f"(feature_stride {stride}), no convolutional features to share")
    field = receptive_field(graph, head.feature)
    if field is None:
        context = UNBOUNDED
    else:
        rh, rw, jh, jw = field
        context = (f"{context_margin(rh, jh, fh, meta.input_hw[0])}x"
                   f"{context_margin(rw, jw, fw, meta.input_hw[1])}")
    p = "slidewin_dense/"
    nchw = head.feature
    new = []
    if head.layout == "NHWC":
        nchw = p + "feature_nchw"
        new.append(helper.make_node("Transpose", [head.feature], [nchw], perm=[0, 3, 1, 2], name=p + "to_nchw"))
    graph.initializer.extend([
        numpy_helper.from_array(np.array([0], np.int64), p + "zero"),
        numpy_helper.from_array(np.array([3], np.int64), p + "three"),
        numpy_helper.from_array(np.array([-1], np.int64), p + "minus_one"),
    ])
    new += [
        helper.make_node("AveragePool", [nchw], [p + "pooled"], kernel_shape=[fh, fw], strides=[1, 1],
                         name=p + "pool"),
        helper.make_node("Transpose", [p + "pooled"], [p + "cells"], perm=[0, 2, 3, 1], name=p + "to_cells"),
        helper.make_node("Flatten", [p + "cells"], [VECTORS], axis=3, name=p + "to_vectors"),
    ]
    # The vectors, shaped like the pool's output (e.g. (positions, C, 1, 1)), feed the head as it is.
    pooled_out = head.pool.output[0]
    if head.pooled_axes and _opset(model) >= 13:
        graph.initializer.append(numpy_helper.from_array(np.array(head.pooled_axes, np.int64), p + "pooled_axes"))
        new.append(helper.make_node("Unsqueeze", [VECTORS, p + "pooled_axes"], [pooled_out], name=p + "as_pooled"))
    elif head.pooled_axes:
        new.append(helper.make_node("Unsqueeze", [VECTORS], [pooled_out], axes=list(head.pooled_axes),
                                    name=p + "as_pooled"))
    else:
        new.append(helper.make_node("Identity", [VECTORS], [pooled_out], name=p + "as_pooled"))
    if head.batch_reads:
        new.append(helper.make_node("Shape", [VECTORS], [p + "vectors_shape"], name=p + "vectors_shape"))
        for node in head.batch_reads:  # the batch size the head reads is the number of vectors
            node.input[0] = VECTORS if node.op_type == "Shape" else p + "vectors_shape"
    out = graph.output[0].name
    new += [
        helper.make_node("Cast", [out], [VECTOR_PROBABILITIES], to=TensorProto.FLOAT, name=p + "head_out"),
        helper.make_node("Shape", [p + "cells"], [p + "cells_shape"], name=p + "cells_shape"),
        helper.make_node("Slice", [p + "cells_shape", p + "zero", p + "three"], [p + "grid"], name=p + "grid"),
        helper.make_node("Concat", [p + "grid", p + "minus_one"], [p + "map_shape"], axis=0, name=p + "map_shape"),
        helper.make_node("Reshape", [VECTOR_PROBABILITIES, p + "map_shape"], [PROBABILITY_MAP], name=p + "to_map"),
        helper.make_node("Identity", [nchw], [FEATURE_MAP], name=p + "features"),
    ]
    # Graph order: the trunk, the new pooling, then the head (it reads the vectors).
    head_ids = {id(n) for n in head.nodes}
    trunk = [n for n in graph.node if id(n) not in head_ids and n is not head.pool]
    tail = new[-6:]
    nodes = _needed(trunk + new[:-6] + list(head.nodes) + tail, [PROBABILITY_MAP, FEATURE_MAP])
    del graph.node[:]
    graph.node.extend(nodes)
    # Drop initializers nobody reads any more (a head branch that fed no output).
    used = {i for n in graph.node for i in n.input}
    keep_init = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep_init)
    inp = graph.input[0]
    dims_in = inp.type.tensor_type.shape.dim
    dims_in[1].Clear()
    dims_in[1].dim_param = "height"
    dims_in[2].Clear()
    dims_in[2].dim_param = "width"
    k = len(meta.labels)
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info(PROBABILITY_MAP, TensorProto.FLOAT, ["batch", "rows", "cols", k]))
    feature_type = next((vi.type.tensor_type.elem_type for vi in graph.value_info if vi.name == head.feature),
                        TensorProto.FLOAT)
    graph.output.append(helper.make_tensor_value_info(FEATURE_MAP, feature_type,
                                                      ["batch", c, "feature_rows", "feature_cols"]))
    del graph.value_info[:]
    graph.value_info.append(helper.make_tensor_value_info(VECTORS, feature_type, ["positions", c]))
    extra = dict(meta.extra, **{Key.DENSE: "true", Key.DENSE_POOL: f"{fh}x{fw}",
                                Key.DENSE_SOURCE: source_sha256, Key.DENSE_CONTEXT: context,
                                Key.DENSE_FORMAT: DENSE_FORMAT})
    write_metadata(model, replace(meta, feature_stride=stride, extra=extra))
    return model


class DenseCacheError(ModelError):
    """The dense form could be built but written nowhere (not beside the model, not in the cache).

    Attributes:
        model_bytes: the serialized dense model that could not be written (None if not built).
    """

    model_bytes: bytes | None = None


class UnsupportedGraph(ModelError):
    """The rewrite does not know this classifier's graph (dense mode is not possible: patch mode)."""


class NoFeatureGrid(UnsupportedGraph):
    """The classifier pools its input, or a map at its input's resolution: nothing convolutional to
    share, so dense mode is pointless rather than impossible (``auto`` runs patch mode silently)."""


def external_files(model) -> list[str]:
    """The external data files an ``onnx.ModelProto`` reads, relative to its folder, sorted."""
    from onnx.external_data_helper import uses_external_data

    locations = set()
    for tensor in model.graph.initializer:
        if uses_external_data(tensor):
            locations.update(e.value for e in tensor.external_data if e.key == "location")
    return sorted(locations)


def source_digest(path: Path, files: list[str]) -> str:
    """``sha256:<hex>`` of everything a model reads: its .onnx file and its external data ``files``.

    A rewritten weight file changes it (dense mode must not answer with the old weights); a
    changed list of files changes the .onnx file, so it changes too.
    """
    import hashlib

    h = hashlib.sha256(file_sha256(path).encode())
    for location in files:
        h.update(location.encode() + file_sha256(path.parent / location).encode())
    return "sha256:" + h.hexdigest()


def dense_model_paths(path: Path) -> list[Path]:
    """Where the dense form of ``path`` may be cached, in order: beside it, then in the cache
    folder under a name that holds the hash of the model file (several models named alike)."""
    from slidewin.io.files import cache_dir

    return [path.with_name(path.stem + ".dense.onnx"),
            cache_dir() / f"{path.stem}-{file_sha256(path)[7:23]}.dense.onnx"]


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
        raise UnsupportedGraph(f"dense mode cannot read the model's graph ({first_line(e)})", path) from None
    files = external_files(onnx.load(str(path), load_external_data=False))
    try:
        model = make_dense(source, meta, source_digest(path, files))
        model.metadata_props.add(key=Key.DENSE_SOURCE_FILES.value, value=json.dumps(files))
        onnx.checker.check_model(model)
        head, channels = dense_head(model)
        check_per_vector(head, channels)
    except ModelError as e:  # name the classifier's file
        raise (NoFeatureGrid if isinstance(e, NoFeatureGrid) else UnsupportedGraph)(e.problem, path) from None
    except onnx.checker.ValidationError as e:
        first = first_line(e, default="invalid")
        raise UnsupportedGraph(f"dense mode cannot rewrite this classifier: the rewritten graph does not check "
                               f"({first})", path) from None
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
    error = DenseCacheError(f"cannot write the model's dense form ({'; '.join(reasons)}): make one of those "
                            "places writable, or use --mode patch", path)
    error.model_bytes = data  # what a caller may still run from memory
    raise error
