"""Any Keras image classifier -> slidewin ONNX classifier, via tf2onnx (``slidewin export keras``).

The preprocessing is read from the model where a Keras application fixes it (ResNet/VGG:
``caffe``; MobileNet v1/v2, Inception, Xception, ResNetV2, NASNet: ``tf``; DenseNet: ``torch``;
EfficientNet and, when built with their preprocessing layers, MobileNetV3, EfficientNetV2 and
ConvNeXt: ``raw``), and must be stated (``--preprocess``) otherwise: a guess would be baked into
the graph and, fed to both sides of the parity check, could never be caught. The parity check
feeds Keras `Preprocessing.apply`'s output, the stated convention.

`export_keras_model` is the one conversion path; ``keras_resnet50`` uses it too.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np

from slidewin.core.preprocessing import PRESETS, Preprocessing
from slidewin.errors import SlidewinError
from slidewin.core.contract import ModelKind, ModelMeta, Precision
from slidewin.io.hashing import sha256_of

from ._common import (
    ExportReport,
    check_out_writable,
    check_parity,
    import_tensorflow,
    looks_like_probabilities,
    onnx_probabilities,
    parity_images,
    presets_line,
    progress,
    save_verified,
    softmax,
    version_of,
)
from .graph import NHWC, describe_io, meta_of, to_slidewin_classifier
from .labels import labels_for

# Keras application model names (``keras.applications.X(...).name``) -> the preset its
# ``preprocess_input`` applies. ``None``: the family has preprocessing layers inside the model
# when built with ``include_preprocessing=True`` (the default), see `_has_preprocessing_layers`.
_FAMILIES: tuple[tuple[str, str, str | None], ...] = (
    (r"resnet(50|101|152)", "ResNet", "caffe"),
    (r"vgg1[69]", "VGG", "caffe"),
    (r"resnet(50|101|152)v2", "ResNetV2", "tf"),
    (r"mobilenet_[0-9.]+_\d+", "MobileNet", "tf"),
    (r"mobilenetv2_[0-9.]+_\d+", "MobileNetV2", "tf"),
    (r"inception_v3", "InceptionV3", "tf"),
    (r"inception_resnet_v2", "InceptionResNetV2", "tf"),
    (r"xception", "Xception", "tf"),
    (r"nasnet(_mobile|_large)?", "NASNet", "tf"),
    (r"densenet(121|169|201)", "DenseNet", "torch"),
    (r"efficientnetb[0-7]", "EfficientNet", "raw"),
    (r"mobilenetv3(small|large)", "MobileNetV3", None),
    (r"efficientnetv2-(b[0-3]|s|m|l)", "EfficientNetV2", None),
    (r"convnext_(tiny|small|base|large|xlarge)", "ConvNeXt", None),
    (r"regnet[xy]\d+", "RegNet", None),
)
# Layer names that identify an application whose layers were reused in a user's own Functional
# model (the model then has the user's name): a few distinctive names each.
_LAYER_SIGNATURES: tuple[tuple[frozenset[str], str, str], ...] = (
    (frozenset({"conv1_conv", "conv5_block3_out", "post_bn"}), "ResNetV2", "tf"),
    (frozenset({"conv1_conv", "conv5_block3_out"}), "ResNet", "caffe"),
    (frozenset({"block1_conv1", "block5_conv3", "block5_pool"}), "VGG", "caffe"),
    (frozenset({"Conv1", "bn_Conv1", "block_16_project"}), "MobileNetV2", "tf"),
    (frozenset({"conv1", "conv_dw_13", "conv_pw_13"}), "MobileNet", "tf"),
    (frozenset({"block1_conv1", "block14_sepconv2"}), "Xception", "tf"),
    (frozenset({"stem_conv", "top_conv", "block1a_dwconv"}), "EfficientNet", "raw"),
)


def _walk_layers(model):
    for layer in getattr(model, "layers", ()):
        yield layer
        if hasattr(layer, "layers"):
            yield from _walk_layers(layer)


def _has_preprocessing_layers(model) -> bool:
    """A Rescaling or Normalization layer among the first layers: the model takes 0-255 pixels."""
    for i, layer in enumerate(_walk_layers(model)):
        if type(layer).__name__ in ("Rescaling", "Normalization", "PreStem"):
            return True
        if i > 8:
            break
    return False


def application_preprocessing(model) -> tuple[str, Preprocessing] | None:
    """``(family, preprocessing)`` where the model is (or contains) a Keras application that fixes
    its preprocessing; None when it does not say (then it must be stated).

    The model's own name and the names of nested models are matched first (a fine-tuned model
    usually wraps the application as a sub-model), then distinctive layer names.
    """
    names = [model.name] + [layer.name for layer in _walk_layers(model) if hasattr(layer, "layers")]
    for name in names:
        for pattern, family, preset_name in _FAMILIES:
            if re.fullmatch(pattern, name.lower()):
                if preset_name is None:
                    # Built with include_preprocessing=False the family takes [-1, 1] or its own
                    # normalisation: not something to guess.
                    if not _has_preprocessing_layers(model):
                        return None
                    preset_name = "raw"
                return family, PRESETS[preset_name]
    layer_names = {layer.name for layer in _walk_layers(model)}
    for signature, family, preset_name in _LAYER_SIGNATURES:
        if signature <= layer_names:
            return family, PRESETS[preset_name]
    return None


def one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return (text[:300] + "...") if len(text) > 300 else text or type(e).__name__


def load_keras_file(path: Path, keras):
    """A full Keras model from a ``.keras`` / ``.h5`` file (compile=False); one-line SlidewinError otherwise."""
    path = Path(path)
    if not path.is_file():
        raise SlidewinError("no such model file (expected a .keras or .h5 Keras model)", path)
    if path.suffix.lower() not in (".keras", ".h5", ".hdf5"):
        raise SlidewinError(f"unsupported model file type {path.suffix!r} (expected .keras or .h5)", path)
    progress(f"loading Keras model {path}")
    try:
        return keras.models.load_model(path, compile=False)
    except Exception as e:
        raise SlidewinError(f"cannot load Keras model: {one_line(e)}", path) from None


def keras_feature_stride(model, input_hw: tuple[int, int]) -> int:
    """The stride read off the last global-average-pool's input grid; 0 if there is none."""
    stride = 0
    for layer in _walk_layers(model):
        if type(layer).__name__ == "GlobalAveragePooling2D":
            try:
                shape = tuple(layer.input.shape)
            except Exception:  # a layer used in several places has no single input
                continue
            if len(shape) == 4 and shape[1] and input_hw[0] % shape[1] == 0:
                stride = input_hw[0] // shape[1]
    return stride


