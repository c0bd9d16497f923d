"""Precision variants of a slidewin classifier: fp16 (for GPUs) and int8 (static QDQ, for CPUs).

Both are post-processing steps on the fp32 ONNX file an exporter wrote, so they work for any
slidewin classifier whatever framework it came from. The I/O contract does not change: input
``image`` uint8 NHWC RGB, output ``probabilities`` float32. The in-graph preprocessing and the
final Softmax stay in fp32 in both variants (the preprocessing is cheap, and quantizing Softmax
to 8 bits would flatten every probability below 1/256).

Each variant is checked against the fp32 model on *held-out* windows cut from real photos:
top-1 agreement and max |Δprob| are printed and recorded in the report. The photos of a
calibration folder are split deterministically: the even-numbered ones (sorted by name)
calibrate int8, the odd-numbered ones are held out for the agreement check.

Also runnable: ``python -m slidewin_export.quantize SRC --precision int8 --out DST``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from slidewin.errors import SlidewinError, first_line
from slidewin.io.images import IMAGE_SUFFIXES
from slidewin.core.contract import Key, ModelKind, ModelMeta, Precision, write_metadata

from ._common import ExportReport, parity_images, progress, save_verified
from .graph import INPUT_NAME, OUTPUT_NAME

PREPROCESS_PREFIX = "slidewin_pre/"  # graph.py names the in-graph preprocessing nodes with it

# Windows are square crops whose side is a fraction of the photo's short side, resized to the
# model's input: the views a sliding-window detector feeds the classifier at several pyramid levels.
WINDOW_FRACTIONS = (1.0, 0.6, 0.35)
WINDOWS_PER_FRACTION = (1, 2, 3)
CALIBRATION_PHOTOS = 40  # 40 photos x 6 windows = 240 calibration windows
CALIBRATION_WINDOWS = 240
CHECK_PHOTOS = 40
CHECK_WINDOWS = 240
WINDOW_SEED = 0
BATCH = 16

# An export fails below these (never for random weights, whose top-1 means nothing). Loose on
# purpose: on coco-dev windows a third of fp32's top-1/top-2 margins are under 0.05, so even
# +-1 grey level of pixel noise changes fp32's own top-1 on ~10% of them; int8 measures ~92%,
# fp16 ~99% (2 flips in a 32-window check is already 94%), a broken quantization far less
# (int8 with a bad choice of fp32 layers: 63%). benchmarks/speed/bench_precision.py reports the real figures.
MIN_AGREEMENT = {Precision.FP16: 0.90, Precision.INT8: 0.80}
CONFIDENT = 0.5  # fp32 top-1 probability from which a window counts as a confident prediction


# ---------------------------------------------------------------- windows from real photos


def list_photos(directory: str | Path) -> list[Path]:
    """Image files directly in ``directory``, sorted by name (the order the split relies on)."""
    d = Path(directory)
    if not d.is_dir():
        raise SlidewinError("calibration photos: no such directory", d)
    return sorted(p for p in d.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def split_photos(photos: Sequence[Path]) -> tuple[list[Path], list[Path]]:
    """``(calibration, held_out)``: even and odd positions of the sorted list, never overlapping."""
    photos = sorted(photos)
    return photos[0::2], photos[1::2]


def calibration_photos(directory: str | Path | None) -> tuple[Path, list[Path], list[Path]]:
    """Resolve ``--calibration`` into ``(dir, calibration, held_out)``.

    There is no default folder: int8 is calibrated on photos the user names.

    Raises:
        SlidewinError: one line saying int8 needs calibration photos and how to give them.
    """
    if directory is None:
        raise SlidewinError(
            "int8 needs calibration photos: pass --calibration DIR "
            "(a folder of a few dozen ordinary photos, e.g. coco-dev/images)"
        )
    d = Path(directory)
    photos = list_photos(d)
    if len(photos) < 2:
        raise SlidewinError(
            f"int8 needs calibration photos: found {len(photos)} image file(s), need at least 2 "
            f"(half calibrate, half check agreement; {2 * CALIBRATION_PHOTOS} are best)", d)
    cal, held = split_photos(photos)
    return d, cal, held


def cut_windows(photos: Sequence[Path], input_hw: tuple[int, int], max_windows: int | None = None,
                seed: int = WINDOW_SEED) -> np.ndarray:
    """Square windows at several scales cut from photos, resized to the model's input.

    Deterministic for a given list of photos and seed. With ``max_windows`` the windows are
    thinned evenly over all photos (not taken from the first few).

    Args:
        photos: image files.
        input_hw: ``(H, W)`` of the model input.
        max_windows: keep at most this many.
        seed: window positions.

    Returns:
        uint8 ``(N, H, W, 3)`` RGB, ``N = 6 * len(photos)`` or ``max_windows``.
    """
    import cv2

    from slidewin.io.images import load_image

    h, w = input_hw
    rng = np.random.default_rng(seed)
    windows = []
    for p in photos:
        img = load_image(p, convert=True)
        ih, iw = img.shape[:2]
        short = min(ih, iw)
        for frac, k in zip(WINDOW_FRACTIONS, WINDOWS_PER_FRACTION):
            side = max(8, int(round(frac * short)))
            for _ in range(k):
                y = int(rng.integers(0, ih - side + 1))
                x = int(rng.integers(0, iw - side + 1))
                crop = img[y:y + side, x:x + side]
                interp = cv2.INTER_AREA if side > max(h, w) else cv2.INTER_LINEAR
                windows.append(cv2.resize(crop, (w, h), interpolation=interp))
    out = np.stack(windows) if windows else np.zeros((0, h, w, 3), np.uint8)
    if max_windows is not None and len(out) > max_windows:
        out = out[np.unique(np.linspace(0, len(out) - 1, max_windows).round().astype(int))]
    return out


# ---------------------------------------------------------------- agreement with fp32


@dataclass(frozen=True)
class Agreement:
    """How a reduced-precision model compares with its fp32 source.

    Attributes:
        top1: share of windows whose top-1 class is the same.
        max_abs_diff: max |Δprob| over all windows and classes.
        windows: how many windows were compared.
        source: where the windows came from.
        top1_confident: top-1 agreement on the windows where fp32's top-1 probability is at least
            ``CONFIDENT`` (the ones a detector would report); 1.0 when there are none.
        confident: how many such windows.
    """

    top1: float
    max_abs_diff: float
    windows: int
    source: str
    top1_confident: float = 1.0
    confident: int = 0

    def line(self) -> str:
        return (f"top-1 agreement with fp32 {100 * self.top1:.1f}% on {self.windows} {self.source} "
                f"({100 * self.top1_confident:.1f}% on the {self.confident} where fp32 >= {CONFIDENT:g}), "
                f"max |Δprob| = {self.max_abs_diff:.3g}")


def _cpu_session(path: Path, threads: int | None = None):
    from slidewin.runtime.sessions import Device, SessionSettings, open_session

    # CPU on purpose: fp32 and the variant are compared on the same provider.
    return open_session(path, SessionSettings(device=Device.CPU, threads=threads))


def probabilities(model: str | Path, images: np.ndarray, batch: int = BATCH) -> np.ndarray:
    """float32 ``(N, C)`` from a slidewin classifier (a path: on the CPU; or an open session),
    ``batch`` images at a time so memory stays bounded."""
    sess = _cpu_session(Path(model)) if isinstance(model, (str, Path)) else model
    return np.concatenate([sess.run([OUTPUT_NAME], {INPUT_NAME: images[i:i + batch]})[0]
                           for i in range(0, len(images), batch)])


def agreement(ref: np.ndarray, out: np.ndarray, source: str) -> Agreement:
    """Top-1 agreement and max |Δprob| between two ``(N, C)`` probability arrays."""
    if ref.shape != out.shape:
        raise SlidewinError(f"agreement check: output shape {out.shape} != fp32 {ref.shape}")
    if not np.all(np.isfinite(out)):
        raise SlidewinError("agreement check: the converted model gives non-finite probabilities")
    same = ref.argmax(-1) == out.argmax(-1)
    confident = ref.max(-1) >= CONFIDENT if len(ref) else np.zeros(0, bool)
    top1 = float(np.mean(same)) if len(ref) else 1.0
    diff = float(np.max(np.abs(ref.astype(np.float64) - out))) if len(ref) else 0.0
    top1_confident = float(np.mean(same[confident])) if confident.any() else 1.0
    return Agreement(top1, diff, len(ref), source, top1_confident, int(confident.sum()))


def check_windows(held_out: Sequence[Path] | None, input_hw: tuple[int, int],
                  max_windows: int | None = None) -> tuple[np.ndarray, str]:
    """Held-out photo windows for the agreement check (at most ``max_windows``, default
    ``CHECK_WINDOWS``), or the exporters' parity images when there are no photos."""
    if held_out:
        photos = list(held_out)[:CHECK_PHOTOS]
        n = CHECK_WINDOWS if max_windows is None else max_windows
        return cut_windows(photos, input_hw, n, seed=WINDOW_SEED + 1), \
            f"held-out windows ({len(photos)} photos)"
    return parity_images(input_hw), "parity images (no photos)"


