"""Finding a classifier's pooled head in its ONNX graph, and checking that it acts on each vector alone.

A CNN classifier ends in a *global spatial pool* (``GlobalAveragePool``; ``ReduceMean`` over the
two spatial axes, as torch's ``x.mean((2, 3))`` and tf2onnx's Keras ``GlobalAveragePooling2D``
export it; an ``AveragePool`` whose kernel is the whole feature map) followed by a *head*: the
layers between that pooled vector and the class probabilities. When every head layer acts on
each pooled vector alone (dense layers, element-wise activations, normalisations over the
channels, reshapes that keep the batch axis, 1x1 convolutions, softmax), the head can run on a whole batch of
vectors at once, one per window position: that is the dense form (`slidewin.runtime.dense_graph`).

`find_head` walks back from the output through such layers to the pool, and refuses (naming the
op) what does not fit: a ViT's class token (``Gather``), attention pooling (a ``MatMul`` of two
activations), a ``Flatten`` of the whole feature map, max pooling. The op list is a first
filter; the rewrite is also checked numerically (`check_per_vector`), since broadcasting or a
reshape can mix vectors in ways the op type alone does not show.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from slidewin.errors import ModelError, first_line

#: The dense form's tensor holding one pooled vector per window position: (positions, channels).
VECTORS = "slidewin_dense/vectors"
#: The head's output on `VECTORS`: (positions, num_labels) probabilities.
VECTOR_PROBABILITIES = "slidewin_dense/vector_probabilities"

# Each output element depends on the same element of the inputs (broadcast against constants).
_ELEMENTWISE = {
    "Abs", "Add", "And", "BitShift", "Cast", "CastLike", "Ceil", "Celu", "Clip", "Cos", "Div", "Dropout",
    "Elu", "Equal", "Erf", "Exp", "Floor", "Gelu", "Greater", "GreaterOrEqual", "HardSigmoid",
    "HardSwish", "Identity", "IsInf", "IsNaN", "LeakyRelu", "Less", "LessOrEqual", "Log", "Max",
    "Mean", "Min", "Mish", "Mod", "Mul", "Neg", "Not", "Or", "Pow", "PRelu", "Reciprocal", "Relu",
    "Round", "Selu", "Shrink", "Sigmoid", "Sign", "Sin", "Softplus", "Softsign", "Sqrt", "Sub", "Sum",
    "Tan", "Tanh", "ThresholdedRelu", "Where", "Xor", "QuickGelu",
}
# Act along an ``axis`` attribute: per vector unless it is the batch axis.
_AXIS_OPS = {"Softmax", "LogSoftmax", "Hardmax", "LayerNormalization", "Flatten", "Concat", "Split"}
# Act along ``axes`` (attribute, or the second input from opset 13/18): per vector unless they
# include the batch axis.
_AXES_OPS = {"ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
             "ReduceLogSumExp", "ReduceSumSquare", "Squeeze", "Unsqueeze"}
# Per sample with constant parameters (inputs after the first).
_PER_SAMPLE = {"BatchNormalization", "InstanceNormalization", "LpNormalization", "MeanVarianceNormalization"}
# Ops of shape arithmetic (their data is a shape, not an activation).
_SHAPE_OPS = {"Shape", "Size"}
#: Constants of at most this many elements have their values read.
_SMALL = 4096


class HeadError(ModelError):
    """The graph has no pooled head that acts on each vector alone (dense mode is not possible)."""


@dataclass(frozen=True)
class Head:
    """A classifier's global pool and the head after it.

    Attributes:
        pool: the pooling node (its output is the pooled vector).
        feature: the tensor it pools: the last feature map.
        layout: ``"NCHW"`` or ``"NHWC"`` (``ReduceMean`` over axes 1 and 2) of ``feature``.
        pooled_axes: axes the pooled tensor keeps as size 1 (``[2, 3]`` for ``GlobalAveragePool``;
            ``[]`` for a ``ReduceMean`` with ``keepdims=0``): how a (positions, C) batch of
            vectors is shaped like the pool's output.
        nodes: the head's nodes, in graph order (from the pool's output to the graph output).
        batch_reads: head nodes that read the batch size off another tensor's shape (torch's
            ``x.view(x.size(0), -1)`` with the input's size: ``Gather(Shape(input), 0)``, or
            ``Shape(x, end=1)``); their first input is to become the shape of the vectors.
    """

    pool: object
    feature: str
    layout: str
    pooled_axes: tuple[int, ...]
    nodes: tuple
    batch_reads: tuple = ()


def producers(graph) -> dict:
    return {out: node for node in graph.node for out in node.output}


def constants(graph) -> dict[str, np.ndarray | None]:
    """Tensors whose value does not depend on the input: initialisers, ``Constant`` outputs and
    what nodes compute from those alone; the value where it is an initialiser or a ``Constant``."""
    from onnx import numpy_helper

    # Only small constants (axes, shapes) are read; weights are only known to be constant.
    out: dict[str, np.ndarray | None] = {
        t.name: numpy_helper.to_array(t) if int(np.prod(t.dims)) <= _SMALL else None for t in graph.initializer}
    inputs = {i.name for i in graph.input} - set(out)
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            out[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
        elif node.op_type == "Constant":
            out[node.output[0]] = None
        elif node.input and all(i == "" or (i in out and i not in inputs) for i in node.input) \
                and not any(a.type in (5, 10) for a in node.attribute):  # no subgraphs
            for o in node.output:
                out[o] = None
    return out


def shape_tensors(graph, consts: dict) -> set[str]:
    """Tensors that hold shapes: ``Shape``/``Size`` outputs and what nodes compute from shapes and
    constants alone (``Gather``, ``Concat``, ``Unsqueeze`` ... of a shape)."""
    out: set[str] = set()
    for node in graph.node:
        live = [i for i in node.input if i and i not in consts]
        if node.op_type in _SHAPE_OPS or (live and all(i in out for i in live)):
            out.update(node.output)
    return out


def _attrs(node) -> dict:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _axes(node, consts: dict) -> list[int] | None:
    """The ``axes`` of a reduce/squeeze node (attribute or constant input), None when absent."""
    a = _attrs(node)
    if "axes" in a:
        return [int(v) for v in a["axes"]]
    if len(node.input) > 1 and node.input[1]:
        value = consts.get(node.input[1])
        return None if value is None else [int(v) for v in np.ravel(value)]
    return None


def _batch_axis(axis: int, rank: int | None) -> bool:
    return axis == 0 or (rank is not None and axis == -rank)


def spatial_pool(node, consts: dict, ranks: dict, dims: dict) -> tuple[str, tuple[int, ...]] | None:
    """``(layout, pooled_axes)`` when ``node`` averages a feature map over its whole extent, else None."""
    if not node.input:
        return None
    rank = ranks.get(node.input[0])
    if node.op_type == "GlobalAveragePool" and rank in (None, 4):
        return "NCHW", (2, 3)
    if node.op_type == "ReduceMean" and rank == 4:
        axes = _axes(node, consts)
        keep = _attrs(node).get("keepdims", 1)
        spatial = {a % 4 for a in axes} if axes else set()
        if spatial == {2, 3}:
            return "NCHW", (2, 3) if keep else ()
        if spatial == {1, 2}:
            return "NHWC", (1, 2) if keep else ()
    if node.op_type == "AveragePool" and rank == 4:
        a = _attrs(node)
        d = dims.get(node.input[0]) or []
        whole = len(d) == 4 and d[2] and d[3] and list(a.get("kernel_shape", [])) == [d[2], d[3]]
        if whole and not any(a.get("pads", [0])) and a.get("auto_pad", b"NOTSET") in (b"NOTSET", "NOTSET", b"VALID", "VALID"):
            return "NCHW", (2, 3)
    return None


def vector_problem(node, consts: dict, shapes: set[str], ranks: dict, opset: int = 17,
                   weight_dims: dict | None = None) -> str | None:
    """Why ``node`` may not act on each vector alone, or None when it does (by its op and attributes).

    Args:
        node: the node.
        consts: `constants` of the graph; shapes: its `shape_tensors`; ranks: tensor -> rank.
        opset: the graph's default-domain opset (Softmax's default axis changed in opset 13).
        weight_dims: initialiser -> dims (a 1x1 convolution is a dense layer per position).
    """
    op, a = node.op_type, _attrs(node)
    live = [i for i in node.input if i and i not in consts]
    rank = ranks.get(node.input[0]) if node.input else None
    if op in _SHAPE_OPS or (live and all(i in shapes for i in live)):
        return None
    if op in _ELEMENTWISE:
        return None
    if op in _AXIS_OPS:
        default = -1 if op in ("LayerNormalization",) else (0 if op in ("Concat", "Split") else 1)
        if op in ("Softmax", "LogSoftmax", "Hardmax"):
            default = 1 if opset < 13 else -1
        axis = int(a.get("axis", default))
        if _batch_axis(axis, rank):
            return f"works along the batch axis (axis={axis})"
        return None
    if op in _AXES_OPS:
        axes = _axes(node, consts)
        if axes is None:
            if op.startswith("Reduce") and a.get("noop_with_empty_axes", 0):
                return None
            if op == "Squeeze":
                return None  # squeezes size-1 axes only; the numerical check covers a batch of 1
            return "reduces over every axis, the batch axis included"
        if any(_batch_axis(x, rank if op != "Unsqueeze" else None) for x in axes):
            return f"works along the batch axis (axes={axes})"
        return None
    if op == "Transpose":
        perm = a.get("perm")
        return None if perm and perm[0] == 0 else "moves the batch axis"
    if op in ("MatMul", "Gemm"):
        if a.get("transA", 0):
            return "transposes its input (transA)"
        if len(live) != 1 or node.input[0] != live[0]:
            return "multiplies two activations (attention, not a dense layer)"
        return None
    if op == "Conv":  # timm's conv_head: a 1x1 convolution of the (N, C, 1, 1) pooled tensor
        kernel = (weight_dims or {}).get(node.input[1])
        if live != [node.input[0]]:
            return "convolves with weights that are not constants"
        if kernel is None or list(kernel[2:]) != [1, 1]:
            return "convolves over a neighbourhood (a kernel larger than 1x1)"
        return None
    if op in _PER_SAMPLE:
        if live != [node.input[0]] or a.get("training_mode", 0):
            return "normalises with parameters that are not constants"
        return None
    if op == "Reshape":
        if len(live) != 1:
            return None if node.input[1] in shapes else "takes its shape from an activation"
        shape = consts.get(node.input[1])
        if shape is None or (np.ravel(shape).size and int(np.ravel(shape)[0]) in (0, -1)):
            return None
        return f"reshapes to a fixed batch ({list(np.ravel(shape))})"
    if op == "Expand":
        return None if node.input[1] in consts or node.input[1] in shapes else "expands to an activation's shape"
    if op == "Slice":
        axes = consts.get(node.input[3]) if len(node.input) > 3 and node.input[3] else None
        if axes is None or any(_batch_axis(int(x), rank) for x in np.ravel(axes)):
            return "slices along the batch axis"
        return None
    if op == "Gather":
        return "picks entries along an axis (a class token?)"
    return "is not an operation known to act on each pooled vector alone"


def batch_read(node, prod: dict, consts: dict) -> bool:
    """Whether ``node`` reads a tensor's batch size off its shape: ``Gather(Shape(x), 0)``,
    ``Slice(Shape(x), 0, 1)`` or ``Shape(x, start=0, end=1)``. The whole network has one batch
    size, so in the dense form it reads the vectors' count instead."""
    a = _attrs(node)
    if node.op_type == "Shape":
        return int(a.get("start", 0)) == 0 and int(a.get("end", 0)) == 1
    src = prod.get(node.input[0]) if node.input else None
    if src is None or src.op_type != "Shape" or _attrs(src).get("start", 0):
        return False
    if node.op_type == "Gather" and int(a.get("axis", 0)) == 0:
        index = consts.get(node.input[1])
        return index is not None and np.ravel(index).tolist() == [0]
    if node.op_type == "Slice" and len(node.input) >= 3:
        starts, ends = consts.get(node.input[1]), consts.get(node.input[2])
        axes = consts.get(node.input[3]) if len(node.input) > 3 and node.input[3] else np.zeros(1)
        return (starts is not None and ends is not None and axes is not None
                and np.ravel(starts).tolist() == [0] and np.ravel(ends).tolist() == [1]
                and np.ravel(axes).tolist() == [0])
    return False


