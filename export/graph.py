"""Framework-independent ONNX surgery: a raw classifier graph -> the slidewin form.

A raw graph (a framework's export, or any ONNX classifier a user has) takes *preprocessed*
input in whatever layout and dtype it was built with. The slidewin form takes one input
``image``: uint8 ``(N, H, W, 3)``, RGB, 0-255, N dynamic ("batch"), and gives one output
``probabilities``: float32 ``(N, num_classes)``. The preprocessing, stated as a
`slidewin.core.preprocessing.Preprocessing`, is prepended as plain ONNX nodes, so the runtime
never needs to know how the network was trained; it is also recorded in the metadata
(``preprocess``).

The public API (stable; other exporters build on it):

- `to_slidewin_classifier(raw, preprocessing, meta, *, outputs_logits, layout=None)`: wrap.
- `inspect_raw(raw, layout=None) -> RawSignature`: what the raw graph takes and gives, checked
  (one image input, rank 4 with 3 channels, one ``(N, C)`` output).
- `preprocess_for_raw(images, preprocessing, layout, dtype)`: the NumPy equivalent of the
  prepended nodes, i.e. what the *raw* graph consumes (for parity checks).
- `with_preprocessing(meta, preprocessing)`: ``meta`` with the ``preprocess`` record set.
- `meta_of(model)`: the `ModelMeta` a wrapped model carries.
- `feature_stride_of(model, input_hw)`: the output stride read off the global pool's input.

Doing this on the graph rather than in a framework wrapper keeps one implementation for every
source framework, and the exporters' parity checks feed the source framework
`Preprocessing.apply`'s output (the stated convention), so a mistake here cannot hide.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from slidewin.core.preprocessing import Preprocessing
from slidewin.errors import ModelError, first_line
from slidewin.core.contract import INPUT_NAME, PROBABILITIES, Key, ModelMeta, read_props, write_metadata

OUTPUT_NAME = PROBABILITIES
BATCH_DIM = "batch"
_PREFIX = "slidewin_pre/"  # quantize.py keeps nodes named with it in fp32

Layout = Literal["NCHW", "NHWC"]
NCHW: Layout = "NCHW"
NHWC: Layout = "NHWC"

# Raw input dtypes the wrapper can feed: ONNX element type -> NumPy dtype.
_FLOAT_INPUTS = {TensorProto.FLOAT: np.float32, TensorProto.FLOAT16: np.float16, TensorProto.DOUBLE: np.float64}
_INPUT_DTYPES = {**_FLOAT_INPUTS, TensorProto.UINT8: np.uint8}


@dataclass(frozen=True)
class RawSignature:
    """What a raw classifier graph takes and gives.

    Attributes:
        input_name: the graph input (initialisers excluded).
        input_dtype: NumPy dtype of that input (float32, float16, float64 or uint8).
        layout: ``"NCHW"`` or ``"NHWC"``.
        input_hw: ``(H, W)``, an entry None where the graph leaves it open.
        batch: the input's batch dimension when fixed (e.g. 1), None when dynamic.
        output_name: the graph output.
        num_classes: the output's class dimension, None when the graph leaves it open.
    """

    input_name: str
    input_dtype: type
    layout: Layout
    input_hw: tuple[int | None, int | None]
    batch: int | None
    output_name: str
    num_classes: int | None

    @property
    def fixed_hw(self) -> tuple[int, int] | None:
        """``(H, W)`` when the graph fixes both, else None (then the size must be given)."""
        h, w = self.input_hw
        return (h, w) if h and w else None


def _dims(value_info: onnx.ValueInfoProto) -> list[int | None]:
    dims = value_info.type.tensor_type.shape.dim
    return [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in dims]


def _has_shape(value_info: onnx.ValueInfoProto) -> bool:
    return value_info.type.tensor_type.HasField("shape")


def _detect_layout(dims: list[int | None], name: str) -> Layout:
    """The layout from the axis of size 3; ModelError when the graph does not say."""
    c1, c3 = dims[1], dims[3]
    if c1 == 3 and c3 != 3:
        return NCHW
    if c3 == 3 and c1 != 3:
        return NHWC
    if c1 in (1, 2) or c3 in (1, 2):
        raise ModelError(f"input {name!r} has shape {dims}: {c1 if c1 in (1, 2) else c3} channel(s); "
                         "slidewin feeds RGB images (3 channels)")
    if c1 == 3 and c3 == 3:
        raise ModelError(f"input {name!r} has shape {dims}: cannot tell NCHW from NHWC; give the layout (--layout)")
    raise ModelError(f"input {name!r} has shape {dims}: no axis of size 3 (channels) at position 1 or 3; "
                     "expected an RGB image input, NCHW or NHWC (give --layout if its channels are left open)")


def inspect_raw(raw: onnx.ModelProto, layout: Layout | None = None) -> RawSignature:
    """Check that ``raw`` is a single-input image classifier and say what it takes and gives.

    Args:
        raw: the raw graph.
        layout: ``"NCHW"`` / ``"NHWC"``, or None to detect it from the axis of size 3.

    Returns:
        The `RawSignature`.

    Raises:
        ModelError: several inputs or outputs, an input that is not a rank-4 RGB image of a
            supported dtype, an output that is not ``(N, classes)``.
    """
    graph = raw.graph
    init_names = {t.name for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in init_names]
    if len(inputs) != 1:
        names = ", ".join(repr(i.name) for i in inputs)
        raise ModelError(f"model has {len(inputs)} inputs ({names}); expected one image input")
    if len(graph.output) != 1:
        names = ", ".join(repr(o.name) for o in graph.output)
        raise ModelError(f"model has {len(graph.output)} outputs ({names}); expected one (N, classes) output")
    inp, out = inputs[0], graph.output[0]

    elem = inp.type.tensor_type.elem_type
    if elem not in _INPUT_DTYPES:
        raise ModelError(f"input {inp.name!r} is {TensorProto.DataType.Name(elem).lower()}; "
                         "expected float32, float16, float64 or uint8 images")
    dims = _dims(inp)
    if not _has_shape(inp) or len(dims) != 4:
        shape = dims if _has_shape(inp) else "unknown"
        raise ModelError(f"input {inp.name!r} has shape {shape} (rank {len(dims) if _has_shape(inp) else '?'}); "
                         "expected a rank-4 image batch, NCHW or NHWC")
    if layout is None:
        layout = _detect_layout(dims, inp.name)
    elif layout not in (NCHW, NHWC):
        raise ValueError(f"layout must be NCHW or NHWC, not {layout!r}")
    channels = dims[1] if layout == NCHW else dims[3]
    if channels not in (None, 3):
        raise ModelError(f"input {inp.name!r} has shape {dims}: {channels} channel(s) in {layout}; "
                         "slidewin feeds RGB images (3 channels)")
    hw = (dims[2], dims[3]) if layout == NCHW else (dims[1], dims[2])

    out_dims = _dims(out)
    if not _has_shape(out) or len(out_dims) != 2:
        raise ModelError(f"output {out.name!r} has shape {out_dims if _has_shape(out) else 'unknown'}; "
                         "expected (N, classes)")
    if out.type.tensor_type.elem_type not in _FLOAT_INPUTS:
        raise ModelError(f"output {out.name!r} is {TensorProto.DataType.Name(out.type.tensor_type.elem_type).lower()}; "
                         "expected float class scores")
    return RawSignature(inp.name, _INPUT_DTYPES[elem], layout, hw, dims[0], out.name, out_dims[1])


def preprocess_for_raw(images: np.ndarray, preprocessing: Preprocessing, layout: Layout,
                       dtype: type = np.float32) -> np.ndarray:
    """What the raw graph consumes: the NumPy equivalent of the nodes `to_slidewin_classifier` prepends.

    Args:
        images: uint8 ``(N, H, W, 3)`` RGB.
        preprocessing: the stated convention.
        layout: the raw graph's layout.
        dtype: the raw graph's input dtype; uint8 rounds and clips to 0-255.

    Returns:
        ``(N, H, W, 3)`` for NHWC, ``(N, 3, H, W)`` for NCHW, of ``dtype``.
    """
    x = preprocessing.apply(images)
    if np.dtype(dtype) == np.uint8:
        x = np.clip(np.round(x), 0, 255)
    x = x.astype(dtype)
    if layout == NCHW:
        x = x.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(x)


def _const(graph: onnx.GraphProto, name: str, value: np.ndarray) -> str:
    graph.initializer.append(numpy_helper.from_array(value, _PREFIX + name))
    return _PREFIX + name


def _preprocess_nodes(graph: onnx.GraphProto, p: Preprocessing, sig: RawSignature, target: str) -> list[onnx.NodeProto]:
    """Nodes from ``image`` (uint8 NHWC RGB) to ``target`` (what the raw graph consumed).

    The arithmetic follows `Preprocessing.apply` op for op (scale, mean, std), skipping the
    steps that are identities, so the graph and the NumPy reference agree to rounding.
    """
    nodes: list[onnx.NodeProto] = []
    cur = INPUT_NAME

    def add(op: str, inputs: list[str], name: str, **attrs) -> None:
        nonlocal cur
        out = _PREFIX + name
        nodes.append(helper.make_node(op, inputs, [out], name=_PREFIX + name, **attrs))
        cur = out

    uint8_in = sig.input_dtype == np.uint8
    arithmetic = not (p.scale == 1.0 and p.mean == (0.0, 0.0, 0.0) and p.std == (1.0, 1.0, 1.0))
    if arithmetic or not uint8_in:  # a uint8 graph fed raw pixels skips the float round trip
        add("Cast", [cur], "cast", to=TensorProto.FLOAT)
    if p.bgr:
        add("Gather", [cur, _const(graph, "bgr_index", np.array([2, 1, 0], np.int64))], "rgb_to_bgr", axis=3)
    if p.scale != 1.0:
        add("Mul", [cur, _const(graph, "scale", np.array(p.scale, np.float32))], "mul_scale")
    order = "bgr" if p.bgr else "rgb"
    if p.mean != (0.0, 0.0, 0.0):
        add("Sub", [cur, _const(graph, f"mean_{order}", np.array(p.mean, np.float32).reshape(1, 1, 1, 3))], "sub_mean")
    if p.std != (1.0, 1.0, 1.0):
        add("Div", [cur, _const(graph, f"std_{order}", np.array(p.std, np.float32).reshape(1, 1, 1, 3))], "div_std")
    if uint8_in and arithmetic:
        # Same rounding and saturation as preprocess_for_raw (Cast alone leaves overflow undefined).
        add("Round", [cur], "round")
        add("Clip", [cur, _const(graph, "0", np.array(0, np.float32)), _const(graph, "255", np.array(255, np.float32))],
            "clip")
        add("Cast", [cur], "to_uint8", to=TensorProto.UINT8)
    elif not uint8_in and sig.input_dtype != np.float32:
        add("Cast", [cur], "to_input_dtype",
            to=next(k for k, v in _FLOAT_INPUTS.items() if v == sig.input_dtype))
    if sig.layout == NCHW:
        add("Transpose", [cur], "to_nchw", perm=[0, 3, 1, 2])
    if cur == INPUT_NAME:  # nothing to do at all: a uint8 NHWC RGB graph
        add("Identity", [cur], "identity")
    nodes[-1].output[:] = [target]
    return nodes


def _rename_tensor(graph: onnx.GraphProto, old: str, new: str) -> None:
    for node in graph.node:
        node.input[:] = [new if n == old else n for n in node.input]
        node.output[:] = [new if n == old else n for n in node.output]
    for vi in list(graph.value_info) + list(graph.output):
        if vi.name == old:
            vi.name = new


def with_preprocessing(meta: ModelMeta, preprocessing: Preprocessing) -> ModelMeta:
    """``meta`` with its ``preprocess`` record (`Key.PREPROCESS`) set to ``preprocessing``."""
    extra = {k: v for k, v in meta.extra.items() if k != Key.PREPROCESS.value}
    extra[Key.PREPROCESS.value] = preprocessing.to_json()
    return dataclasses.replace(meta, extra=extra)


def meta_of(model: onnx.ModelProto) -> ModelMeta:
    """The `ModelMeta` a wrapped model's ``metadata_props`` hold."""
    return ModelMeta.from_props(read_props(model))