def _checked(fp32_path: Path, dst: Path, precision: Precision, meta: ModelMeta, windows: np.ndarray,
             source: str) -> Callable[[Path], Agreement]:
    """A ``save_verified`` callback: load the new file, compare it with fp32, refuse it if it disagrees."""

    def verify(path: Path) -> Agreement:
        from slidewin.runtime.classifier import Classifier

        clf = Classifier(path, device="cpu")  # the runtime's own loader must accept it
        if clf.meta.precision != precision.value:
            raise SlidewinError(f"metadata says precision {clf.meta.precision}, expected {precision.value}", dst)
        a = agreement(probabilities(fp32_path, windows), probabilities(clf.session, windows), source)
        note = " (random weights: agreement is not meaningful)" if meta.is_random else ""
        progress(f"{precision.value}: {a.line()}{note}")
        floor = MIN_AGREEMENT[precision.value]
        if not meta.is_random and a.top1 < floor:
            raise SlidewinError(f"{precision.value} check failed: top-1 agreement with fp32 "
                                f"{100 * a.top1:.1f}% < {100 * floor:.0f}% on {a.windows} {source}", dst)
        return a

    return verify


# ---------------------------------------------------------------- model helpers


def _load(src: Path) -> tuple[onnx.ModelProto, ModelMeta]:
    src = Path(src)
    if not src.is_file():
        raise SlidewinError("no such model file", src)
    try:
        model = onnx.load(src)
    except Exception:
        raise SlidewinError("not an ONNX model", src) from None
    meta = ModelMeta.from_props({p.key: p.value for p in model.metadata_props}, src)
    if meta.kind is not ModelKind.CLASSIFIER:
        raise SlidewinError(f"is a {meta.kind.value} model; only classifiers are converted", src)
    if meta.precision != Precision.FP32.value:
        raise SlidewinError(f"is already {meta.precision}; convert the fp32 model", src)
    return model, meta


