"""Keras ResNet50 (ImageNet, random, or fine-tuned) -> slidewin ONNX classifier, via tf2onnx."""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from slidewin.core.preprocessing import PRESETS
from slidewin.errors import SlidewinError
from slidewin.core.contract import Key, LabelSet, Weights
from slidewin.io.hashing import sha256_of

from ._common import ExportReport, check_out_writable, import_tensorflow, progress
from .keras_any import _walk_layers, export_keras_model
from .keras_any import one_line as _one_line
from .labels import IMAGENET1K, read_labels_file

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
    suffix = _weights_suffix(path)
    try:
        if suffix in (".h5", ".hdf5", ".weights.h5") and (suffix == ".weights.h5" or _is_weights_only_h5(path)):
            # Weights for the stock 1000-class ResNet50, e.g. Keras' own ImageNet file fetched elsewhere.
            progress(f"building ResNet50 with weights from {path}")
            return _Loaded(keras.applications.ResNet50(weights=str(path)), Weights.IMAGENET,
                           extra={Key.WEIGHTS_FILE_SHA256: sha256_of(path).removeprefix("sha256:")})
        progress(f"loading Keras model {path}")
        model = keras.models.load_model(path, compile=False)
    except SlidewinError:
        raise
    except Exception as e:
        raise SlidewinError(f"cannot load Keras model: {_one_line(e)}", path) from None
    return _Loaded(model, sha256_of(path), label_set=LabelSet.CUSTOM)


def _weights_suffix(path: Path) -> str:
    """The suffix of a weights file that `_load` can read (``.keras``, ``.h5``, ``.hdf5``,
    ``.weights.h5``), judged without TensorFlow; else one line naming the file."""
    if not path.is_file():
        raise SlidewinError("weights file not found (expected imagenet, none, or a .keras/.h5 file)", path)
    suffix = "".join(path.suffixes[-2:]).lower() if path.name.lower().endswith(".weights.h5") else path.suffix.lower()
    if suffix not in (".keras", ".h5", ".hdf5", ".weights.h5"):
        raise SlidewinError(f"unsupported weights file type {path.suffix!r} (expected .keras or .h5)", path)
    return suffix


def _architecture(model) -> str:
    """``resnet50`` for Keras' ResNet50 (by name or layers), else ``keras:<model name>``."""
    names = {layer.name for layer in _walk_layers(model)} | {model.name}
    return "resnet50" if "resnet50" in names or {"conv1_conv", "conv5_block3_out"} <= names else f"keras:{model.name}"


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
    # Everything the user gave is judged before TensorFlow loads (tens of seconds), not after.
    check_out_writable(out)
    if str(weights) not in (KerasWeights.IMAGENET.value, KerasWeights.NONE.value):
        _weights_suffix(Path(weights))
    if labels_file is not None:
        read_labels_file(labels_file)
    progress("importing TensorFlow")
    _, keras, _ = import_tensorflow()
    loaded = _load(str(weights), keras, seed)
    model = loaded.model
    # ResNet50 takes Keras' "caffe" convention (resnet50.preprocess_input); stated here, recorded
    # in the metadata, and fed to Keras by the parity check.
    return export_keras_model(
        model, out, PRESETS["caffe"], source=weights, weights=loaded.weights, labels_file=labels_file,
        input_size=None if all(tuple(model.inputs[0].shape)[1:3]) else DEFAULT_HW, architecture=_architecture(model),
        extra=loaded.extra, opset=opset, t0=t0)
