"""Any ONNX image classifier -> slidewin ONNX classifier (``slidewin export onnx``).

The user states the preprocessing the model was trained with (a preset or mean/std/scale/BGR);
layout, dtype and input size come from the graph (``--input-size`` only where the graph leaves
the size open); logits vs probabilities are detected on probe images (overridable). The check:
the original file run by ONNX Runtime on `Preprocessing.apply`'s output must give the wrapped
model's probabilities on the uint8 images.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import onnx

from slidewin.core.preprocessing import Preprocessing
from slidewin.errors import ModelError, SlidewinError, first_line
from slidewin.core.contract import Key, ModelKind, ModelMeta, Precision, read_props
from slidewin.io.hashing import sha256_of

from ._common import (
    ExportReport,
    check_out_writable,
    check_parity,
    looks_like_probabilities,
    onnx_probabilities,
    parity_images,
    presets_line,
    progress,
    save_verified,
    softmax,
)
from .graph import Layout, RawSignature, describe_io, inspect_raw, meta_of, preprocess_for_raw, to_slidewin_classifier
from .labels import labels_for

LOGITS, PROBABILITIES = "logits", "probabilities"  # not the contract's name


def parse_input_size(text: str | None) -> tuple[int, int] | None:
    """``"HxW"`` (or one number for a square) -> ``(H, W)``; ValueError on anything else."""
    if text is None:
        return None
    parts = text.lower().replace("×", "x").split("x")
    try:
        hw = tuple(int(p) for p in parts)
    except ValueError:
        hw = ()
    if len(hw) == 1:
        hw = (hw[0], hw[0])
    if len(hw) != 2 or min(hw) < 1 or max(hw) > 8192:
        raise ValueError(f"--input-size must be HxW in pixels, e.g. 224x224 (got {text!r})")
    return hw  # type: ignore[return-value]


def load_raw(path: Path) -> onnx.ModelProto:
    """The ONNX file, refused in one line when it is missing, not ONNX, or already a slidewin model."""
    path = Path(path)
    if not path.is_file():
        raise ModelError("no such model file" if not path.exists() else "not a regular file", path)
    try:
        model = onnx.load(str(path))
    except Exception as e:  # DecodeError, missing external data, ...
        first = first_line(e)
        raise ModelError(f"not a readable ONNX model ({first})", path) from None
    if not model.graph.node:
        raise ModelError("not an ONNX model (no graph nodes)", path)
    if Key.KIND.value in read_props(model):
        raise ModelError("already a slidewin model (its metadata says so): use it as it is", path)
    return model


def _input_hw(sig: RawSignature, asked: tuple[int, int] | None, path: Path) -> tuple[int, int]:
    fixed = sig.fixed_hw
    if fixed is not None:
        if asked is not None and asked != fixed:
            raise ModelError(f"the model's input is fixed at {fixed[0]}x{fixed[1]}; --input-size "
                             f"{asked[0]}x{asked[1]} does not fit it", path)
        return fixed
    if asked is None:
        open_ = "height and width" if sig.input_hw == (None, None) else "height" if sig.input_hw[0] is None else "width"
        raise ModelError(f"the model leaves its input {open_} open: give the size it was trained at "
                         "with --input-size HxW (e.g. 224x224)", path)
    for g, a in zip(sig.input_hw, asked):
        if g is not None and g != a:
            raise ModelError(f"--input-size {asked[0]}x{asked[1]} does not fit the model's input {sig.input_hw}", path)
    return asked


def _raw_session(model: onnx.ModelProto, path: Path):
    from slidewin.runtime.sessions import open_in_memory

    try:
        return open_in_memory(model)
    except Exception as e:
        first = first_line(e)
        raise ModelError(f"ONNX Runtime cannot load the model ({first})", path) from None


def raw_outputs(session, sig: RawSignature, images: np.ndarray, preprocessing: Preprocessing, path: Path) -> np.ndarray:
    """The original model's outputs on ``images`` fed the stated convention: float32 ``(N, C)``.

    A graph with a fixed batch of 1 is run one image at a time.
    """
    x = preprocess_for_raw(images, preprocessing, sig.layout, sig.input_dtype)
    step = 1 if sig.batch == 1 else len(x)
    try:
        outs = [session.run([sig.output_name], {sig.input_name: x[i:i + step]})[0] for i in range(0, len(x), step)]
    except Exception as e:
        first = first_line(e)
        raise ModelError(f"the model does not run on {x.shape[1:]} {sig.layout} input ({first})", path) from None
    out = np.concatenate(outs).astype(np.float32)
    if out.ndim != 2 or out.shape[0] != len(images):
        raise ModelError(f"output {sig.output_name!r} has shape {out.shape} on {len(images)} images; "
                         "expected (N, classes)", path)
    return out


def _producer(model: onnx.ModelProto) -> str:
    name = " ".join(f"{model.producer_name} {model.producer_version}".split())
    return f"onnx ({name or 'unknown producer'})"


def export_onnx(
    model_path: Path,
    out: Path,
    preprocessing: Preprocessing | None,
    *,
    labels_file: Path | None = None,
    input_size: tuple[int, int] | None = None,
    outputs: str | None = None,
    layout: Layout | None = None,
    architecture: str | None = None,
) -> ExportReport:
    """Wrap an ONNX image classifier into a slidewin classifier and verify it against the original.

    Args:
        model_path: the ONNX file: one image input (NCHW or NHWC, float or uint8), one
            ``(N, classes)`` output.
        out: the file to write (atomically; nothing is written when anything fails).
        preprocessing: the convention the model was trained with (required).
        labels_file: one label per line, one per output; optional for 1000 outputs (ImageNet-1k).
        input_size: ``(H, W)``; needed only where the graph leaves the size open.
        outputs: ``"logits"`` / ``"probabilities"``, or None to detect (rows summing to 1).  # not the contract's name
        layout: ``"NCHW"`` / ``"NHWC"``, or None to detect (the axis of size 3).
        architecture: recorded in the metadata (default: the file's stem).

    Returns:
        ExportReport with the parity figure (max |Δprob| between the wrapped model and the original).

    Raises:
        ModelError: the file is not a single-input image classifier, or its shapes disagree.
        SlidewinError: no preprocessing, bad labels, ``out`` not writable, failed parity.
    """
    t0 = time.perf_counter()
    model_path, out = Path(model_path), Path(out)
    if preprocessing is None:
        raise SlidewinError(f"state the model's preprocessing: --preprocess PRESET ({presets_line()}) "
                            "or --mean R,G,B --std R,G,B --scale S [--bgr]", model_path)
    if outputs not in (None, LOGITS, PROBABILITIES):
        raise SlidewinError(f"--outputs must be {LOGITS} or {PROBABILITIES}, not {outputs!r}", model_path)
    check_out_writable(out)

    progress(f"reading {model_path}")
    raw = load_raw(model_path)
    try:
        sig = inspect_raw(raw, layout)
    except ModelError as e:
        raise ModelError(e.problem, model_path) from None
    hw = _input_hw(sig, input_size, model_path)
    progress(f"input {sig.input_name!r}: {np.dtype(sig.input_dtype).name} {sig.layout} {hw[0]}x{hw[1]}; "
             f"preprocessing {preprocessing.describe()}")

    images = parity_images(hw)
    session = _raw_session(raw, model_path)
    raw_ref = raw_outputs(session, sig, images, preprocessing, model_path)
    del session
    num_classes = raw_ref.shape[1]
    labels, label_set = labels_for(num_classes, labels_file, model_path)

    logits = (outputs == LOGITS) if outputs else not looks_like_probabilities(raw_ref)
    progress(f"model outputs {'logits: appending Softmax' if logits else 'probabilities'}"  # not the contract's name
             + ("" if outputs else " (detected; --outputs overrides)"))
    ref = softmax(raw_ref) if logits else raw_ref

    meta = ModelMeta(
        kind=ModelKind.CLASSIFIER,
        input_hw=hw,
        labels=labels,
        label_set=label_set,
        weights=sha256_of(model_path),
        architecture=architecture or model_path.stem,
        source_framework=_producer(raw),
        precision=Precision.FP32.value,
    )
    progress("adding uint8 RGB input with preprocessing, checking the graph")
    try:
        final = to_slidewin_classifier(raw, preprocessing, meta, outputs_logits=logits, layout=sig.layout)
    except ModelError as e:
        raise ModelError(e.problem, model_path) from None
    meta = meta_of(final)

    def verify(path: Path) -> float:
        progress(f"parity: wrapped model vs the original file (ONNX Runtime) on {len(images)} images")
        try:
            got = onnx_probabilities(path, images)
        except Exception as e:
            first = first_line(e)
            fixed = " (its batch size is fixed at 1: re-export it with a dynamic batch axis)" if sig.batch == 1 else ""
            raise ModelError(f"the wrapped model does not run on a batch of {len(images)}{fixed}: {first}",
                             model_path) from None
        return check_parity(got, ref, model_path)

    diff = save_verified(final, out, verify)
    progress(describe_io(final))
    return ExportReport(out, meta, diff, time.perf_counter() - t0, len(images))