def _finish(model: onnx.ModelProto, meta: ModelMeta, ir_version: int) -> onnx.ModelProto:
    """Metadata, the source's IR version (ORT 1.31 cannot read onnx 1.23's default IR 14), checks."""
    write_metadata(model, meta)
    model.ir_version = ir_version
    # ORT's optimizer (quant_pre_process) declares every domain it knows; keep the ones in use.
    used = {n.domain for n in model.graph.node} | {""}
    keep = [o for o in model.opset_import if o.domain in used]
    del model.opset_import[:]
    model.opset_import.extend(keep)
    onnx.checker.check_model(model)
    return model


# ---------------------------------------------------------------- fp16

_FLOAT_INPUTS_STAY_FP32 = {("Resize", 1), ("Resize", 2), ("Upsample", 1)}  # roi / scales are float32 by spec


def _half_tensor(t: onnx.TensorProto) -> onnx.TensorProto:
    arr = numpy_helper.to_array(t)
    big = np.abs(arr[np.isfinite(arr)]).max(initial=0.0)
    if big > 65504:
        raise SlidewinError(f"fp16: tensor {t.name!r} holds {big:.3g}, beyond float16's range")
    return numpy_helper.from_array(arr.astype(np.float16), t.name)


def _convert_fp16(model: onnx.ModelProto, keep_fp32: set[str]) -> onnx.ModelProto:
    """float32 -> float16 for every node not named in ``keep_fp32``, with Casts where the two meet.

    Graph inputs and outputs keep their types. Weights used only by converted nodes are stored as
    float16 (half the file); a weight shared with an fp32 node stays float32 and is cast.
    """
    model = onnx.shape_inference.infer_shapes(model)
    g = model.graph
    FLOAT, HALF = TensorProto.FLOAT, TensorProto.FLOAT16
    elem = {vi.name: vi.type.tensor_type.elem_type for vi in [*g.value_info, *g.input, *g.output]}
    elem.update({t.name: t.data_type for t in g.initializer})
    for n in g.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    elem[n.output[0]] = a.t.data_type
    missing = [o for n in g.node for o in n.output if o and o not in elem]
    if missing:
        raise SlidewinError(f"fp16: shape inference left {len(missing)} tensor types unknown (e.g. {missing[0]!r})")

    half_nodes = [n for n in g.node if n.name not in keep_fp32]
    half_ids = {id(n) for n in half_nodes}
    consumers: dict[str, list[tuple[onnx.NodeProto, int]]] = {}
    for n in g.node:
        for i, name in enumerate(n.input):
            consumers.setdefault(name, []).append((n, i))

    def wants_half(node: onnx.NodeProto, slot: int) -> bool:
        return id(node) in half_ids and (node.op_type, slot) not in _FLOAT_INPUTS_STAY_FP32

    now: dict[str, int] = dict(elem)  # each tensor's type after conversion
    # Weights: float16 when every consumer wants float16.
    for i, t in enumerate(g.initializer):
        if t.data_type == FLOAT and all(wants_half(n, s) for n, s in consumers.get(t.name, [])):
            g.initializer[i].CopyFrom(_half_tensor(t))
            now[t.name] = HALF
    for n in half_nodes:
        for a in n.attribute:
            if n.op_type == "Constant" and a.name == "value" and a.t.data_type == FLOAT:
                a.t.CopyFrom(_half_tensor(a.t))
            elif n.op_type == "ConstantOfShape" and a.name == "value" and a.t.data_type == FLOAT:
                a.t.CopyFrom(_half_tensor(a.t))
            elif n.op_type == "Cast" and a.name == "to" and a.i == FLOAT:
                a.i = HALF
        for o in n.output:
            if elem.get(o) == FLOAT:
                now[o] = HALF

    casts: dict[tuple[str, int], str] = {}
    new_nodes: list[onnx.NodeProto] = []

    def cast_of(name: str, to: int) -> str:
        key = (name, to)
        if key not in casts:
            suffix = "fp16" if to == HALF else "fp32"
            casts[key] = f"{name}/to_{suffix}"
            new_nodes.append(helper.make_node("Cast", [name], [casts[key]], to=to,
                                              name=f"slidewin_fp16/{name}/to_{suffix}"))
        return casts[key]

    for n in list(g.node):
        for i, name in enumerate(n.input):
            if not name or elem.get(name) != FLOAT:
                continue
            want = HALF if wants_half(n, i) else FLOAT
            if now[name] != want:
                n.input[i] = cast_of(name, want)
    # Graph outputs keep float32: the converted producer writes a float16 tensor, a Cast restores the name.
    for out in g.output:
        if elem.get(out.name) == FLOAT and now[out.name] == HALF:
            inner = out.name + "/fp16"
            for n in [*g.node, *new_nodes]:
                n.output[:] = [inner if o == out.name else o for o in n.output]
                n.input[:] = [inner if x == out.name else x for x in n.input]
            new_nodes.append(helper.make_node("Cast", [inner], [out.name], to=FLOAT, name=f"slidewin_fp16/{out.name}"))

    # Put each Cast right after its input's producer: keep the node list topologically sorted.
    produced_at = {}
    nodes = list(g.node)
    for idx, n in enumerate(nodes):
        for o in n.output:
            produced_at[o] = idx
    after: dict[int, list[onnx.NodeProto]] = {}
    for c in new_nodes:
        after.setdefault(produced_at.get(c.input[0], -1), []).append(c)
    ordered = after.get(-1, [])
    for idx, n in enumerate(nodes):
        ordered.append(n)
        ordered.extend(after.get(idx, []))
    del g.node[:]
    g.node.extend(ordered)
    del g.value_info[:]
    try:
        return onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    except Exception as e:  # e.g. an op whose float16 form the spec lacks, or a subgraph (If/Loop)
        first = first_line(e)
        raise SlidewinError(f"fp16 conversion gave an inconsistent graph: {first}") from None


