"""Keras ResNet50 (ImageNet, random, or fine-tuned) -> slidewin ONNX classifier, via tf2onnx."""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

import numpy as np

from slidewin.core.preprocessing import PRESETS
from slidewin.errors import SlidewinError
from slidewin.runtime.model_meta import Key, LabelSet, ModelKind, ModelMeta, Precision, Weights, sha256_of

from ._common import (
    ExportReport,
    check_parity,
    import_tensorflow,
    looks_like_probabilities,
    onnx_probabilities,
    parity_images,
    progress,
    save_verified,
    softmax,
    version_of,
)
from .graph import NHWC, describe_io, meta_of, to_slidewin_classifier
from .labels import IMAGENET1K, imagenet1k_labels, read_labels_file

IMAGENET_WEIGHTS_FILE = "resnet50_weights_tf_dim_ordering_tf_kernels.h5"
IMAGENET_WEIGHTS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/resnet/" + IMAGENET_WEIGHTS_FILE
IMAGENET_WEIGHTS_MD5 = "2cb95161c43110f7111970584f804107"  # keras.applications.resnet WEIGHTS_HASHES
DEFAULT_HW = (224, 224)


class KerasWeights(str, Enum):
    """The named weight sources; anything else given as ``weights`` is a file path."""

    IMAGENET = Weights.IMAGENET
    NONE = "none"


@dataclass
class _Loaded:
    model: object
    weights: str
    labels: tuple[str, ...] | None = None
    label_set: str = IMAGENET1K
    extra: dict[str, str] = field(default_factory=dict)


def keras_home() -> Path:
    """Where Keras caches downloads (``$KERAS_HOME`` or ``~/.keras``), read at call time."""
    home = os.environ.get("KERAS_HOME")
    if home:
        return Path(home).expanduser()
    base = Path.home()
    return (base if os.access(base, os.W_OK) else Path("/tmp")) / ".keras"


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return (text[:300] + "...") if len(text) > 300 else text or type(e).__name__


def _imagenet_weights_path(keras) -> str:
    """The cached ImageNet weights file, downloading it when it is not there yet."""
    home = keras_home()
    try:
        return keras.utils.get_file(
            IMAGENET_WEIGHTS_FILE, IMAGENET_WEIGHTS_URL, cache_subdir="models",
            file_hash=IMAGENET_WEIGHTS_MD5, cache_dir=str(home),
        )
    except Exception as e:  # URL errors, DNS failures, hash mismatches: all mean "not available"
        reason = _one_line(e).rsplit(" -- ", 1)[-1]  # Keras prefixes the URL; keep the cause
        where = home / "models"
        with contextlib.suppress(ValueError):
            where = "~" / where.relative_to(Path.home())
        raise SlidewinError(
            f"ResNet50 ImageNet weights are not available: downloading {IMAGENET_WEIGHTS_FILE} "
            f"failed ({reason}); get it from {IMAGENET_WEIGHTS_URL} and pass --weights PATH, "
            f"or put it in {where}/"
        ) from None


def _is_weights_only_h5(path: Path) -> bool:
    """A legacy HDF5 file without a model config holds weights only (like Keras' ImageNet file)."""
    import h5py

    with h5py.File(path, "r") as f:
        return "model_config" not in f.attrs