def keras_outputs(model, keras, images: np.ndarray, preprocessing: Preprocessing) -> np.ndarray:
    """The framework's own answer: Keras fed ``preprocessing.apply(images)``; float32 ``(N, C)`` as the model gives it."""
    x = preprocessing.apply(images)
    return np.concatenate([keras.ops.convert_to_numpy(model(x[i:i + 8], training=False))
                           for i in range(0, len(x), 8)]).astype(np.float32)


def _signature(model, source, input_size: tuple[int, int] | None) -> tuple[tuple[int, int], int]:
    """``(input_hw, num_classes)`` of a one-image-input, one-(N, C)-output model."""
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise SlidewinError(f"model has {len(model.inputs)} inputs and {len(model.outputs)} outputs; "
                            "expected one image input and one class output", source)
    in_shape, out_shape = tuple(model.inputs[0].shape), tuple(model.outputs[0].shape)
    if len(in_shape) != 4 or in_shape[3] != 3:
        what = (f"{in_shape[3]} channel(s)" if len(in_shape) == 4 and in_shape[3] else f"rank {len(in_shape)}")
        raise SlidewinError(f"model input has shape {in_shape} ({what}); expected (N, H, W, 3) RGB images", source)
    if len(out_shape) != 2 or not out_shape[1]:
        raise SlidewinError(f"model output has shape {out_shape}; expected (N, classes)", source)
    fixed = (in_shape[1], in_shape[2])
    if all(fixed):
        if input_size is not None and tuple(input_size) != fixed:
            raise SlidewinError(f"the model's input is fixed at {fixed[0]}x{fixed[1]}; --input-size does not fit it", source)
        return (int(fixed[0]), int(fixed[1])), int(out_shape[1])
    if input_size is None:
        raise SlidewinError("the model leaves its input size open: give the size it was trained at with "
                            "--input-size HxW (e.g. 224x224)", source)
    return tuple(input_size), int(out_shape[1])  # type: ignore[return-value]


