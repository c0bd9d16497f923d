"""Framework-independent ONNX surgery: a raw exported classifier -> the slidewin form.

A raw export takes *preprocessed* float input in whatever layout the framework used. The slidewin
form takes one input ``image``: uint8 ``(N, H, W, 3)``, RGB, 0-255, N dynamic ("batch"), and
gives one output ``probabilities``: float32 ``(N, num_classes)``. The preprocessing is prepended
as plain ONNX nodes, so the runtime never needs to know how the network was trained.

Doing this on the graph rather than in a framework wrapper keeps one implementation for every
source framework, and the exporters' parity checks compare the result against the framework's
*own* preprocessing (``keras.applications.resnet50.preprocess_input``, torch ops), so a mistake
here cannot hide.
"""

from __future__ import annotations

from enum import Enum

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from slidewin.errors import ModelError
from slidewin.runtime.model_meta import INPUT_NAME, PROBABILITIES, ModelMeta, write_metadata

OUTPUT_NAME = PROBABILITIES
BATCH_DIM = "batch"
_PREFIX = "slidewin_pre/"

# Keras "caffe" mode (ResNet50, VGG): BGR order, per-channel mean subtracted, no scaling.
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
# torchvision / EfficientNet ImageNet statistics, RGB in [0, 1].
IMAGENET_MEAN_RGB = (0.485, 0.456, 0.406)
IMAGENET_STD_RGB = (0.229, 0.224, 0.225)


class Preprocess(str, Enum):
    """How the raw graph expects its input.

    CAFFE_NHWC: float NHWC, BGR, minus ``CAFFE_MEAN_BGR`` (Keras ``preprocess_input`` for ResNet50).
    IMAGENET_NCHW: float NCHW, RGB, ``(x / 255 - IMAGENET_MEAN_RGB) / IMAGENET_STD_RGB`` (torch).
    """

    CAFFE_NHWC = "caffe-nhwc"
    IMAGENET_NCHW = "imagenet-nchw"


def preprocess_numpy(images: np.ndarray, preprocess: Preprocess) -> np.ndarray:
    """The same preprocessing in NumPy, float32, op for op (for references and tests).

    Args:
        images: uint8 ``(N, H, W, 3)`` RGB.
        preprocess: the raw graph's convention.

    Returns:
        float32 ``(N, H, W, 3)`` for CAFFE_NHWC, ``(N, 3, H, W)`` for IMAGENET_NCHW.
    """
    x = images.astype(np.float32)
    if preprocess is Preprocess.CAFFE_NHWC:
        return x[..., ::-1] - np.asarray(CAFFE_MEAN_BGR, np.float32)
    x = x / np.float32(255.0)
    x = (x - np.asarray(IMAGENET_MEAN_RGB, np.float32)) / np.asarray(IMAGENET_STD_RGB, np.float32)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def _const(graph: onnx.GraphProto, name: str, value: np.ndarray) -> str:
    graph.initializer.append(numpy_helper.from_array(value, _PREFIX + name))
    return _PREFIX + name


def _preprocess_nodes(graph: onnx.GraphProto, preprocess: Preprocess, target: str) -> list[onnx.NodeProto]:
    """Nodes from ``image`` (uint8 NHWC RGB) to ``target`` (what the raw graph consumed)."""
    f = _PREFIX + "float"
    nodes = [helper.make_node("Cast", [INPUT_NAME], [f], to=TensorProto.FLOAT, name=_PREFIX + "cast")]
    if preprocess is Preprocess.CAFFE_NHWC:
        flip = _const(graph, "rgb_to_bgr", np.array([2, 1, 0], np.int64))
        mean = _const(graph, "mean_bgr", np.array(CAFFE_MEAN_BGR, np.float32).reshape(1, 1, 1, 3))
        nodes += [
            helper.make_node("Gather", [f, flip], [_PREFIX + "bgr"], axis=3, name=_PREFIX + "rgb_to_bgr"),
            helper.make_node("Sub", [_PREFIX + "bgr", mean], [target], name=_PREFIX + "sub_mean"),
        ]
    elif preprocess is Preprocess.IMAGENET_NCHW:
        scale = _const(graph, "255", np.array(255.0, np.float32))
        mean = _const(graph, "mean_rgb", np.array(IMAGENET_MEAN_RGB, np.float32).reshape(1, 1, 1, 3))
        std = _const(graph, "std_rgb", np.array(IMAGENET_STD_RGB, np.float32).reshape(1, 1, 1, 3))
        nodes += [
            helper.make_node("Div", [f, scale], [_PREFIX + "unit"], name=_PREFIX + "div_255"),
            helper.make_node("Sub", [_PREFIX + "unit", mean], [_PREFIX + "centred"], name=_PREFIX + "sub_mean"),
            helper.make_node("Div", [_PREFIX + "centred", std], [_PREFIX + "nhwc"], name=_PREFIX + "div_std"),
            helper.make_node("Transpose", [_PREFIX + "nhwc"], [target], perm=[0, 3, 1, 2], name=_PREFIX + "to_nchw"),
        ]
    else:  # pragma: no cover - exhaustive over the enum
        raise ValueError(f"unknown preprocessing {preprocess!r}")
    return nodes