def describe(node) -> str:
    return f"{node.op_type} node {node.name!r}" if node.name else f"{node.op_type} node (output {node.output[0]!r})"


def find_head(model, output: str, dims: dict[str, list]) -> Head:
    """The global pool feeding ``output`` and the per-vector head between them.

    Walks back from ``output`` through nodes that act on each vector alone (`vector_problem`)
    and constants, until every path ends at one global spatial pool (`spatial_pool`).

    Args:
        model: an ``onnx.ModelProto``.
        output: the classifier's output tensor.
        dims: tensor name -> inferred dims (entries None where unknown) at the trained size.

    Raises:
        HeadError: a one-line reason naming the op that is in the way.
    """
    graph = model.graph
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 17)
    prod, consts = producers(graph), constants(graph)
    shapes = shape_tensors(graph, consts)
    ranks = {k: len(v) for k, v in dims.items() if v is not None}
    weight_dims = {t.name: list(t.dims) for t in graph.initializer}
    pools: dict[int, tuple] = {}
    seen: set[str] = set()
    head: set[int] = set()
    reads = []
    stack = [output]
    while stack:
        name = stack.pop()
        if name in seen or name == "" or name in consts:
            continue
        seen.add(name)
        node = prod.get(name)
        if node is None:
            raise HeadError("dense mode cannot rewrite this classifier: its output depends on the input "
                            "without a global average pool in between")
        pool = spatial_pool(node, consts, ranks, dims)
        if pool is not None:
            pools[id(node)] = (node, pool)
            continue
        if node.op_type in ("GlobalMaxPool", "GlobalLpPool"):
            raise HeadError(f"dense mode cannot rewrite this classifier: its head pools with {describe(node)} "
                            "(dense mode averages windows)")
        if batch_read(node, prod, consts):
            head.add(id(node))
            reads.append(node)
            continue
        problem = vector_problem(node, consts, shapes, ranks, opset, weight_dims)
        if problem is not None:
            raise HeadError(f"dense mode cannot rewrite this classifier: its head is fed by {describe(node)}, "
                            f"which {problem}, not by a global average pool and layers that act on each "
                            "pooled vector")
        head.add(id(node))
        stack.extend(node.input)
    if len(pools) != 1:
        names = ", ".join(describe(n) for n, _ in pools.values()) or "none"
        raise HeadError(f"dense mode cannot rewrite this classifier: its head needs exactly one global average "
                        f"pool, it reads {len(pools)} ({names})")
    (pool, (layout, axes)), = pools.values()
    nodes = tuple(n for n in graph.node if id(n) in head)
    return Head(pool, pool.input[0], layout, axes, nodes, tuple(reads))


