"""The dense form of real torchvision architectures (random weights, exported at test time): every
head that acts on each pooled vector gets one, equal to the classifier where the window is the
whole input; inputs that are not 224 px, or not a multiple of the stride, and a stride of 16 work
in dense detection and pooled scoring; a ViT (class token) says why it cannot be dense."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from slidewin.core.detector import RunStats
from slidewin.errors import ModelError
from slidewin.pipeline.config import DetectorConfig, Mode
from slidewin.pipeline.factory import build_detector
from slidewin.pipeline.sliding import SlidingWindowDetector
from slidewin.proposals.scoring import PooledScorer
from slidewin.runtime.classifier import Classifier
from slidewin.runtime.dense import DenseClassifier

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

PHOTOS = Path(__file__).resolve().parents[1] / "data" / "coco-mini" / "images"
NUM_CLASSES = 10


class _MeanHead(torch.nn.Module):
    """Convolutions, ``x.mean((2, 3))`` (ReduceMean, keepdims=0), LayerNorm, GELU: a head that
    torch exports without a GlobalAveragePool, and with the Erf pattern of GELU."""

    def __init__(self):
        super().__init__()
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(3, 16, 3, 2, 1), torch.nn.ReLU(), torch.nn.Conv2d(16, 32, 3, 2, 1), torch.nn.ReLU(),
            torch.nn.Conv2d(32, 32, 3, 2, 1), torch.nn.ReLU())
        self.head = torch.nn.Sequential(torch.nn.LayerNorm(32), torch.nn.Linear(32, 24), torch.nn.GELU(),
                                        torch.nn.Linear(24, NUM_CLASSES))

    def forward(self, x):
        return self.head(self.features(x).mean((2, 3)))


class _NhwcHead(torch.nn.Module):
    """Pools over axes 1 and 2 of an NHWC map (as tf2onnx's Keras exports do), then BatchNorm1d,
    Hardswish, Dropout and two dense layers."""

    def __init__(self):
        super().__init__()
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(3, 16, 3, 2, 1), torch.nn.ReLU(), torch.nn.Conv2d(16, 24, 3, 2, 1), torch.nn.ReLU(),
            torch.nn.Conv2d(24, 24, 3, 2, 1))
        self.head = torch.nn.Sequential(torch.nn.BatchNorm1d(24), torch.nn.Linear(24, 20), torch.nn.Hardswish(),
                                        torch.nn.Dropout(0.2), torch.nn.Linear(20, NUM_CLASSES))

    def forward(self, x):
        return self.head(self.features(x).permute(0, 2, 3, 1).mean((1, 2)))


class _ConvHead(torch.nn.Module):
    """timm's MobileNetV3 head: global pool, a 1x1 convolution of the pooled (N, C, 1, 1) tensor,
    Hardswish, Flatten, dense layer."""

    def __init__(self):
        super().__init__()
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(3, 16, 3, 2, 1), torch.nn.ReLU(), torch.nn.Conv2d(16, 24, 3, 2, 1), torch.nn.ReLU(),
            torch.nn.Conv2d(24, 24, 3, 2, 1), torch.nn.ReLU(), torch.nn.Conv2d(24, 32, 3, 2, 1))
        self.head = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Conv2d(32, 48, 1), torch.nn.Hardswish(),
                                        torch.nn.Flatten(), torch.nn.Linear(48, NUM_CLASSES))

    def forward(self, x):
        return self.head(self.features(x))


def _resnet18_stride16():
    m = torchvision.models.resnet18(num_classes=NUM_CLASSES)
    m.layer4 = torch.nn.Identity()                   # three downsampling stages after the stem: stride 16
    m.fc = torch.nn.Linear(256, NUM_CLASSES)
    return m


# name -> (builder, input size, network stride)
ARCHS = {
    "resnet18-160": (lambda: torchvision.models.resnet18(num_classes=NUM_CLASSES), 160, 32),
    "resnet18-s16": (_resnet18_stride16, 64, 16),
    "mobilenet_v3_small": (lambda: torchvision.models.mobilenet_v3_small(num_classes=NUM_CLASSES), 96, 32),
    "convnext_tiny": (lambda: torchvision.models.convnext_tiny(num_classes=NUM_CLASSES), 64, 32),
    "efficientnet_b0-100": (lambda: torchvision.models.efficientnet_b0(num_classes=NUM_CLASSES), 100, 32),
    "mean-layernorm-gelu": (_MeanHead, 64, 8),
    "nhwc-batchnorm": (_NhwcHead, 64, 8),
    "pool-conv1x1": (_ConvHead, 64, 16),
    "vit": (lambda: torchvision.models.VisionTransformer(image_size=64, patch_size=16, num_layers=1, num_heads=2,
                                                         hidden_dim=32, mlp_dim=64, num_classes=NUM_CLASSES), 64, 0),
}
DENSE = [a for a in ARCHS if a != "vit"]


def _cache_key(name: str) -> str:
    """Changes with the torch/torchvision versions and the wrapping code, so a stale export is never reused."""
    import importlib.metadata

    h = hashlib.sha256(name.encode())
    for dist in ("torch", "torchvision", "onnx"):
        h.update(importlib.metadata.version(dist).encode())
    root = Path(__file__).resolve().parents[2]
    for rel in ("export/graph.py", "slidewin/core/preprocessing.py", __file__):
        h.update((root / rel).read_bytes())
    return h.hexdigest()[:12]


def _torch_model(name: str):
    """The architecture with seed-0 random weights, the same every call (the export and the parity
    reference both build it)."""
    build = ARCHS[name][0]
    torch.manual_seed(0)
    model = build().eval()
    with torch.no_grad():  # dense layers that spread the logits (torchvision's init keeps them ~1e-4 apart)
        for m in model.modules():
            if isinstance(m, torch.nn.Linear):
                m.weight.normal_(0.0, 3.0 / m.in_features ** 0.5)
                m.bias.normal_(0.0, 0.5)
    return model


def _export(name: str, path: Path) -> None:
    import io

    import onnx

    from slidewin.core.preprocessing import preset
    from slidewin.core.contract import ModelKind, ModelMeta
    from slidewin_export.graph import to_slidewin_classifier

    _, size, _ = ARCHS[name]
    model = _torch_model(name)
    buf = io.BytesIO()
    torch.onnx.export(model, torch.randn(1, 3, size, size), buf, dynamo=False, opset_version=17,
                      input_names=["x"], output_names=["logits"],
                      dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}})
    meta = ModelMeta(kind=ModelKind.CLASSIFIER, input_hw=(size, size),
                     labels=tuple(f"class{i}" for i in range(NUM_CLASSES)), label_set="custom", weights="random",
                     architecture=f"torchvision:{name}", source_framework=f"torch {torch.__version__}")
    wrapped = to_slidewin_classifier(onnx.load_from_string(buf.getvalue()), preset("torch"), meta,
                                     outputs_logits=True)
    tmp = path.with_suffix(".tmp")
    onnx.save(wrapped, str(tmp))
    tmp.replace(path)


@pytest.fixture(scope="module")
def exported(export_model_dir, tmp_path_factory):
    """``exported(name) -> Path``: the architecture as a slidewin classifier, exported once (kept in
    ``$SLIDEWIN_TEST_MODELS``) and hard-linked into a fresh folder, so its dense form is built here."""
    folder = tmp_path_factory.mktemp("heads")

    def get(name: str) -> Path:
        src = export_model_dir / f"tv-{name}-{_cache_key(name)}.onnx"
        if not src.exists():
            for stale in export_model_dir.glob(f"tv-{name}-????????????.onnx"):
                stale.unlink(missing_ok=True)
            _export(name, src)
        dst = folder / src.name
        if not dst.exists():
            os.link(src, dst)
        return dst

    return get


def _images(size: int) -> np.ndarray:
    photo = cv2.cvtColor(cv2.imread(str(sorted(PHOTOS.glob("*.jpg"))[0])), cv2.COLOR_BGR2RGB)
    noise = np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)
    return np.stack([cv2.resize(photo, (size, size), interpolation=cv2.INTER_AREA), noise])


@pytest.mark.parametrize("name", list(ARCHS))
def test_the_slidewin_model_gives_torchs_probabilities(exported, name):
    """Parity with the framework: torch on the stated preprocessing (NumPy) vs ONNX Runtime on uint8."""
    from slidewin.core.preprocessing import preset
    from slidewin.runtime.classifier import Classifier

    size = ARCHS[name][1]
    images = _images(size)
    x = torch.from_numpy(preset("torch").apply(images).transpose(0, 3, 1, 2).copy())
    with torch.no_grad():
        expected = torch.softmax(_torch_model(name)(x), dim=-1).numpy()
    got = Classifier(exported(name), device="cpu").predict(images)
    np.testing.assert_allclose(got, expected, atol=1e-4)
    assert expected.max() - expected.min() > 0.05  # the random weights give probabilities that differ


@pytest.mark.parametrize("name", DENSE)
def test_dense_cell_is_the_classifier_where_the_window_is_the_whole_input(exported, name):
    _, size, stride = ARCHS[name]
    clf = Classifier(exported(name))
    dense = DenseClassifier(clf)
    assert dense.stride == stride
    images = _images(size)
    want = clf.predict(images)
    assert np.ptp(want, axis=1).min() > 0.05          # outputs that a wrong rewrite could not match
    for image, p in zip(images, want):
        q = dense.predict_map(image)
        assert q.shape == (1, 1, NUM_CLASSES)
        np.testing.assert_allclose(q[0, 0], p, atol=1e-4)
        # The head alone on the mean of the window's feature cells is the classifier too (pooled scoring).
        pooled = dense.feature_map(image).mean(axis=(1, 2))
        np.testing.assert_allclose(dense.head()(pooled[None])[0], p, atol=1e-4)
    level = cv2.resize(images[0], (size + 3 * stride, size + 2 * stride))
    assert dense.predict_map(level).shape == (3, 4, NUM_CLASSES)


@pytest.mark.parametrize("name", ["resnet18-s16", "efficientnet_b0-100"])
def test_dense_detect_runs_on_a_photo(exported, name):
    _, size, stride = ARCHS[name]
    photo = cv2.cvtColor(cv2.imread(str(sorted(PHOTOS.glob("*.jpg"))[1])), cv2.COLOR_BGR2RGB)
    det = build_detector(exported(name), DetectorConfig(min_score=0.05))    # auto, default step
    assert det.mode is Mode.DENSE and det.step == stride
    dets = det.detect(photo)
    assert det.last_stats.windows > 0 and len(dets) > 0
    assert (dets.xyxy[:, 2] <= photo.shape[1] + 1e-3).all() and (dets.xyxy[:, 3] <= photo.shape[0] + 1e-3).all()
    # The windows are patch mode's at a step of the network stride.
    one = dict(windows_hw=((size, size),), reference_side=None, max_levels=1)
    patch = SlidingWindowDetector(det.classifier, config=DetectorConfig(mode=Mode.PATCH, step=float(stride), **one))
    dense = SlidingWindowDetector(det.classifier, config=DetectorConfig(mode=Mode.DENSE, **one))
    image = photo[:size + 2 * stride, :size + stride]
    p_probs, p_boxes = patch.window_probabilities(image)
    d_probs, d_boxes = dense.window_probabilities(image)
    assert len(d_boxes) == 6
    np.testing.assert_allclose(d_boxes, p_boxes)


@pytest.mark.parametrize("name", ["resnet18-160", "resnet18-s16", "efficientnet_b0-100"])
def test_pooled_scoring_of_a_window_equals_the_dense_map(exported, name):
    """Pooled proposal scoring at other input sizes and strides: a box that is a dense window gets
    the dense map's probabilities (a 100 px EfficientNet's window spans 4 cells, 128 px)."""
    _, size, stride = ARCHS[name]
    clf = Classifier(exported(name))
    dense = DenseClassifier(clf)
    image = cv2.resize(_images(size)[0], (size + 3 * stride, size + 2 * stride), interpolation=cv2.INTER_AREA)
    want = dense.predict_map(image)
    cells = [(i, j) for i in range(want.shape[0]) for j in range(want.shape[1])]
    boxes = np.array([[j * stride, i * stride, j * stride + size, i * stride + size] for i, j in cells], np.float32)
    got = PooledScorer(dense, context=0.0, max_scale=1.0).probabilities(image, boxes, RunStats())
    for k, (i, j) in enumerate(cells):
        np.testing.assert_allclose(got[k], want[i, j], atol=1e-4)


def test_vit_runs_patch_mode_in_auto_and_says_why_once(exported, capsys):
    clf = Classifier(exported("vit"))
    capsys.readouterr()                                   # what exporting it said
    assert SlidingWindowDetector(clf).mode is Mode.PATCH
    assert SlidingWindowDetector(clf).mode is Mode.PATCH
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "patch mode" in lines[0] and "Gather" in lines[0], lines


def test_vit_in_dense_mode_is_refused_naming_the_op(exported, capsys, one_line_error):
    from slidewin.cli import main

    path = exported("vit")
    capsys.readouterr()
    with pytest.raises(ModelError, match="Gather"):
        SlidingWindowDetector(Classifier(path), config=DetectorConfig(mode=Mode.DENSE))
    photo = sorted(PHOTOS.glob("*.jpg"))[0]
    code = main(["detect", str(photo), "--model", str(path), "--mode", "dense"])
    one_line_error(capsys, code, str(path), "Gather", "--mode patch")


def test_tiles_at_stride_16_equal_the_untiled_pass(exported):
    """Tiles and their context margins follow the network's stride and input size (64 px, 16)."""
    clf = Classifier(exported("resnet18-s16"))
    untiled = DenseClassifier(clf, max_tile=0)
    tiled = DenseClassifier(clf, max_tile=200)
    level = cv2.resize(_images(64)[0], (64 + 16 * 17, 64 + 16 * 9), interpolation=cv2.INTER_LINEAR)
    assert len(tiled.tiles(level.shape[:2])) > 1
    want = untiled.predict_map(level)
    assert want.shape == (10, 18, NUM_CLASSES)
    np.testing.assert_allclose(tiled.predict_map(level), want, atol=1e-4)