_GLOBAL_POOLS = ("GlobalAveragePool", "GlobalMaxPool")


def feature_stride_of(model: onnx.ModelProto, input_hw: tuple[int, int]) -> int:
    """The network's output stride: input height over the height of the last globally pooled map.

    Looks for the last ``GlobalAveragePool``/``GlobalMaxPool`` (NCHW) or ``ReduceMean``/``ReduceMax``
    over two spatial axes (NHWC exports such as tf2onnx's) and reads its input's inferred shape.

    Args:
        model: a shape-inferable model (raw or wrapped) at a fixed input size.
        input_hw: that input size.

    Returns:
        The stride in input pixels, 0 when the graph does not say (dense mode then stays off).
    """
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # shape inference is a convenience here, never a reason to fail an export
        return 0
    shapes = {vi.name: _dims(vi) for vi in [*inferred.graph.value_info, *inferred.graph.input]}
    stride = 0
    for node in inferred.graph.node:
        dims = shapes.get(node.input[0]) if node.input else None
        if not dims or len(dims) != 4:
            continue
        if node.op_type in _GLOBAL_POOLS:
            fh = dims[2]
        elif node.op_type in ("ReduceMean", "ReduceMax"):
            axes = _reduce_axes(inferred.graph, node)
            if axes not in ({1, 2}, {2, 3}):
                continue
            fh = dims[min(axes)]
        else:
            continue
        if fh and input_hw[0] % fh == 0:
            stride = input_hw[0] // fh
    return stride