def head_model(model, channels: int | None):
    """The head alone, from a dense form: ``VECTORS`` float (positions, channels) ->
    ``VECTOR_PROBABILITIES`` (positions, num_labels): every node needed between them, and the
    constants they read.

    Raises:
        HeadError: the model has no such tensors (not a dense form of this format).
    """
    from onnx import TensorProto, helper

    graph = model.graph
    prod = producers(graph)
    if VECTOR_PROBABILITIES not in prod:
        raise HeadError("not a dense form with a per-vector head")
    inits = {t.name: t for t in graph.initializer}
    needed, used_inits, stack, seen = set(), [], [VECTOR_PROBABILITIES], set()
    while stack:
        name = stack.pop()
        if name in seen or name == "" or name == VECTORS:
            continue
        seen.add(name)
        if name in inits:
            used_inits.append(inits[name])
            continue
        node = prod.get(name)
        if node is None:
            raise HeadError(f"the dense form's head reads {name!r}, which it does not compute")
        needed.add(id(node))
        stack.extend(node.input)
    vec_type = next((vi.type.tensor_type.elem_type for vi in graph.value_info if vi.name == VECTORS), TensorProto.FLOAT)
    g = helper.make_graph(
        [n for n in graph.node if id(n) in needed], "slidewin_head",
        [helper.make_tensor_value_info(VECTORS, vec_type or TensorProto.FLOAT, ["positions", channels])],
        [helper.make_tensor_value_info(VECTOR_PROBABILITIES, TensorProto.FLOAT, None)],
        initializer=used_inits)
    m = helper.make_model(g, opset_imports=list(model.opset_import))
    m.ir_version = model.ir_version
    return m


