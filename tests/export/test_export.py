"""Exporters: the slidewin ONNX contract, metadata, and parity with the source framework.

Fast tests use a hand-built ONNX graph; the ``slow`` ones export real networks once per session
(fixtures in conftest.py; ``SLIDEWIN_TEST_MODELS`` caches them across runs). Everything is offline.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from slidewin.errors import MissingDependencyError, ModelError, SlidewinError
from slidewin.core.contract import ModelKind, ModelMeta
from slidewin.io.hashing import sha256_of
from slidewin_export.cli import add_export_parser
from slidewin.core.preprocessing import PRESETS
from slidewin_export.graph import NCHW, NHWC, preprocess_for_raw, to_slidewin_classifier

# (preprocessing, layout) pairs of the two built-in exporters: Keras ResNet50, torch EfficientNet.
CAFFE_NHWC = (PRESETS["caffe"], NHWC)
IMAGENET_NCHW = (PRESETS["torch"], NCHW)

CAT_IDS = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat
ESPRESSO, CUP = 967, 968


# ---------------------------------------------------------------- helpers

def run_onnx(path: Path, images: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (probs,) = sess.run(["probabilities"], {"image": images})
    return probs


def read_meta(path: Path) -> ModelMeta:
    return ModelMeta.from_props({p.key: p.value for p in onnx.load(path, load_external_data=False).metadata_props})


def io_signature(path: Path):
    m = onnx.load(path, load_external_data=False)

    def sig(vi):
        t = vi.type.tensor_type
        return vi.name, t.elem_type, [d.dim_param or d.dim_value for d in t.shape.dim]

    return [sig(i) for i in m.graph.input], [sig(o) for o in m.graph.output]


def photo(name: str, hw=(224, 224)) -> np.ndarray:
    cv2 = pytest.importorskip("cv2")
    skdata = pytest.importorskip("skimage.data")
    return cv2.resize(getattr(skdata, name)(), hw[::-1], interpolation=cv2.INTER_AREA)


def new_images(n: int, seed: int, hw=(224, 224)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, *hw, 3), dtype=np.uint8)


def assert_classifier_contract(path: Path, num_classes: int, hw=(224, 224)):
    (inputs, outputs) = io_signature(path)
    assert len(inputs) == 1 and len(outputs) == 1
    name, dtype, dims = inputs[0]
    assert (name, dtype) == ("image", TensorProto.UINT8)
    assert isinstance(dims[0], str) and dims[1:] == [*hw, 3]  # dynamic batch
    name, dtype, dims = outputs[0]
    assert (name, dtype) == ("probabilities", TensorProto.FLOAT)
    assert dims[0] == inputs[0][2][0] and dims[1] == num_classes


def exporter_report(path: Path) -> dict:
    return json.loads(path.with_suffix(".report.json").read_text())


def tiny_raw_classifier(preprocess, hw=(4, 6), classes=2, seed=0) -> tuple[onnx.ModelProto, np.ndarray]:
    """Raw float graph: mean over H, W then a (3, classes) MatMul; returns (model, weight)."""
    w = np.random.default_rng(seed).normal(size=(3, classes)).astype(np.float32)
    nhwc = preprocess[1] == NHWC
    shape = ["n", *hw, 3] if nhwc else ["n", 3, *hw]
    nodes = [
        helper.make_node("ReduceMean", ["x"], ["pooled"], axes=[1, 2] if nhwc else [2, 3], keepdims=0),
        helper.make_node("MatMul", ["pooled", "w"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", classes])],
        [numpy_helper.from_array(w, "w")],
    )
    # onnx 1.23 defaults to IR version 14, newer than ONNX Runtime 1.31 reads (13).
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), w


def tiny_meta(hw=(4, 6), classes=2) -> ModelMeta:
    return ModelMeta(ModelKind.CLASSIFIER, hw, tuple(f"c{i}" for i in range(classes)), "custom",
                     "random", "tiny", "numpy", feature_stride=0)


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


# ---------------------------------------------------------------- graph surgery (fast)

@pytest.mark.parametrize("preprocess", [CAFFE_NHWC, IMAGENET_NCHW])
@pytest.mark.parametrize("logits", [True, False])
def test_graph_wrap_matches_numpy_reference(tmp_path, preprocess, logits):
    raw, w = tiny_raw_classifier(preprocess)
    model = to_slidewin_classifier(raw, preprocess[0], tiny_meta(), outputs_logits=logits)
    path = tmp_path / "tiny.onnx"
    onnx.save(model, path)
    assert_classifier_contract(path, 2, hw=(4, 6))
    images = new_images(5, seed=1, hw=(4, 6))
    x = preprocess_for_raw(images, *preprocess)
    pooled = x.mean(axis=(1, 2) if preprocess[1] == NHWC else (2, 3))
    expected = pooled @ w
    expected = softmax(expected) if logits else expected
    np.testing.assert_allclose(run_onnx(path, images), expected, rtol=1e-5, atol=1e-5)
    assert read_meta(path).labels == ("c0", "c1")


def test_preprocess_numpy_caffe_is_bgr_minus_mean():
    img = np.array([[[[10, 20, 30]]]], np.uint8)
    np.testing.assert_allclose(preprocess_for_raw(img, *CAFFE_NHWC)[0, 0, 0],
                               [30 - 103.939, 20 - 116.779, 10 - 123.68], rtol=1e-6)
    out = preprocess_for_raw(np.full((1, 2, 2, 3), 255, np.uint8), *IMAGENET_NCHW)
    assert out.shape == (1, 3, 2, 2)
    np.testing.assert_allclose(out[0, :, 0, 0], (1 - np.array([0.485, 0.456, 0.406])) / [0.229, 0.224, 0.225], rtol=1e-6)


@pytest.mark.parametrize("hw, classes, match", [((5, 6), 2, "shape"), ((4, 6), 3, r"\[N, 3\]")])
def test_graph_wrap_rejects_mismatched_meta(hw, classes, match):
    raw, _ = tiny_raw_classifier(CAFFE_NHWC)
    with pytest.raises(ModelError, match=match):
        to_slidewin_classifier(raw, PRESETS["caffe"], tiny_meta(hw, classes), outputs_logits=True)


# ---------------------------------------------------------------- CLI and dependencies (fast)

def export_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="slidewin")
    add_export_parser(parser.add_subparsers(dest="command", required=True))
    return parser


def test_cli_parses_both_exporters(tmp_path):
    p = export_parser()
    a = p.parse_args(["export", "keras-resnet50", "--weights", "none", "--labels", "l.txt", "--out", str(tmp_path / "m.onnx")])
    assert (a.weights, a.labels, a.out, a.opset) == ("none", Path("l.txt"), tmp_path / "m.onnx", 17)
    assert callable(a.func)
    a = p.parse_args(["export", "efficientnet-lite0", "--out", "e.onnx"])
    assert a.out == Path("e.onnx") and callable(a.func)
    with pytest.raises(SystemExit):
        p.parse_args(["export", "keras-resnet50", "--out", "x.onnx"])  # --weights is required


def test_missing_frameworks_name_the_extra(monkeypatch):
    from slidewin_export._common import import_tensorflow, import_torch

    for mod, fn in (("tensorflow", import_tensorflow), ("torch", import_torch)):
        monkeypatch.setitem(sys.modules, mod, None)
        with pytest.raises(MissingDependencyError, match=r"pip install 'slidewin\[export\]'"):
            fn()


def test_labels_file_ignores_blank_lines(tmp_path):
    from slidewin_export.labels import imagenet1k_labels, read_labels_file

    (tmp_path / "l.txt").write_text("cat\n  dog \n\nbird\n\n")
    assert read_labels_file(tmp_path / "l.txt") == ("cat", "dog", "bird")
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(SlidewinError, match="empty"):
        read_labels_file(tmp_path / "empty.txt")
    labels = imagenet1k_labels()
    assert len(labels) == 1000 and labels[285] == "Egyptian cat" and labels[ESPRESSO] == "espresso"


# ---------------------------------------------------------------- Keras (needs TensorFlow)

@pytest.fixture(scope="module")
def keras():
    pytest.importorskip("tf2onnx")
    from slidewin_export._common import import_tensorflow

    return import_tensorflow()[1]


def test_imagenet_weights_offline_is_one_clear_line(keras, monkeypatch, tmp_path):
    from slidewin_export.keras_resnet50 import IMAGENET_WEIGHTS_FILE

    def no_network(*args, **kwargs):
        raise Exception("URL fetch failure on https://example.invalid/x.h5: None -- [Errno -2] Name or service not known")

    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "kh"))
    monkeypatch.setattr(keras.utils, "get_file", no_network)
    args = export_parser().parse_args(["export", "keras-resnet50", "--weights", "imagenet", "--out", str(tmp_path / "m.onnx")])
    with pytest.raises(SlidewinError) as e:
        args.func(args)
    msg = str(e.value)
    assert "\n" not in msg
    for needle in (IMAGENET_WEIGHTS_FILE, "--weights PATH", str(tmp_path / "kh" / "models"), "Name or service not known"):
        assert needle in msg
    assert not (tmp_path / "m.onnx").exists()


@pytest.fixture(scope="module")
def tiny_keras_file(keras, tmp_path_factory) -> Path:
    """A small fine-tuned-style model: 224x224 RGB in, 3 logits out, stride 32, saved as .keras."""
    keras.utils.set_random_seed(3)
    model = keras.Sequential([
        keras.Input((224, 224, 3)),
        keras.layers.Conv2D(8, 3, strides=4, padding="same", activation="relu"),
        keras.layers.Conv2D(16, 3, strides=8, padding="same", activation="relu"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(3),
    ], name="tiny_cnn")
    path = tmp_path_factory.mktemp("keras") / "tiny.keras"
    with warnings.catch_warnings():  # Keras 3.15's saver trips NumPy 2.4's __array__(copy=) deprecation
        warnings.simplefilter("ignore", DeprecationWarning)
        model.save(path)
    return path


@pytest.mark.slow
def test_keras_file_with_own_labels(keras, tiny_keras_file, tmp_path):
    from slidewin_export.keras_resnet50 import export_keras_resnet50

    (tmp_path / "labels.txt").write_text("apple\nbanana\ncherry\n")
    out = tmp_path / "tiny.onnx"
    report = export_keras_resnet50(str(tiny_keras_file), out, labels_file=tmp_path / "labels.txt")
    assert report.max_abs_diff <= 1e-4
    assert_classifier_contract(out, 3)
    meta = read_meta(out)
    assert meta.labels == ("apple", "banana", "cherry") and meta.label_set == "custom"
    assert meta.weights == sha256_of(tiny_keras_file) and not meta.is_random
    assert (meta.architecture, meta.feature_stride) == ("keras:tiny_cnn", 32)
    # The model ends in logits, so the exporter appended a Softmax.
    images = np.concatenate([new_images(2, seed=99), photo("coffee")[None]])
    model = keras.models.load_model(tiny_keras_file)
    expected = softmax(keras.ops.convert_to_numpy(model(keras.applications.resnet50.preprocess_input(images.astype(np.float32)))))
    got = run_onnx(out, images)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("labels, match", [("a\nb\n", "has 2 labels but the model has 3 outputs"), (None, "--labels FILE")])
def test_keras_file_labels_must_match(keras, tiny_keras_file, tmp_path, labels, match):
    from slidewin_export.keras_resnet50 import export_keras_resnet50

    labels_file = None
    if labels is not None:
        labels_file = tmp_path / "labels.txt"
        labels_file.write_text(labels)
    with pytest.raises(SlidewinError, match=match) as e:
        export_keras_resnet50(str(tiny_keras_file), tmp_path / "x.onnx", labels_file=labels_file)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "x.onnx").exists()


def test_keras_missing_weights_file(keras, tmp_path):
    from slidewin_export.keras_resnet50 import export_keras_resnet50

    with pytest.raises(SlidewinError, match="weights file not found"):
        export_keras_resnet50(str(tmp_path / "nope.keras"), tmp_path / "x.onnx")


@pytest.mark.slow
def test_resnet50_random_contract_and_metadata(resnet50_random_onnx):
    assert exporter_report(resnet50_random_onnx)["max_abs_diff"] <= 1e-4
    assert_classifier_contract(resnet50_random_onnx, 1000)
    meta = read_meta(resnet50_random_onnx)
    assert meta.kind is ModelKind.CLASSIFIER and meta.is_random and meta.weights == "random"
    assert (meta.input_hw, meta.label_set, len(meta.labels)) == ((224, 224), "imagenet-1k", 1000)
    assert (meta.architecture, meta.feature_stride, meta.precision) == ("resnet50", 32, "fp32")
    assert meta.source_framework.startswith("keras ") and "tf2onnx" in meta.source_framework


@pytest.mark.slow
def test_resnet50_random_parity_on_new_inputs(keras, resnet50_random_onnx):
    """Independent of the exporter's own check: rebuild the same seeded network, new images."""
    keras.utils.set_random_seed(0)
    model = keras.applications.ResNet50(weights=None)
    images = np.concatenate([new_images(2, seed=4242), photo("chelsea")[None]])
    expected = keras.ops.convert_to_numpy(model(keras.applications.resnet50.preprocess_input(images.astype(np.float32)), training=False))
    got = run_onnx(resnet50_random_onnx, images)
    np.testing.assert_allclose(got, expected, atol=1e-4)
    # Random-weight probabilities are all near 1/1000, so also demand *relative* agreement: it
    # is what catches a wrong channel order or mean (see the RGB-order control below).
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-7)
    np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-5)
    wrong = keras.ops.convert_to_numpy(model(images.astype(np.float32) - np.array([103.939, 116.779, 123.68], np.float32), training=False))
    assert not np.allclose(got, wrong, rtol=1e-3, atol=1e-7)
    # Dynamic batch: one image alone gives the same answer as inside the batch.
    np.testing.assert_allclose(run_onnx(resnet50_random_onnx, images[2:3]), got[2:3], rtol=1e-4, atol=1e-7)


