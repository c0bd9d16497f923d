"""ONNX Runtime sessions: the one place a session is made, providers chosen quietly.

onnxruntime-gpu lists ``CUDAExecutionProvider`` as available even where no GPU or CUDA library
exists, and asking for it there prints a red error before falling back. So the CUDA provider is
only requested when the NVIDIA driver library loads, and the session is created with ORT's
logging turned down; the providers the session actually got are reported afterwards.

Every session slidewin opens (classifiers, their dense form, region-proposal models, export
parity checks, int8 checks, benchmarks) comes from `open_session`, so they all share the same
settings: device and provider options, intra-op threads, and idle threads that sleep.
"""

from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache
from pathlib import Path

import numpy as np

from slidewin.errors import ModelError, first_line
from slidewin.core.contract import ModelMeta

os.environ.setdefault("ORT_LOGGING_LEVEL", "3")


def _import_onnxruntime():
    """``import onnxruntime``, with what it prints meanwhile judged rather than leaked.

    Importing ONNX Runtime 1.2x+ starts its telemetry before any logging setting applies, and
    where the cache folder cannot be written it prints a warning in raw colour codes
    ("Failed to persist telemetry device ID"). Telemetry means nothing to a slidewin run (which
    never uses the network), so those lines are dropped and telemetry is turned off; anything
    else ONNX Runtime says while loading is kept, without its colour codes, as a note.
    """
    import re
    import sys

    from slidewin.io.stderr import captured_stderr

    try:
        with captured_stderr() as lines:
            import onnxruntime
    except OSError:  # no private file to capture into (a full or read-only temp folder): as is
        import onnxruntime

        lines = []
    onnxruntime.disable_telemetry_events()
    for line in lines:
        line = re.sub(r"\x1b\[[0-9;]*m", "", line).strip()
        if line and "telemetry" not in line.lower():
            print(f"note: onnxruntime: {line}", file=sys.stderr)
    return onnxruntime


ort = _import_onnxruntime()
ort.set_default_logger_severity(3)


class Device(StrEnum):
    """Where a session runs: ``auto`` is CUDA when usable, else the CPU."""

    AUTO = "auto"
    CPU = "cpu"
    CUDA = "cuda"
    TENSORRT = "tensorrt"


@dataclass(frozen=True)
class SessionSettings:
    """How to open a session.

    Attributes:
        device: see `Device`.
        threads: ORT intra-op threads (None: the physical cores).
        memory_pattern: let ORT plan one memory pattern per input shape. Worth it when shapes
            repeat (classifier batches); not for dense levels, where every level has its own shape
            and each pattern keeps its block (EfficientNet-Lite0: 1.6 GB after one 2240x1792
            level where a pass needs 1.0 GB, 2.0 GB after five shapes; ~1.1 GB without, same speed).
    """

    device: Device = Device.AUTO
    threads: int | None = None
    memory_pattern: bool = True

    def __post_init__(self):
        object.__setattr__(self, "device", Device(self.device))
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be at least 1, got {self.threads}")


CPU = SessionSettings(device=Device.CPU)


def trt_cache_dir() -> Path:
    """Where TensorRT engines are cached: building one takes minutes, loading it seconds."""
    from slidewin.io.files import cache_dir

    return cache_dir() / "tensorrt"


@lru_cache(maxsize=1)
def cuda_usable() -> bool:
    """True when ORT has a CUDA provider and the NVIDIA driver is present on this machine."""
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return False
    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    return True


