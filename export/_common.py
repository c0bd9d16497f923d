"""What both exporters share: lazy framework imports, parity check, atomic save, the report."""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from slidewin.errors import MissingDependencyError, SlidewinError
from slidewin.core.contract import INPUT_NAME, PROBABILITIES, ModelMeta

PARITY_ATOL = 1e-4
# Parity images come from their own seed: never the batch used for tracing (seed 0).
TRACE_SEED = 0
PARITY_SEED = 20240611
_INSTALL_HINT = "pip install 'slidewin[export]'"


def progress(message: str) -> None:
    """One progress line on stdout (exports take tens of seconds)."""
    print(f"[export] {message}", flush=True)


def version_of(dist: str) -> str:
    """Installed version of a distribution without importing it; local tags (``+cu130``) dropped."""
    try:
        return importlib.metadata.version(dist).split("+")[0]
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


@contextlib.contextmanager
def _quiet_stderr_fd() -> Iterator[None]:
    """Silence fd 2 while TensorFlow prints its start-up banner; replay it if the import fails.

    TensorFlow writes oneDNN / CPU-feature notices through C++ logging before
    TF_CPP_MIN_LOG_LEVEL is read, so only the file descriptor can hide them.
    """
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real fd 2 (some embedded interpreters)
        yield
        return
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            sink.seek(0)
            sys.stderr.write(sink.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def import_tensorflow():
    """``(tf, keras, tf2onnx)``, or MissingDependencyError naming the install command."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    torch_before_tensorflow()
    try:
        with _quiet_stderr_fd():
            import tensorflow as tf
            import keras
            import tf2onnx
    except ImportError as e:
        raise MissingDependencyError(
            f"exporting a Keras model needs TensorFlow and tf2onnx ({e.name or e} is missing): {_INSTALL_HINT}"
        ) from None
    tf.get_logger().setLevel("ERROR")
    with contextlib.suppress(Exception):  # tf2onnx's own logger is chatty at INFO
        tf2onnx.logging.set_level(tf2onnx.logging.ERROR)
    return tf, keras, tf2onnx


def torch_before_tensorflow() -> None:
    """Load torch's compiler stack first when torch is installed too.

    With tensorflow-cpu 2.21 and torch 2.14.1 in one process, importing ``torch._dynamo`` (which
    ``torchvision.models`` and ``torch.onnx`` pull in) *after* TensorFlow segfaults, while the other
    order works (checked: ``import tensorflow; import torch._dynamo`` exits 139). A process that
    exports a Keras model and then a torch one (benchmarks, tests) must not crash.
    """
    import importlib.util

    if "tensorflow" not in sys.modules and importlib.util.find_spec("torch") is not None:
        with contextlib.suppress(Exception):
            import torch._dynamo  # noqa: F401


def import_torch():
    """``torch``, or MissingDependencyError naming the install command."""
    try:
        import torch
    except ImportError:
        raise MissingDependencyError(f"exporting a PyTorch model needs torch: {_INSTALL_HINT}") from None
    return torch


def random_images(n: int, hw: tuple[int, int], seed: int) -> np.ndarray:
    """uint8 ``(n, H, W, 3)`` uniform noise from ``seed``."""
    return np.random.default_rng(seed).integers(0, 256, size=(n, *hw, 3), dtype=np.uint8)


def parity_images(hw: tuple[int, int]) -> np.ndarray:
    """uint8 ``(N, H, W, 3)``: 4 noise images (a seed not used for tracing), a smooth synthetic
    scene, and scikit-image's ``chelsea`` photo when scikit-image is installed.

    Noise alone saturates nothing realistic; the smooth image and the photo exercise the value
    ranges a detector will actually see.
    """
    h, w = hw
    images = [*random_images(4, hw, PARITY_SEED)]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    smooth = np.stack([255 * xx / max(w - 1, 1), 255 * yy / max(h - 1, 1),
                       127.5 + 127.5 * np.sin((xx + yy) / 17.0)], axis=-1)
    images.append(np.clip(smooth, 0, 255).astype(np.uint8))
    with contextlib.suppress(Exception):
        import cv2
        import skimage.data

        images.append(cv2.resize(skimage.data.chelsea(), (w, h), interpolation=cv2.INTER_AREA))
    return np.stack(images)


def onnx_probabilities(model_path: Path, images: np.ndarray) -> np.ndarray:
    """Run a slidewin classifier with ONNX Runtime on the CPU: uint8 NHWC -> float32 ``(N, C)``."""
    from slidewin.runtime.sessions import CPU, open_session

    # CPU on purpose: the reference the check compares with ran on the CPU too.
    (out,) = open_session(model_path, CPU).run([PROBABILITIES], {INPUT_NAME: images})
    return out


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64)
    z = np.exp(z - z.max(axis=-1, keepdims=True))
    return (z / z.sum(axis=-1, keepdims=True)).astype(np.float32)


def looks_like_probabilities(outputs: np.ndarray) -> bool:
    """True when every row is non-negative and sums to 1 (a model that ends in softmax)."""
    return bool(np.all(outputs >= 0) and np.allclose(outputs.sum(axis=-1), 1.0, atol=1e-3))


def check_parity(onnx_out: np.ndarray, ref_out: np.ndarray, path: Path, atol: float = PARITY_ATOL) -> float:
    """Print and return ``max |Δprob|``; SlidewinError if shapes differ, NaNs appear, or it exceeds atol."""
    if onnx_out.shape != ref_out.shape:
        raise SlidewinError(f"parity check failed: ONNX output shape {onnx_out.shape} != framework {ref_out.shape}", path)
    if not (np.all(np.isfinite(onnx_out)) and np.all(np.isfinite(ref_out))):
        raise SlidewinError("parity check failed: non-finite probabilities", path)
    diff = float(np.max(np.abs(onnx_out.astype(np.float64) - ref_out.astype(np.float64))))
    progress(f"parity: max |Δprob| = {diff:.3g} ({len(onnx_out)} images)")
    if diff > atol:
        raise SlidewinError(f"parity check failed: max |Δprob| = {diff:.3g} > {atol:g} between ONNX Runtime and the source framework", path)
    return diff


def save_verified(model: onnx.ModelProto, out: Path, verify: Callable[[Path], float]) -> float:
    """Write ``model`` to a temporary file next to ``out``, run ``verify`` on it, then move it into place.

    A failed check or an interrupted run never leaves a half-written or unverified file at ``out``.

    Returns:
        What ``verify`` returned (the parity difference).
    """
    from slidewin.io.files import atomic_save_onnx

    try:
        return atomic_save_onnx(model, out, verify)
    except OSError as e:
        raise SlidewinError(f"cannot write the model: {e.strerror or e}", out) from None


@dataclass(frozen=True)
class ExportReport:
    """What an export produced.

    Attributes:
        path: the ONNX file written.
        meta: the metadata it carries.
        max_abs_diff: parity, max |ONNX Runtime - source framework| over the probabilities.
        seconds: wall time of the whole export (load, convert, verify, save).
        parity_images: how many images the parity check ran on.
    """

    path: Path
    meta: ModelMeta
    max_abs_diff: float
    seconds: float
    parity_images: int = 0

    def summary(self) -> str:
        m = self.meta
        return (
            f"wrote {self.path} ({self.path.stat().st_size / 2**20:.1f} MiB) in {self.seconds:.1f} s: "
            f"{m.architecture}, {len(m.labels)} classes ({m.label_set}), weights {m.weights}, "
            f"{m.input_hw[0]}x{m.input_hw[1]}, parity max |Δprob| = {self.max_abs_diff:.3g} "
            f"on {self.parity_images} images"
        )


def check_out_writable(out: Path) -> None:
    """Fail at once, before any slow conversion, when ``out`` cannot be written.

    ``out`` must not be a folder or a special file, and the nearest existing folder above it must
    take a new file (probed with a real temporary file: ``os.access`` says yes to root even on a
    read-only mount). Missing folders in between are created by the save, as for every exporter.

    Raises:
        SlidewinError: one line naming ``out`` and the reason.
    """
    out = Path(out)
    if out.is_dir():
        raise SlidewinError("--out is a folder; give the ONNX file to write", out)
    if out.exists() and not out.is_file():
        raise SlidewinError("--out exists and is not a regular file", out)
    parent = out.parent if str(out.parent) else Path(".")
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise SlidewinError(f"cannot write the model: {parent} is not a folder", out)
    try:
        with tempfile.TemporaryFile(dir=parent):
            pass
    except OSError as e:
        raise SlidewinError(f"cannot write the model: {parent} does not take new files ({e.strerror or e})", out) from None


def preprocessing_from_args(preset_name: str | None, mean: str | None, std: str | None, scale: str | None,
                            bgr: bool, source: Path | str | None = None):
    """The `Preprocessing` the command line states, or None when it states none.

    Either a preset (``--preprocess caffe|tf|torch|raw|unit``) or the explicit form
    (``--mean R,G,B --std R,G,B --scale S --bgr``, any subset; the rest default to the identity),
    never both.

    Raises:
        SlidewinError: an unknown preset, both forms at once, or malformed numbers (one line,
            naming ``source``).
    """
    from slidewin.core.preprocessing import Preprocessing, preset

    explicit = mean is not None or std is not None or scale is not None or bgr
    if preset_name is not None and explicit:
        raise SlidewinError("give --preprocess PRESET or --mean/--std/--scale/--bgr, not both", source)
    if preset_name is not None:
        try:
            return preset(preset_name)
        except ValueError as e:
            raise SlidewinError(str(e), source) from None
    if not explicit:
        return None

    def triple(text: str | None, flag: str, default: tuple[float, float, float]) -> tuple[float, float, float]:
        if text is None:
            return default
        try:
            values = tuple(float(v) for v in text.split(","))
        except ValueError:
            values = ()
        if len(values) != 3:
            raise SlidewinError(f"{flag} needs three comma-separated numbers R,G,B (got {text!r})", source)
        return values

    try:
        value = 1.0 if scale is None else _number(scale)
        return Preprocessing("custom", value, triple(mean, "--mean", (0.0, 0.0, 0.0)),
                             triple(std, "--std", (1.0, 1.0, 1.0)), bgr=bool(bgr))
    except ValueError as e:
        raise SlidewinError(f"bad preprocessing: {e}", source) from None


def _number(text: str) -> float:
    """A float, also written as a fraction (``1/255``)."""
    if "/" in text:
        num, _, den = text.partition("/")
        return float(num) / float(den)
    return float(text)


def presets_line() -> str:
    """``caffe (BGR mean ...), tf (...), ...``: the presets as one line, for errors."""
    from slidewin.core.preprocessing import PRESETS

    return "; ".join(p.describe() for p in PRESETS.values())