# ---------------------------------------------------------------- EfficientNet-Lite0 (needs torch)

@pytest.mark.slow
def test_effnet_contract_and_metadata(effnet_onnx):
    assert exporter_report(effnet_onnx)["max_abs_diff"] <= 1e-4
    assert_classifier_contract(effnet_onnx, 1000)
    meta = read_meta(effnet_onnx)
    assert (meta.kind, meta.weights, meta.label_set, meta.architecture) == (
        ModelKind.CLASSIFIER, "imagenet", "imagenet-1k", "efficientnet-lite0")
    assert meta.input_hw == (224, 224) and meta.feature_stride == 32 and len(meta.labels) == 1000
    assert meta.source_framework.startswith("torch ")


@pytest.mark.slow
def test_effnet_recognises_real_photos(effnet_onnx):
    probs = run_onnx(effnet_onnx, np.stack([photo("chelsea"), photo("coffee")]))
    top3 = np.argsort(-probs, axis=1)[:, :3]
    assert set(top3[0]) & set(CAT_IDS), top3[0]
    assert {ESPRESSO, CUP} & set(top3[1]), top3[1]
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)


@pytest.mark.slow
def test_effnet_parity_with_torch_on_new_inputs(effnet_onnx):
    from slidewin_export.efficientnet_lite0 import load_efficientnet_lite0, torch_probabilities

    images = np.concatenate([new_images(3, seed=777), photo("astronaut")[None]])
    expected = torch_probabilities(load_efficientnet_lite0(), images)
    np.testing.assert_allclose(run_onnx(effnet_onnx, images), expected, atol=1e-4)


@pytest.mark.slow
def test_cli_exports_efficientnet(tmp_path, capsys):
    pytest.importorskip("efficientnet_lite_pytorch")
    out = tmp_path / "e.onnx"
    args = export_parser().parse_args(["export", "efficientnet-lite0", "--out", str(out)])
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert "parity: max |Δprob|" in printed and f"wrote {out}" in printed
    assert read_meta(out).architecture == "efficientnet-lite0"
    assert [p.name for p in tmp_path.iterdir()] == ["e.onnx"]  # no temp file left behind