def export_keras_model(
    model,
    out: Path,
    preprocessing: Preprocessing,
    *,
    source: Path | str,
    weights: str,
    labels_file: Path | None = None,
    input_size: tuple[int, int] | None = None,
    architecture: str | None = None,
    extra: dict[str, str] | None = None,
    opset: int = 17,
    t0: float | None = None,
) -> ExportReport:
    """Convert a loaded Keras classifier with tf2onnx, wrap it, and verify it against Keras.

    Args:
        model: a Keras model taking NHWC RGB images preprocessed by ``preprocessing``.
        out: the ONNX file to write (atomically).
        preprocessing: the stated convention (baked into the graph, fed to Keras for parity).
        source: what error messages name (the model file).
        weights: the ``weights`` metadata value.
        labels_file: one label per line; optional for 1000 outputs.
        input_size: ``(H, W)`` where the model leaves it open.
        architecture: recorded in the metadata (default ``keras:<model name>``).
        extra: further metadata keys.
        opset: ONNX opset for tf2onnx.
        t0: start time for the report (default now).

    Returns:
        ExportReport with the parity figure.
    """
    t0 = time.perf_counter() if t0 is None else t0
    tf, keras, tf2onnx = import_tensorflow()
    input_hw, num_classes = _signature(model, source, input_size)
    labels, label_set = labels_for(num_classes, labels_file, source)

    act = getattr(getattr(model.layers[-1], "activation", None), "__name__", "")
    if act == "sigmoid":
        raise SlidewinError("model ends in a sigmoid (multi-label); slidewin classifiers need softmax or logits", source)
    images = parity_images(input_hw)
    raw_ref = keras_outputs(model, keras, images, preprocessing)
    logits = not looks_like_probabilities(raw_ref)
    if logits:
        progress("model outputs logits: appending Softmax")

    meta = ModelMeta(
        kind=ModelKind.CLASSIFIER,
        input_hw=input_hw,
        labels=labels,
        label_set=label_set,
        weights=weights,
        architecture=architecture or f"keras:{model.name}",
        source_framework=f"keras {version_of('keras')} (tensorflow {tf.__version__}), tf2onnx {version_of('tf2onnx')}",
        precision=Precision.FP32.value,
        feature_stride=keras_feature_stride(model, input_hw),
        extra=dict(extra or {}),
    )

    progress(f"converting with tf2onnx (opset {opset}; tens of seconds for a large network)")
    spec = (tf.TensorSpec((None, *input_hw, 3), tf.float32, name="input"),)
    try:
        if type(model).__name__ == "Functional":  # applications and most fine-tuned models
            raw, _ = tf2onnx.convert.from_keras(model, input_signature=spec, opset=opset)
        else:
            # tf2onnx 1.17's from_keras fails on Keras 3 Sequential models (KeyError on a
            # keras_tensor name); tracing a plain tf.function works for any model class.
            fn = tf.function(lambda x: model(x, training=False), input_signature=spec)
            raw, _ = tf2onnx.convert.from_function(fn, input_signature=spec, opset=opset)
    except Exception as e:
        raise SlidewinError(f"tf2onnx could not convert the model: {one_line(e)}", source) from None
    progress(f"adding uint8 RGB input with {preprocessing.describe()} preprocessing, checking the graph")
    final = to_slidewin_classifier(raw, preprocessing, meta, outputs_logits=logits, layout=NHWC)
    meta = meta_of(final)
    ref = softmax(raw_ref) if logits else raw_ref

    def verify(path: Path) -> float:
        progress(f"parity: ONNX Runtime vs Keras fed {preprocessing.name} input, {len(images)} images not used for tracing")
        return check_parity(onnx_probabilities(path, images), ref, source)

    diff = save_verified(final, out, verify)
    progress(describe_io(final))
    return ExportReport(Path(out), meta, diff, time.perf_counter() - t0, len(images))


def export_keras(
    model_path: Path,
    out: Path,
    preprocessing: Preprocessing | None = None,
    *,
    labels_file: Path | None = None,
    input_size: tuple[int, int] | None = None,
    architecture: str | None = None,
    opset: int = 17,
) -> ExportReport:
    """Export any Keras classifier file to a slidewin ONNX classifier and verify it against Keras.

    Args:
        model_path: a ``.keras`` / ``.h5`` full model.
        out: the ONNX file to write (atomically; nothing is written on failure).
        preprocessing: the convention the model was trained with; None to take it from the
            Keras application the model is built on (refused when it is not one).
        labels_file: one label per line, one per output; optional for 1000 outputs.
        input_size: ``(H, W)`` where the model leaves it open.
        architecture: recorded in the metadata (default: the application family, else
            ``keras:<model name>``).
        opset: ONNX opset for tf2onnx.

    Raises:
        SlidewinError: no stated or known preprocessing, a stated one that contradicts the
            application's, bad labels, unwritable ``out``, failed conversion or parity.
    """
    t0 = time.perf_counter()
    model_path, out = Path(model_path), Path(out)
    check_out_writable(out)
    if not model_path.is_file():
        raise SlidewinError("no such model file (expected a .keras or .h5 Keras model)", model_path)
    progress("importing TensorFlow")
    _, keras, _ = import_tensorflow()
    model = load_keras_file(model_path, keras)
    found = application_preprocessing(model)
    if preprocessing is None:
        if found is None:
            raise SlidewinError(f"cannot tell this model's preprocessing (not a Keras application that fixes it): "
                                f"give --preprocess PRESET ({presets_line()}) or --mean/--std/--scale/--bgr", model_path)
        family, preprocessing = found
        progress(f"a Keras {family}: preprocessing {preprocessing.describe()}")
    elif found is not None and found[1] != preprocessing:
        progress(f"note: a Keras {found[0]} usually takes {found[1].name}; using the stated {preprocessing.name}")
    return export_keras_model(
        model, out, preprocessing, source=model_path, weights=sha256_of(model_path), labels_file=labels_file,
        input_size=input_size, architecture=architecture or (found[0].lower() if found else None), opset=opset, t0=t0)