def providers_for(device: Device | str) -> list:
    """Execution providers to request, in preference order, with their options."""
    device = Device(device)
    if device is Device.CPU:
        return ["CPUExecutionProvider"]
    if device in (Device.CUDA, Device.TENSORRT) and not cuda_usable():
        raise ModelError(f"--device {device.value} requested but no usable CUDA GPU was found")
    cuda = ("CUDAExecutionProvider", {"cudnn_conv_algo_search": "HEURISTIC"})
    if device is Device.TENSORRT:
        if "TensorrtExecutionProvider" not in ort.get_available_providers():
            raise ModelError("--device tensorrt requested but this onnxruntime has no TensorRT provider")
        trt_cache_dir().mkdir(parents=True, exist_ok=True)
        trt = ("TensorrtExecutionProvider", {"trt_engine_cache_enable": True,
                                             "trt_engine_cache_path": str(trt_cache_dir())})
        return [trt, cuda, "CPUExecutionProvider"]
    if cuda_usable():
        return [cuda, "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def physical_cores() -> int:
    """Cores to give ORT's intra-op pool (hyper-threads add little to convolution throughput):
    the distinct physical cores among the CPUs this process may run on (its affinity, which
    ``taskset`` and container CPU sets narrow), read from Linux's sysfs; elsewhere psutil's count
    when installed, else the logical CPUs."""
    try:
        cores = set()
        for cpu in os.sched_getaffinity(0):
            topology = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
            cores.add(((topology / "physical_package_id").read_text(), (topology / "core_id").read_text()))
        if cores:
            return len(cores)
    except (AttributeError, OSError):
        pass
    try:
        import psutil

        n = psutil.cpu_count(logical=False)
        if n:
            return n
    except ImportError:
        pass
    return os.cpu_count() or 1


def session_options(settings: SessionSettings) -> "ort.SessionOptions":
    """The ``SessionOptions`` every slidewin session is made with."""
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = settings.threads or physical_cores()
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    opts.enable_mem_pattern = settings.memory_pattern
    # Idle ORT threads spin by default; on a busy machine (two cores shared with decoding, other
    # processes, CI) that halves throughput (benchmarks/results/folder.json). Sleep instead.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return opts


def open_in_memory(model, threads: int = 1):
    """A CPU session of an ``onnx.ModelProto`` built in memory: shape probes, dense heads, a user's
    raw graph being wrapped. The same options as every other session (`session_options`)."""
    return _inference_session(model.SerializeToString(), SessionSettings(device=Device.CPU, threads=threads))


def open_session_bytes(data: bytes, settings: SessionSettings = SessionSettings(), what: str = "model",
                       path: str | Path | None = None):
    """`open_session` of a serialized model kept in memory (a dense form that could be cached
    nowhere); ``path`` is what errors name."""
    providers_for(settings.device)  # a --device that cannot be had: its own one-line error, not ORT's
    try:
        return _inference_session(data, settings)
    except Exception as e:  # ORT raises several unrelated types
        raise ModelError(f"cannot load {what}: {first_line(e, limit=None)[:200]}", path) from None


def _inference_session(source: str | bytes, settings: SessionSettings):
    """The one place an ONNX Runtime session is made: a file's path or a model's bytes."""
    return ort.InferenceSession(source, sess_options=session_options(settings),
                                providers=providers_for(settings.device))


def check_model_file(path: str | Path, what: str = "model") -> Path:
    """``path`` as a Path, or a ModelError when it is missing, a folder or empty: the checks made
    before a model file is opened or hashed."""
    p = Path(path)
    if not p.exists():
        raise ModelError(f"no such {what} file", p)
    if p.is_dir():
        raise ModelError(f"is a directory, not an ONNX {what}", p)
    if p.stat().st_size == 0:
        raise ModelError(f"empty {what} file (0 bytes)", p)
    return p


def open_session(path: str | Path, settings: SessionSettings = SessionSettings(), what: str = "model"):
    """Open an ONNX model with the providers of ``settings.device``.

    Args:
        path: the ONNX file.
        settings: device, threads, memory patterns.
        what: how errors name the file ("model", "dense model", ...).

    Raises:
        ModelError: missing file, or a file ONNX Runtime cannot load.
    """
    p = check_model_file(path, what)
    providers_for(settings.device)  # a --device that cannot be had: its own one-line error, not ORT's
    try:
        return _inference_session(str(p), settings)
    except Exception as e:  # ORT raises several unrelated types for a bad file
        first = first_line(e, limit=None)
        if "protobuf" in first.lower() or "parsing" in first.lower() or "INVALID_PROTOBUF" in first:
            first = "not an ONNX model"
        raise ModelError(f"cannot load {what}: {first[:200]}", p) from None


def read_meta(session, path: str | Path) -> ModelMeta:
    """The slidewin metadata of an open session (raises ModelError when absent or malformed)."""
    props = dict(session.get_modelmeta().custom_metadata_map)
    return ModelMeta.from_props(props, path)


@dataclass(frozen=True)
class Port:
    """One input or output of a model, as a session describes it (``NodeArg``'s fields)."""

    name: str
    type: str
    shape: tuple


@dataclass(frozen=True)
class ModelInfo:
    """What a session reads from a model file before it runs: metadata, inputs and outputs."""

    props: dict[str, str]
    inputs: tuple[Port, ...]
    outputs: tuple[Port, ...]

    @classmethod
    def of(cls, session) -> "ModelInfo":
        def ports(args):
            return tuple(Port(a.name, a.type, tuple(a.shape)) for a in args)

        return cls(dict(session.get_modelmeta().custom_metadata_map), ports(session.get_inputs()),
                   ports(session.get_outputs()))

    def to_json(self) -> dict:
        return {"props": self.props, "inputs": [[p.name, p.type, list(p.shape)] for p in self.inputs],
                "outputs": [[p.name, p.type, list(p.shape)] for p in self.outputs]}

    @classmethod
    def from_json(cls, value) -> "ModelInfo":
        def ports(rows):
            return tuple(Port(str(n), str(t), tuple(shape)) for n, t, shape in rows)

        return cls({str(k): str(v) for k, v in value["props"].items()}, ports(value["inputs"]),
                   ports(value["outputs"]))

    def meta(self, path: str | Path) -> ModelMeta:
        """The slidewin metadata (raises ModelError when absent or malformed)."""
        return ModelMeta.from_props(self.props, path)


def model_info(path: str | Path, settings: SessionSettings = SessionSettings(), what: str = "model"):
    """A model file's `ModelInfo`, and the session it was read from, if one had to be opened.

    A file read before and unchanged since (`slidewin.io.filememo`) needs no session: its info is
    remembered, and the session is None. Opening a session costs ~0.08 s for EfficientNet-Lite0;
    a command that runs only the model's dense form never needs the classifier's own session.

    Returns:
        (info, session or None).

    Raises:
        ModelError: as `open_session`.
    """
    from slidewin.io.filememo import identity, recall, remember

    p = check_model_file(path, what)
    ident = identity(p)
    known = recall(p, "model_info", ident)
    if known is not None:
        try:
            providers_for(settings.device)  # a device that is not here is refused now, not at first use
            return ModelInfo.from_json(known), None
        except (KeyError, TypeError, ValueError):
            pass
    session = open_session(p, settings, what)
    info = ModelInfo.of(session)
    remember(p, "model_info", info.to_json(), ident)
    return info, session


def check_finite(output: np.ndarray, path: str | Path) -> np.ndarray:
    """A model output, or a ModelError when it holds inf or NaN (softmax of an infinite logit):
    the model file is broken, which is neither the user's input nor a bug of slidewin."""
    if not np.isfinite(output).all():
        raise ModelError("model output holds inf or NaN values: the model's weights or graph are broken", path)
    return output


#: The most pixels a model's input may declare (4096x4096): far above any classifier or
#: region-proposal canvas (224 to 1333 a side), far below what would exhaust memory before the
#: model runs (100000x100000 is 30 GB as uint8).
MAX_INPUT_PIXELS = 4096 * 4096

_ORT_DTYPES = {"tensor(uint8)": np.uint8, "tensor(float)": np.float32, "tensor(float16)": np.float16}


def check_image_input(inputs, meta: ModelMeta, path: str | Path) -> tuple[str, np.dtype]:
    """Validate the single image input: rank 4, NHWC with 3 channels, uint8 or float.

    slidewin's exporters name it `INPUT_NAME`; any name is accepted.

    Args:
        inputs: the model's inputs (`ModelInfo.inputs`, or a session's ``get_inputs()``).

    Returns:
        (input name, the numpy dtype it takes).
    """
    if len(inputs) != 1:
        raise ModelError(f"expected 1 input (an NHWC RGB image batch), found {len(inputs)}", path)
    inp = inputs[0]
    shape = inp.shape
    if len(shape) != 4:
        raise ModelError(f"input {inp.name!r} has rank {len(shape)}, expected 4 (N, H, W, 3)", path)
    if shape[3] != 3:
        raise ModelError(f"input {inp.name!r} has shape {shape}, expected (N, H, W, 3) RGB channels-last", path)
    if inp.type not in _ORT_DTYPES:
        raise ModelError(f"input {inp.name!r} has type {inp.type}, expected uint8 or float", path)
    h, w = shape[1], shape[2]
    for side_h, side_w in ((h, w), meta.input_hw):
        if isinstance(side_h, int) and isinstance(side_w, int) and side_h * side_w > MAX_INPUT_PIXELS:
            raise ModelError(f"input is {side_h}x{side_w} = {side_h * side_w:,} pixels, more than slidewin runs "
                             f"(at most {MAX_INPUT_PIXELS:,}, e.g. 4096x4096)", path)
    if isinstance(h, int) and isinstance(w, int) and (h, w) != meta.input_hw:
        raise ModelError(f"input is {h}x{w} but metadata says {meta.input_hw[0]}x{meta.input_hw[1]}", path)
    return inp.name, _ORT_DTYPES[inp.type]