def _fp32_boundary_nodes(model: onnx.ModelProto) -> set[str]:
    """The in-graph preprocessing and the Softmax that writes the probabilities: kept in fp32."""
    keep = {n.name for n in model.graph.node if n.name.startswith(PREPROCESS_PREFIX)}
    keep |= {n.name for n in model.graph.node if n.op_type == "Softmax" and OUTPUT_NAME in n.output}
    return keep


def to_fp16(src: str | Path, dst: str | Path, *, photos: Sequence[Path] | None = None,
            max_check_windows: int | None = None) -> Agreement:
    """Write a float16 copy of a slidewin fp32 classifier (for GPUs), verified against fp32.

    Weights and compute become float16; the uint8 input, the in-graph preprocessing, the final
    Softmax and the float32 ``probabilities`` output stay as they were, with Casts between.
    ONNX Runtime's CPU provider runs it too (slowly: it casts around most float16 kernels).

    Args:
        src: the fp32 model (metadata precision "fp32").
        dst: file to write (atomically).
        photos: photos to cut agreement-check windows from (the held-out half of a calibration
            folder); None checks on the exporters' parity images.
        max_check_windows: at most this many check windows (default ``CHECK_WINDOWS``).

    Returns:
        Agreement with the fp32 model on the check windows.

    Raises:
        SlidewinError: not a slidewin fp32 classifier, a weight beyond float16's range, or
            top-1 agreement below ``MIN_AGREEMENT['fp16']`` (trained weights only).
    """
    src, dst = Path(src), Path(dst)
    model, meta = _load(src)
    ir = model.ir_version
    progress(f"fp16: converting {src.name} (preprocessing and Softmax stay fp32)")
    half = _convert_fp16(model, _fp32_boundary_nodes(model))
    new_meta = dataclasses.replace(meta, precision=Precision.FP16.value)
    _finish(half, new_meta, ir)
    windows, source = check_windows(photos, meta.input_hw, max_check_windows)
    return save_verified(half, dst, _checked(src, dst, Precision.FP16, meta, windows, source))