def _load(weights: str, keras, seed: int) -> _Loaded:
    if weights == KerasWeights.IMAGENET.value:
        path = _imagenet_weights_path(keras)
        progress(f"building ResNet50 with ImageNet weights from {path}")
        return _Loaded(keras.applications.ResNet50(weights=path), Weights.IMAGENET)
    if weights == KerasWeights.NONE.value:
        progress(f"building ResNet50 with random weights (seed {seed})")
        keras.utils.set_random_seed(seed)  # reproducible, so a test can rebuild the same network
        return _Loaded(keras.applications.ResNet50(weights=None), Weights.RANDOM)

    path = Path(weights)
    if not path.is_file():
        raise SlidewinError("weights file not found (expected imagenet, none, or a .keras/.h5 file)", path)
    suffix = "".join(path.suffixes[-2:]).lower() if path.name.lower().endswith(".weights.h5") else path.suffix.lower()
    try:
        if suffix in (".h5", ".hdf5", ".weights.h5") and (suffix == ".weights.h5" or _is_weights_only_h5(path)):
            # Weights for the stock 1000-class ResNet50, e.g. Keras' own ImageNet file fetched elsewhere.
            progress(f"building ResNet50 with weights from {path}")
            return _Loaded(keras.applications.ResNet50(weights=str(path)), Weights.IMAGENET,
                           extra={Key.WEIGHTS_FILE_SHA256: sha256_of(path).removeprefix("sha256:")})
        if suffix not in (".keras", ".h5", ".hdf5"):
            raise SlidewinError(f"unsupported weights file type {path.suffix!r} (expected .keras or .h5)", path)
        progress(f"loading Keras model {path}")
        model = keras.models.load_model(path, compile=False)
    except SlidewinError:
        raise
    except Exception as e:
        raise SlidewinError(f"cannot load Keras model: {_one_line(e)}", path) from None
    return _Loaded(model, sha256_of(path), label_set=LabelSet.CUSTOM)


def _walk_layers(model):
    for layer in getattr(model, "layers", ()):
        yield layer
        if hasattr(layer, "layers"):
            yield from _walk_layers(layer)


def _architecture(model, input_hw: tuple[int, int]) -> tuple[str, int]:
    """``(name, feature_stride)``; the stride is read off the global-average-pool's input grid."""
    names = {layer.name for layer in _walk_layers(model)} | {model.name}
    arch = "resnet50" if "resnet50" in names or {"conv1_conv", "conv5_block3_out"} <= names else f"keras:{model.name}"
    stride = 0
    for layer in _walk_layers(model):
        if type(layer).__name__ == "GlobalAveragePooling2D":
            shape = tuple(layer.input.shape)
            if len(shape) == 4 and shape[1] and input_hw[0] % shape[1] == 0:
                stride = input_hw[0] // shape[1]
    return arch, stride


def keras_probabilities(model, keras, images: np.ndarray, logits: bool) -> np.ndarray:
    """The framework's own answer: Keras' ResNet50 ``preprocess_input`` and a forward pass.

    Args:
        model: a Keras classifier taking caffe-preprocessed NHWC input.
        keras: the imported keras module.
        images: uint8 ``(N, H, W, 3)`` RGB.
        logits: apply softmax to the outputs.

    Returns:
        float32 ``(N, C)`` probabilities.
    """
    x = keras.applications.resnet50.preprocess_input(images.astype(np.float32))
    out = np.concatenate([keras.ops.convert_to_numpy(model(x[i:i + 8], training=False)) for i in range(0, len(x), 8)])
    return softmax(out) if logits else out.astype(np.float32)