def _reduce_axes(graph: onnx.GraphProto, node: onnx.NodeProto) -> set[int]:
    for a in node.attribute:
        if a.name == "axes":
            return {int(v) % 4 for v in a.ints}
    if len(node.input) > 1:
        for t in graph.initializer:
            if t.name == node.input[1]:
                return {int(v) % 4 for v in numpy_helper.to_array(t).ravel()}
        for n in graph.node:
            if n.op_type == "Constant" and n.output[0] == node.input[1]:
                return {int(v) % 4 for v in numpy_helper.to_array(n.attribute[0].t).ravel()}
    return set()


def to_slidewin_classifier(
    raw: onnx.ModelProto,
    preprocessing: Preprocessing,
    meta: ModelMeta,
    *,
    outputs_logits: bool,
    layout: Layout | None = None,
) -> onnx.ModelProto:
    """Wrap a raw classifier graph into the slidewin input/output contract.

    Handles NCHW or NHWC input (detected from the axis of size 3 unless ``layout`` says),
    float32/float16/float64 or uint8 input (uint8 fed directly when the preprocessing is only a
    channel flip, else computed in float, rounded, clipped and cast back), fixed or dynamic
    spatial size (the wrapped input is fixed at ``meta.input_hw``), a fixed batch of 1 (freed;
    the exporter's parity check runs a batch of several images and so proves it), and logits or
    probabilities (a Softmax is appended for logits).

    Args:
        raw: one image input, one ``(N, C)`` output. Modified in place and returned.
        preprocessing: the convention the raw graph was trained with; becomes the prepended
            nodes and the ``preprocess`` metadata record.
        meta: written into ``metadata_props``; ``meta.input_hw`` must match the graph's fixed
            spatial size if it has one, and ``len(meta.labels)`` its class count. A
            ``feature_stride`` of 0 is replaced by `feature_stride_of` the wrapped graph.
        outputs_logits: True to append a Softmax.
        layout: ``"NCHW"``/``"NHWC"``, or None to detect it.

    Returns:
        The model, checked (``onnx.checker`` full check) and shape-inferred: input ``image``
        uint8 ``(batch, H, W, 3)``, output ``probabilities`` float32 ``(batch, C)``. Read its
        final metadata with `meta_of`.

    Raises:
        ModelError: the raw graph is not a single-input image classifier, or disagrees with ``meta``.
    """
    sig = inspect_raw(raw, layout)
    graph = raw.graph
    h, w = meta.input_hw
    num_classes = len(meta.labels)
    if any(g is not None and g != e for g, e in zip(sig.input_hw, (h, w))):
        raise ModelError(f"input {sig.input_name!r} has spatial shape {sig.input_hw[0]}x{sig.input_hw[1]} "
                         f"({sig.layout}), not the {h}x{w} asked for")
    if sig.num_classes not in (None, num_classes):
        raise ModelError(f"output {sig.output_name!r} has {sig.num_classes} classes but {num_classes} labels "
                         f"were given; expected [N, {num_classes}] (one per label)")
    raw_in = next(i for i in graph.input if i.name == sig.input_name)
    raw_out = graph.output[0]

    # Input: swap the raw input for ``image`` and feed the old name from the new nodes.
    pre = _preprocess_nodes(graph, preprocessing, sig, sig.input_name)
    graph.input.remove(raw_in)
    graph.input.insert(0, helper.make_tensor_value_info(INPUT_NAME, TensorProto.UINT8, [BATCH_DIM, h, w, 3]))
    old_nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(pre + old_nodes)

    # Output: Cast to float32 where needed, then a Softmax into ``probabilities`` or a rename.
    out_name = raw_out.name
    graph.output.remove(raw_out)
    if raw_out.type.tensor_type.elem_type != TensorProto.FLOAT:
        graph.node.append(helper.make_node("Cast", [out_name], ["slidewin_out/float"], to=TensorProto.FLOAT,
                                           name="slidewin_out/cast"))
        out_name = "slidewin_out/float"
    if outputs_logits:
        graph.node.append(helper.make_node("Softmax", [out_name], [OUTPUT_NAME], axis=-1, name="slidewin_softmax"))
    elif out_name == raw_out.name and out_name not in {i.name for i in graph.input}:
        _rename_tensor(graph, out_name, OUTPUT_NAME)
    else:
        graph.node.append(helper.make_node("Identity", [out_name], [OUTPUT_NAME], name="slidewin_output"))
    graph.output.append(helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, [BATCH_DIM, num_classes]))

    # Stale intermediate shapes (tf2onnx's ``unk__`` batch names, a fixed batch of 1, open
    # spatial sizes) are recomputed below from the new input.
    del graph.value_info[:]
    meta = with_preprocessing(meta, preprocessing)
    if not meta.feature_stride:
        meta = dataclasses.replace(meta, feature_stride=feature_stride_of(raw, (h, w)))
    write_metadata(raw, meta)
    try:
        onnx.checker.check_model(raw, full_check=True)
        return onnx.shape_inference.infer_shapes(raw, check_type=True, strict_mode=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        first = first_line(e, limit=300)
        raise ModelError(f"the wrapped graph does not check: {first}") from None


def describe_io(model: onnx.ModelProto) -> str:
    """``image uint8 [batch, 224, 224, 3] -> probabilities float [batch, 1000]`` (for summaries)."""

    def one(vi: onnx.ValueInfoProto) -> str:
        t = vi.type.tensor_type
        dims = [d.dim_param if d.dim_param else str(d.dim_value) for d in t.shape.dim]
        return f"{vi.name} {TensorProto.DataType.Name(t.elem_type).lower()} [{', '.join(dims)}]"

    return " -> ".join([", ".join(one(i) for i in model.graph.input), ", ".join(one(o) for o in model.graph.output)])