# ---------------------------------------------------------------- int8


class CalibrationMethod(str, Enum):
    MINMAX = "minmax"
    PERCENTILE = "percentile"
    ENTROPY = "entropy"


class ActivationType(str, Enum):
    UINT8 = "uint8"
    INT8 = "int8"


@dataclass(frozen=True)
class Int8Settings:
    """Static QDQ quantization settings. The defaults are the ones measured best on an AVX-512
    VNNI CPU with EfficientNet-Lite0 and ResNet50 (figures: benchmarks/speed/bench_precision.py).

    Attributes:
        activations: uint8 (asymmetric: ReLU/ReLU6 outputs use all 256 levels, and u8s8 is the
            fast integer path of ONNX Runtime on x86) or int8 (s8s8: measured no faster than
            fp32 there, 1.0x against 1.8x, for no better agreement).
        per_channel: one weight scale per output channel (BN-folded depthwise filters differ
            by orders of magnitude between channels; per-tensor: 72% top-1 agreement, not 92%).
        method: calibration method for activation ranges. MinMax by default: Percentile
            (99.999) agreed a little better (94% against 92% on 480 windows) but calibrates ~10x
            slower; Entropy gave exactly MinMax's scales in onnxruntime 1.31.
        symmetric_activations: force activation ranges symmetric around 0.
        reduce_range: 7-bit weights, for CPUs without VNNI where u8s8 products can saturate
            (costs agreement: 84% against 92%).
        exclude_head: keep the last Gemm/MatMul (the classifier head) in fp32.
        fp32_first_convs: keep the first N convolutions in fp32. Quantizing the weights of
            EfficientNet-Lite0's stem or of its first depthwise convolution *alone* costs the
            logits ~20 dB of SQNR where every other layer costs 31-45 dB (BN-folded filters whose
            large taps cancel); keeping the first 3 in fp32 lifts top-1 agreement from 86% to
            92% and costs a few percent of int8's speed. Measured against more (480 held-out
            windows, speed interleaved with fp32 under load): first 4: 92.5%; first 6: 94.4% at
            0.90-0.95x the speed of first 3 (1.66-1.68x fp32 where first 3 gave 1.75-1.86x);
            first 9: 93.5%, 1.55x; first 12: 95.0%, 1.43x. Keeping a single later convolution in
            fp32 (an fp32 island between int8 ones) is slower and often worse (block 1's
            depthwise alone: 86%; all 16 depthwise: 79%).
        fp32_nodes: further node names (of the pre-processed graph) to keep in fp32.
        percentile: for ``method=percentile``.
    """

    activations: ActivationType = ActivationType.UINT8
    per_channel: bool = True
    method: CalibrationMethod = CalibrationMethod.MINMAX
    symmetric_activations: bool = False
    reduce_range: bool = False
    exclude_head: bool = False
    fp32_first_convs: int = 3
    fp32_nodes: tuple[str, ...] = ()
    percentile: float = 99.999

    def describe(self) -> str:
        return (f"QDQ, weights int8 {'per-channel' if self.per_channel else 'per-tensor'} symmetric, "
                f"activations {self.activations.value} {'symmetric' if self.symmetric_activations else 'asymmetric'}, "
                f"{self.method.value} calibration"
                + (", reduce-range" if self.reduce_range else "")
                + (f", first {self.fp32_first_convs} convolutions" if self.fp32_first_convs else "")
                + (", head" if self.exclude_head else "")
                + (f", {len(self.fp32_nodes)} more nodes" if self.fp32_nodes else "")
                + ", preprocessing and Softmax in fp32")