def export_keras_resnet50(
    weights: str,
    out: Path,
    labels_file: Path | None = None,
    opset: int = 17,
    *,
    seed: int = 0,
) -> ExportReport:
    """Export a Keras ResNet50 to a slidewin ONNX classifier and verify it against Keras.

    The model must take RGB NHWC images preprocessed by
    ``keras.applications.resnet50.preprocess_input`` ("caffe": BGR, mean subtracted), as every
    ResNet50 trained with Keras does. A model ending in logits gets a Softmax appended.

    Args:
        weights: "imagenet" (Keras' cached or downloaded ImageNet weights), "none" (random
            init from ``seed``; recorded as weights "random"), or a path: a full ``.keras`` /
            ``.h5`` model (weights recorded as its sha256) or a weights-only ``.h5`` for the
            stock ImageNet ResNet50 (recorded as "imagenet").
        out: the ONNX file to write (atomically; an existing file is replaced only on success).
        labels_file: one label per line, as many as the model has outputs. Required unless the
            model has 1000 outputs (then ImageNet-1k labels are used).
        opset: ONNX opset for tf2onnx.
        seed: random-init seed for ``weights="none"``.

    Returns:
        ExportReport with the parity figure (max |Δprob| between ONNX Runtime and Keras).

    Raises:
        SlidewinError: weights unavailable or unreadable, labels that do not match, failed parity.
        MissingDependencyError: TensorFlow / tf2onnx not installed.
    """
    t0 = time.perf_counter()
    out = Path(out)
    progress("importing TensorFlow")
    tf, keras, tf2onnx = import_tensorflow()
    loaded = _load(str(weights), keras, seed)
    model = loaded.model

    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise SlidewinError(f"model has {len(model.inputs)} inputs and {len(model.outputs)} outputs; expected one image input and one class output", weights)
    in_shape, out_shape = tuple(model.inputs[0].shape), tuple(model.outputs[0].shape)
    if len(in_shape) != 4 or in_shape[3] != 3 or len(out_shape) != 2 or not out_shape[1]:
        raise SlidewinError(f"model maps {in_shape} to {out_shape}; expected (N, H, W, 3) RGB images to (N, classes)", weights)
    input_hw = (in_shape[1] or DEFAULT_HW[0], in_shape[2] or DEFAULT_HW[1])
    num_classes = int(out_shape[1])

    if labels_file is not None:
        labels = read_labels_file(Path(labels_file))
        label_set = LabelSet.CUSTOM
        if len(labels) != num_classes:
            raise SlidewinError(f"labels file has {len(labels)} labels but the model has {num_classes} outputs", labels_file)
    elif num_classes == 1000:
        labels, label_set = imagenet1k_labels(), IMAGENET1K
    else:
        raise SlidewinError(f"model has {num_classes} outputs, not ImageNet's 1000: pass --labels FILE with one label per line", weights)

    act = getattr(getattr(model.layers[-1], "activation", None), "__name__", "")
    if act == "sigmoid":
        raise SlidewinError("model ends in a sigmoid (multi-label); slidewin classifiers need softmax or logits", weights)
    images = parity_images(input_hw)
    raw_ref = keras_probabilities(model, keras, images, logits=False)
    logits = not looks_like_probabilities(raw_ref)
    if logits:
        progress("model outputs logits: appending Softmax")

    arch, stride = _architecture(model, input_hw)
    meta = ModelMeta(
        kind=ModelKind.CLASSIFIER,
        input_hw=input_hw,
        labels=labels,
        label_set=label_set,
        weights=loaded.weights,
        architecture=arch,
        source_framework=f"keras {version_of('keras')} (tensorflow {tf.__version__}), tf2onnx {version_of('tf2onnx')}",
        precision=Precision.FP32.value,
        feature_stride=stride,
        extra=loaded.extra,
    )

    progress(f"converting with tf2onnx (opset {opset}; about half a minute for ResNet50)")
    spec = (tf.TensorSpec((None, *input_hw, 3), tf.float32, name="input"),)
    try:
        if type(model).__name__ == "Functional":  # ResNet50 and most fine-tuned models
            raw, _ = tf2onnx.convert.from_keras(model, input_signature=spec, opset=opset)
        else:
            # tf2onnx 1.17's from_keras fails on Keras 3 Sequential models (KeyError on a
            # keras_tensor name); tracing a plain tf.function works for any model class.
            fn = tf.function(lambda x: model(x, training=False), input_signature=spec)
            raw, _ = tf2onnx.convert.from_function(fn, input_signature=spec, opset=opset)
    except Exception as e:
        raise SlidewinError(f"tf2onnx could not convert the model: {_one_line(e)}", weights) from None
    progress("adding uint8 RGB input with preprocessing, checking the graph")
    final = to_slidewin_classifier(raw, PRESETS["caffe"], meta, outputs_logits=logits, layout=NHWC)
    meta = meta_of(final)

    ref = softmax(raw_ref) if logits else raw_ref.astype(np.float32)

    def verify(path: Path) -> float:
        progress(f"parity: ONNX Runtime vs Keras on {len(images)} images not used for tracing")
        return check_parity(onnx_probabilities(path, images), ref, out)

    diff = save_verified(final, out, verify)
    report = ExportReport(out, meta, diff, time.perf_counter() - t0, len(images))
    progress(describe_io(final))
    return report