def check_per_vector(head, channels: int, seed: int = 0) -> None:
    """Check numerically that a head model acts on each vector alone: a batch of vectors gives,
    row by row, what each vector gives on its own (a head that mixes the batch, or fixes it to one
    vector, fails or differs).

    Raises:
        HeadError: it does not.
    """
    from slidewin.runtime.sessions import open_in_memory

    try:
        sess = open_in_memory(head)
        dtype = np.float16 if "float16" in sess.get_inputs()[0].type else np.float32
        x = np.random.default_rng(seed).uniform(0, 2, (3, channels)).astype(dtype)
        batch = sess.run([VECTOR_PROBABILITIES], {VECTORS: x})[0]
        alone = np.concatenate([sess.run([VECTOR_PROBABILITIES], {VECTORS: x[i:i + 1]})[0] for i in range(3)])
    except Exception as e:  # ORT raises several types for a graph it cannot run
        first = first_line(e)
        raise HeadError(f"dense mode cannot rewrite this classifier: its head does not run on a batch of pooled "
                        f"vectors ({first})") from None
    if batch.shape != alone.shape or batch.ndim != 2 or not np.allclose(batch, alone, rtol=1e-3, atol=1e-5):
        raise HeadError("dense mode cannot rewrite this classifier: its head does not act on each pooled "
                        "vector alone (a batch of vectors gives other values than each vector alone)")