class _WindowReader:
    """onnxruntime.quantization CalibrationDataReader over an in-memory uint8 window array."""

    def __init__(self, windows: np.ndarray, batch: int = BATCH):
        self._batches = [windows[i:i + batch] for i in range(0, len(windows), batch)]
        self._i = 0

    def get_next(self):
        if self._i >= len(self._batches):
            return None
        self._i += 1
        return {INPUT_NAME: self._batches[self._i - 1]}

    def rewind(self):
        self._i = 0

    def __iter__(self):
        return iter([{INPUT_NAME: b} for b in self._batches])


def _head_nodes(model: onnx.ModelProto) -> set[str]:
    """The Gemm/MatMul that feeds the output Softmax (the classifier head)."""
    producer = {o: n for n in model.graph.node for o in n.output}
    out = producer.get(OUTPUT_NAME)
    names: set[str] = set()
    node = out
    for _ in range(4):  # Softmax <- (Reshape/Squeeze/Add ...) <- Gemm/MatMul
        if node is None or not node.input:
            break
        node = producer.get(node.input[0])
        if node is not None and node.op_type in ("Gemm", "MatMul"):
            names.add(node.name)
            break
    return names


def _first_convs(model: onnx.ModelProto, n: int) -> list[str]:
    """Names of the first ``n`` Conv nodes in graph (topological) order."""
    return [node.name for node in model.graph.node if node.op_type == "Conv"][:n]


@contextlib.contextmanager
def _scratch_dir(near: Path):
    near.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{near.name}.", dir=near.parent) as d:
        yield Path(d)


def _quantize_qdq(pre_path: Path, out_path: Path, windows: np.ndarray, settings: Int8Settings) -> None:
    from onnxruntime.quantization import CalibrationMethod as OrtMethod
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    pre = onnx.load(pre_path, load_external_data=False)
    exclude = sorted(_fp32_boundary_nodes(pre) | (_head_nodes(pre) if settings.exclude_head else set())
                     | set(_first_convs(pre, settings.fp32_first_convs)) | set(settings.fp32_nodes))
    method = {CalibrationMethod.MINMAX: OrtMethod.MinMax, CalibrationMethod.PERCENTILE: OrtMethod.Percentile,
              CalibrationMethod.ENTROPY: OrtMethod.Entropy}[settings.method]
    extra = {"ActivationSymmetric": settings.symmetric_activations, "WeightSymmetric": True}
    if settings.method is CalibrationMethod.PERCENTILE:
        extra["CalibPercentile"] = settings.percentile
    quantize_static(
        str(pre_path), str(out_path), _WindowReader(windows),
        quant_format=QuantFormat.QDQ,
        per_channel=settings.per_channel,
        reduce_range=settings.reduce_range,
        activation_type=QuantType.QUInt8 if settings.activations is ActivationType.UINT8 else QuantType.QInt8,
        weight_type=QuantType.QInt8,
        nodes_to_exclude=exclude,
        calibrate_method=method,
        calibration_providers=["CPUExecutionProvider"],
        extra_options=extra,
    )