def _static_dims(value_info: onnx.ValueInfoProto) -> list[int | None]:
    dims = value_info.type.tensor_type.shape.dim
    return [d.dim_value if d.HasField("dim_value") else None for d in dims]


def _rename_tensor(graph: onnx.GraphProto, old: str, new: str) -> None:
    for node in graph.node:
        node.input[:] = [new if n == old else n for n in node.input]
        node.output[:] = [new if n == old else n for n in node.output]
    for vi in list(graph.value_info) + list(graph.output):
        if vi.name == old:
            vi.name = new


def to_slidewin_classifier(
    raw: onnx.ModelProto,
    preprocess: Preprocess,
    meta: ModelMeta,
    *,
    outputs_logits: bool,
) -> onnx.ModelProto:
    """Wrap a raw exported classifier into the slidewin input/output contract.

    Args:
        raw: the framework's ONNX export: one float input taking preprocessed images
            (layout per ``preprocess``), one output ``(N, C)``. Modified in place and returned.
        preprocess: what the raw graph expects.
        meta: written into ``metadata_props``; ``meta.input_hw`` and ``len(meta.labels)`` must
            agree with the graph.
        outputs_logits: True to append a Softmax (torch classifiers end in logits).

    Returns:
        The model, checked (``onnx.checker`` full check) and shape-inferred: input ``image``
        uint8 ``(batch, H, W, 3)``, output ``probabilities`` float32 ``(batch, C)``.

    Raises:
        ModelError: the raw graph does not have one image input and one ``(N, C)`` output that
            match ``meta``.
    """
    graph = raw.graph
    init_names = {t.name for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in init_names]
    if len(inputs) != 1 or len(graph.output) != 1:
        raise ModelError(
            f"raw export has {len(inputs)} inputs and {len(graph.output)} outputs; expected one of each"
        )
    raw_in, raw_out = inputs[0], graph.output[0]
    h, w = meta.input_hw
    num_classes = len(meta.labels)

    expected_in = [None, h, w, 3] if preprocess is Preprocess.CAFFE_NHWC else [None, 3, h, w]
    got_in = _static_dims(raw_in)
    if len(got_in) != 4 or any(g is not None and g != e for g, e in zip(got_in[1:], expected_in[1:])):
        raise ModelError(f"raw export input {raw_in.name!r} has shape {got_in}; expected {expected_in}")
    if raw_in.type.tensor_type.elem_type != TensorProto.FLOAT:
        raise ModelError(f"raw export input {raw_in.name!r} is not float32")
    got_out = _static_dims(raw_out)
    if len(got_out) != 2 or got_out[1] not in (None, num_classes):
        raise ModelError(f"raw export output has shape {got_out}; expected [N, {num_classes}] (one per label)")

    # Input: swap the raw float input for ``image`` and feed the old name from the new nodes.
    pre = _preprocess_nodes(graph, preprocess, raw_in.name)
    graph.input.remove(raw_in)
    graph.input.insert(0, helper.make_tensor_value_info(INPUT_NAME, TensorProto.UINT8, [BATCH_DIM, h, w, 3]))
    old_nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(pre + old_nodes)

    # Output: either a Softmax into ``probabilities`` or a rename of the existing output.
    raw_out_name = raw_out.name
    graph.output.remove(raw_out)
    if outputs_logits:
        graph.node.append(helper.make_node("Softmax", [raw_out_name], [OUTPUT_NAME], axis=-1, name="slidewin_softmax"))
    else:
        _rename_tensor(graph, raw_out_name, OUTPUT_NAME)
    graph.output.append(helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, [BATCH_DIM, num_classes]))

    # Stale intermediate shapes (e.g. tf2onnx's ``unk__`` batch names) are recomputed below.
    del graph.value_info[:]
    write_metadata(raw, meta)
    onnx.checker.check_model(raw, full_check=True)
    return onnx.shape_inference.infer_shapes(raw, check_type=True, strict_mode=True)


def describe_io(model: onnx.ModelProto) -> str:
    """``image uint8 [batch, 224, 224, 3] -> probabilities float [batch, 1000]`` (for summaries)."""

    def one(vi: onnx.ValueInfoProto) -> str:
        t = vi.type.tensor_type
        dims = [d.dim_param if d.dim_param else str(d.dim_value) for d in t.shape.dim]
        return f"{vi.name} {TensorProto.DataType.Name(t.elem_type).lower()} [{', '.join(dims)}]"

    return " -> ".join([", ".join(one(i) for i in model.graph.input), ", ".join(one(o) for o in model.graph.output)])
