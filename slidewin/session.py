"""ONNX Runtime sessions: execution providers chosen quietly, models validated on load.

onnxruntime-gpu lists ``CUDAExecutionProvider`` as available even where no GPU or CUDA library
exists, and asking for it there prints a red error before falling back. So the CUDA provider is
only requested when the NVIDIA driver library loads, and the session is created with ORT's
logging turned down; the providers the session actually got are reported afterwards.
"""

from __future__ import annotations

import ctypes
import os
from enum import Enum
from functools import lru_cache
from pathlib import Path

import numpy as np

from slidewin.errors import ModelError
from slidewin.model_meta import ModelMeta

os.environ.setdefault("ORT_LOGGING_LEVEL", "3")
import onnxruntime as ort  # noqa: E402

ort.set_default_logger_severity(3)


class Device(str, Enum):
    AUTO = "auto"
    CPU = "cpu"
    CUDA = "cuda"
    TENSORRT = "tensorrt"


def trt_cache_dir() -> Path:
    """Where TensorRT engines are cached: building one takes minutes, loading it seconds."""
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "slidewin" / "tensorrt"


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
    """Execution providers to request, in preference order."""
    device = Device(device)
    if device is Device.CPU:
        return ["CPUExecutionProvider"]
    if device in (Device.CUDA, Device.TENSORRT) and not cuda_usable():
        raise ModelError(f"--device {device.value} requested but no usable CUDA GPU was found")
    if device is Device.TENSORRT:
        if "TensorrtExecutionProvider" not in ort.get_available_providers():
            raise ModelError("--device tensorrt requested but this onnxruntime has no TensorRT provider")
        trt_cache_dir().mkdir(parents=True, exist_ok=True)
        trt = ("TensorrtExecutionProvider", {"trt_engine_cache_enable": True,
                                             "trt_engine_cache_path": str(trt_cache_dir())})
        return [trt, ("CUDAExecutionProvider", {"cudnn_conv_algo_search": "HEURISTIC"}), "CPUExecutionProvider"]
    if cuda_usable():
        return [("CUDAExecutionProvider", {"cudnn_conv_algo_search": "HEURISTIC"}), "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def physical_cores() -> int:
    """Cores to give ORT's intra-op pool (hyper-threads add little to convolution throughput)."""
    try:
        import psutil

        n = psutil.cpu_count(logical=False)
        if n:
            return n
    except ImportError:
        pass
    return os.cpu_count() or 1


def create_session(path: str | Path, device: Device | str = Device.AUTO, threads: int | None = None):
    """Open an ONNX model with the best available provider.

    Raises:
        ModelError: missing file, or a file ONNX Runtime cannot load.
    """
    p = Path(path)
    if not p.exists():
        raise ModelError("no such model file", p)
    if p.is_dir():
        raise ModelError("is a directory, not an ONNX model", p)
    if p.stat().st_size == 0:
        raise ModelError("empty model file (0 bytes)", p)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = threads or physical_cores()
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    # Idle ORT threads spin by default; on a busy machine (two cores shared with decoding, other
    # processes, CI) that halves throughput (benchmarks/results/folder.json). Sleep instead.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        return ort.InferenceSession(str(p), sess_options=opts, providers=providers_for(device))
    except ModelError:
        raise
    except Exception as e:  # ORT raises several unrelated types for a bad file
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if "protobuf" in first.lower() or "parsing" in first.lower() or "INVALID_PROTOBUF" in first:
            first = "not an ONNX model"
        raise ModelError(f"cannot load model: {first[:200]}", p) from None


def read_meta(session, path: str | Path) -> ModelMeta:
    """The slidewin metadata of an open session (raises ModelError when absent or malformed)."""
    props = dict(session.get_modelmeta().custom_metadata_map)
    return ModelMeta.from_props(props, path)


_ORT_DTYPES = {"tensor(uint8)": np.uint8, "tensor(float)": np.float32, "tensor(float16)": np.float16}


def check_image_input(session, meta: ModelMeta, path: str | Path, dynamic_batch: bool = True):
    """Validate the single ``image`` input: rank 4, NHWC with 3 channels, uint8 or float.

    Returns:
        (input_name, numpy dtype).
    """
    inputs = session.get_inputs()
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
    if isinstance(h, int) and isinstance(w, int) and (h, w) != meta.input_hw:
        raise ModelError(f"input is {h}x{w} but metadata says {meta.input_hw[0]}x{meta.input_hw[1]}", path)
    return inp.name, _ORT_DTYPES[inp.type]