def to_int8(src: str | Path, dst: str | Path, calibration_images: Sequence[Path], *,
            held_out: Sequence[Path] | None = None, max_windows: int | None = None,
            max_check_windows: int | None = None, settings: Int8Settings = Int8Settings(),
            source: str | None = None) -> Agreement:
    """Write a statically quantized (int8 QDQ) copy of a slidewin fp32 classifier, verified against fp32.

    The fp32 model is first prepared as ONNX Runtime recommends (``quant_pre_process``: shape
    inference and graph optimisation), then activations are calibrated on windows cut from
    ``calibration_images`` at several scales, weights quantized per channel. The in-graph
    preprocessing and the final Softmax stay fp32, so the I/O contract is unchanged.

    Args:
        src: the fp32 model.
        dst: file to write (atomically).
        calibration_images: photos to cut calibration windows from (about 40 is plenty).
        held_out: other photos for the agreement check (None: the exporters' parity images).
        max_windows: calibration windows to use at most (default ``CALIBRATION_WINDOWS``;
            fewer: faster, for tests).
        max_check_windows: agreement-check windows at most (default ``CHECK_WINDOWS``).
        settings: quantization settings.
        source: how to describe the calibration set in the metadata (default: its folder).

    Returns:
        Agreement with the fp32 model on the check windows.

    Raises:
        SlidewinError: not a slidewin fp32 classifier, no calibration photos, or top-1 agreement
            below ``MIN_AGREEMENT['int8']`` (trained weights only).
    """
    from onnxruntime.quantization.shape_inference import quant_pre_process

    src, dst = Path(src), Path(dst)
    model, meta = _load(src)
    ir = model.ir_version
    photos = sorted(Path(p) for p in calibration_images)
    if not photos:
        raise SlidewinError("int8 needs calibration photos: none given (pass --calibration DIR)")
    photos = photos[:CALIBRATION_PHOTOS]
    t0 = time.perf_counter()
    windows = cut_windows(photos, meta.input_hw, CALIBRATION_WINDOWS if max_windows is None else max_windows)
    progress(f"int8: calibrating on {len(windows)} windows from {len(photos)} photos ({settings.describe()})")
    with _scratch_dir(dst) as tmp:
        pre_path, q_path = tmp / "pre.onnx", tmp / "int8.onnx"
        with _quiet_logging():
            quant_pre_process(str(src), str(pre_path), skip_symbolic_shape=False)
            _quantize_qdq(pre_path, q_path, windows, settings)
        q = onnx.load(q_path)
    progress(f"int8: quantized in {time.perf_counter() - t0:.1f} s")
    where = source or _display_path(photos[0].parent)
    new_meta = dataclasses.replace(meta, precision=Precision.INT8.value, extra={
        **meta.extra,
        Key.CALIBRATION: f"{len(windows)} windows from {len(photos)} photos in {where}",
        Key.QUANTIZATION: settings.describe(),
    })
    _finish(q, new_meta, ir)
    check, check_source = check_windows(held_out, meta.input_hw, max_check_windows)
    return save_verified(q, dst, _checked(src, dst, Precision.INT8, meta, check, check_source))


@contextlib.contextmanager
def _quiet_logging():
    """onnxruntime.quantization logs warnings and progress through `logging`; keep the export output short."""
    import logging

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


# ---------------------------------------------------------------- export at a precision


@dataclass(frozen=True)
class PrecisionReport(ExportReport):
    """An ExportReport for an fp16 / int8 model: the fp32 export's parity plus agreement with fp32."""

    precision: str = Precision.FP32.value
    agreement: Agreement | None = None

    def summary(self) -> str:
        text = super().summary()
        if self.agreement is None:
            return text
        note = " (random weights: not meaningful)" if self.meta.is_random else ""
        return f"{text}; {self.precision}: {self.agreement.line()}{note}"


def convert(src: str | Path, dst: str | Path, precision: Precision | str, calibration: str | Path | None = None,
            max_windows: int | None = None, max_check_windows: int | None = None,
            settings: Int8Settings = Int8Settings()) -> Agreement | None:
    """fp32 model ``src`` -> ``dst`` at ``precision``; photos from the folder ``calibration``.

    fp32 copies the file. fp16 checks agreement on held-out photo windows when a folder is
    given, else on the parity images. int8 needs the photos (SlidewinError without them).
    """
    precision = Precision(precision)
    src, dst = Path(src), Path(dst)
    if precision is Precision.FP32:
        _load(src)
        if src.resolve() != dst.resolve():
            save_verified(onnx.load(src), dst, lambda p: None)
        return None
    if precision is Precision.FP16:
        held = calibration_photos(calibration)[2] if calibration is not None else None
        return to_fp16(src, dst, photos=held, max_check_windows=max_check_windows)
    folder, cal, held = calibration_photos(calibration)
    return to_int8(src, dst, cal, held_out=held, max_windows=max_windows, max_check_windows=max_check_windows,
                   settings=settings, source=_display_path(folder))


def _display_path(p: Path) -> str:
    """A folder next to the repository as ``../shared/...``; anything else as it is."""
    repo = Path(__file__).resolve().parents[1]
    with contextlib.suppress(ValueError):
        return "../" + str(Path(p).resolve().relative_to(repo.parent))
    return str(p)


def export_at_precision(export_fp32: Callable[[Path], ExportReport], out: str | Path,
                        precision: Precision | str = Precision.FP32, calibration: str | Path | None = None,
                        max_windows: int | None = None) -> ExportReport:
    """Run an fp32 exporter, then convert its output to ``precision`` at ``out``.

    The calibration photos are looked up before the (slow) fp32 export, so a missing folder fails
    at once. The fp32 intermediate lives in a temporary folder next to ``out`` and is removed.

    Args:
        export_fp32: ``path -> ExportReport``, e.g. ``export_efficientnet_lite0``.
        out: the file to write.
        precision: fp32 (the exporter's file as it is), fp16 or int8.
        calibration: folder of photos (required for int8; optional for fp16's agreement check).
        max_windows: calibration windows at most (default ``CALIBRATION_WINDOWS``).

    Returns:
        The exporter's report for fp32, else a PrecisionReport with the agreement.
    """
    precision = Precision(precision)
    out = Path(out)
    if precision is Precision.FP32:
        return export_fp32(out)
    if precision is Precision.INT8:
        calibration_photos(calibration)  # fail before exporting
    t0 = time.perf_counter()
    with _scratch_dir(out) as tmp:
        fp32 = export_fp32(tmp / "fp32.onnx")
        agree = convert(fp32.path, out, precision, calibration, max_windows)
    meta = ModelMeta.from_props({p.key: p.value for p in onnx.load(out, load_external_data=False).metadata_props}, out)
    return PrecisionReport(out, meta, fp32.max_abs_diff, time.perf_counter() - t0, fp32.parity_images,
                           precision=precision.value, agreement=agree)


def main(argv: list[str] | None = None) -> int:
    """``python -m slidewin_export.quantize SRC --precision int8 --out DST``."""
    ap = argparse.ArgumentParser(prog="python -m slidewin_export.quantize",
                                 description="Convert a slidewin fp32 classifier to fp16 or int8.")
    ap.add_argument("src", type=Path, help="fp32 classifier ONNX written by `slidewin export`")
    ap.add_argument("--precision", required=True, choices=[p.value for p in Precision])
    ap.add_argument("--out", type=Path, required=True, metavar="FILE")
    ap.add_argument("--calibration", type=Path, metavar="DIR",
                    help="folder of photos (required for int8): even-numbered calibrate int8, "
                         "odd-numbered check agreement")
    ap.add_argument("--calibration-windows", type=int, metavar="N",
                    help=f"calibration windows at most (default {CALIBRATION_WINDOWS})")
    args = ap.parse_args(argv)
    try:
        a = convert(args.src, args.out, args.precision, args.calibration, args.calibration_windows)
    except SlidewinError as e:
        print(f"slidewin: error: {e}", file=sys.stderr)
        return e.exit_code
    size = args.out.stat().st_size / 2**20
    print(f"wrote {args.out} ({size:.1f} MiB), {args.precision}" + (f": {a.line()}" if a else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
