"""``slidewin export keras``: any Keras classifier, its preprocessing read from the Keras
application it is built on, or stated; never a silent ``caffe``.

Real Keras models built at test time with random weights and saved to ``.keras``: a small
custom CNN (the old trap: a [-1, 1] model that is no Keras application), MobileNetV2 at 160 px
with 5 classes, EfficientNetB0 and ResNet50 at small inputs (``slow``: tf2onnx takes tens of
seconds each on 2 cores). Exports are cached (``cached_export``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from slidewin.core.preprocessing import PRESETS
from slidewin.core.contract import ModelMeta
from slidewin.io.hashing import sha256_of

for _mod in ("tensorflow", "keras", "tf2onnx"):
    pytest.importorskip(_mod)

ROOT = Path(__file__).resolve().parents[2]
PHOTO = ROOT / "tests" / "data" / "coco-mini" / "images" / "000000000790.jpg"


def read_meta(path: Path) -> ModelMeta:
    return ModelMeta.from_props({p.key: p.value for p in onnx.load(path, load_external_data=False).metadata_props})


def run(path: Path, images: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(["probabilities"], {"image": images})[0]


def images(n, hw, seed=11) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, *hw, 3), dtype=np.uint8)


def keras_probs(path: Path, x: np.ndarray, preset: str) -> np.ndarray:
    """Keras itself, fed the stated convention."""
    from slidewin_export._common import import_tensorflow

    _, keras, _ = import_tensorflow()
    model = keras.models.load_model(path, compile=False)
    return keras.ops.convert_to_numpy(model(PRESETS[preset].apply(x), training=False))


def labels(path: Path, n: int) -> Path:
    path.write_text("".join(f"flower{i}\n" for i in range(n)))
    return path


def cli(*argv) -> int:
    from slidewin.cli import main

    return main(["export", "keras", *map(str, argv)])


def save_keras(build, path: Path, seed: int = 0) -> Path:
    """Build a model with ``build(keras)`` from a fixed seed and save it (once per session folder)."""
    from slidewin_export._common import import_tensorflow

    if not path.exists():
        _, keras, _ = import_tensorflow()
        keras.utils.set_random_seed(seed)
        build(keras).save(path)
    return path


def custom_cnn(keras, classes=5, side=32, channels=3, name="my_classifier"):
    """A user's own small CNN (no Keras application, nothing to read its preprocessing from)."""
    layers = keras.layers
    inp = keras.Input((side, side, channels))
    x = layers.Conv2D(8, 3, strides=2, activation="relu", name="c1")(inp)
    x = layers.Conv2D(16, 3, strides=2, activation="relu", name="c2")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inp, layers.Dense(classes, activation="softmax", name="head")(x), name=name)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("keras")


# ---------------------------------------------------------------- the old trap (fast)


def test_unknown_model_without_preprocess_is_refused(model_dir, tmp_path, capsys, one_line_error):
    path = save_keras(custom_cnn, model_dir / "mine.keras")
    out = tmp_path / "m.onnx"
    line = one_line_error(capsys, cli(path, "--labels", labels(tmp_path / "l.txt", 5), "--out", out),
                          str(path), "--preprocess PRESET", "caffe", "tf", "torch", "raw", "unit")
    assert "caffe (BGR" in line  # the presets are described, so the user can pick
    assert not out.exists()


def test_unknown_model_with_stated_preprocess(model_dir, tmp_path, capsys):
    path = save_keras(custom_cnn, model_dir / "mine.keras")
    out = tmp_path / "m.onnx"
    assert cli(path, "--preprocess", "tf", "--labels", labels(tmp_path / "l.txt", 5), "--out", out) == 0
    assert "parity: max |Δprob| = " in capsys.readouterr().out
    meta = read_meta(out)
    assert meta.preprocessing == PRESETS["tf"] and meta.weights == sha256_of(path)
    assert meta.architecture == "keras:my_classifier" and meta.feature_stride == 0  # 32 px, VALID convs: no exact stride
    x = images(4, (32, 32))
    np.testing.assert_allclose(run(out, x), keras_probs(path, x, "tf"), atol=1e-4)
    # a wrong statement is not caught by parity (both sides get it) but it is recorded: caffe != tf
    assert cli(path, "--preprocess", "caffe", "--labels", tmp_path / "l.txt", "--out", tmp_path / "c.onnx") == 0
    assert read_meta(tmp_path / "c.onnx").preprocessing == PRESETS["caffe"]


@pytest.mark.parametrize("kind, needle", [("gray", "1 channel(s)"), ("two", "2 inputs")])
def test_bad_models(kind, needle, model_dir, tmp_path, capsys, one_line_error):
    def two_inputs(keras):
        a, b = keras.Input((8, 8, 3)), keras.Input((8, 8, 3))
        x = keras.layers.GlobalAveragePooling2D()(keras.layers.Add()([a, b]))
        return keras.Model([a, b], keras.layers.Dense(2, activation="softmax")(x))

    build = (lambda k: custom_cnn(k, channels=1)) if kind == "gray" else two_inputs
    path = save_keras(build, model_dir / f"{kind}.keras")
    out = tmp_path / "m.onnx"
    one_line_error(capsys, cli(path, "--preprocess", "raw", "--out", out), str(path), needle)
    assert not out.exists()


def test_labels_and_preset_mistakes(model_dir, tmp_path, capsys, one_line_error):
    path = save_keras(custom_cnn, model_dir / "mine.keras")
    one_line_error(capsys, cli(path, "--preprocess", "tf", "--labels", labels(tmp_path / "l.txt", 4),
                               "--out", tmp_path / "m.onnx"), "4 labels", "5 outputs")
    one_line_error(capsys, cli(path, "--preprocess", "mobilenet", "--out", tmp_path / "m.onnx"),
                   str(path), "unknown preprocessing 'mobilenet'")
    one_line_error(capsys, cli(tmp_path / "nope.keras", "--preprocess", "tf", "--out", tmp_path / "m.onnx"),
                   "nope.keras", "no such model file")
    assert not (tmp_path / "m.onnx").exists()


def test_application_families_are_recognised():
    from slidewin_export._common import import_tensorflow
    from slidewin_export.keras_any import application_preprocessing

    _, keras, _ = import_tensorflow()
    apps = keras.applications
    got = {
        "MobileNetV2": application_preprocessing(apps.MobileNetV2(input_shape=(96, 96, 3), weights=None, classes=3)),
        "MobileNetV3": application_preprocessing(apps.MobileNetV3Small(input_shape=(96, 96, 3), weights=None, classes=3)),
        "MobileNetV3 bare": application_preprocessing(apps.MobileNetV3Small(
            input_shape=(96, 96, 3), weights=None, classes=3, include_preprocessing=False)),
        "mine": application_preprocessing(custom_cnn(keras)),
    }
    assert got["MobileNetV2"] == ("MobileNetV2", PRESETS["tf"])
    assert got["MobileNetV3"] == ("MobileNetV3", PRESETS["raw"])  # Rescaling inside the model
    assert got["MobileNetV3 bare"] is None and got["mine"] is None  # not guessed


# ---------------------------------------------------------------- Keras applications (slow)


def _mobilenet_v2_finetuned(keras):
    """MobileNetV2 at 160 px as a user fine-tunes it: the application inside, a 5-class head on top."""
    base = keras.applications.MobileNetV2(input_shape=(160, 160, 3), include_top=False, weights=None)
    inp = keras.Input((160, 160, 3))
    x = keras.layers.GlobalAveragePooling2D()(base(inp))
    return keras.Model(inp, keras.layers.Dense(5, activation="softmax")(x), name="flowers")


APPLICATIONS = {
    # name: (builder, input side, expected preset, expected architecture)
    "mobilenet_v2": (_mobilenet_v2_finetuned, 160, "tf", "mobilenetv2"),
    "efficientnet_b0": (lambda k: k.applications.EfficientNetB0(input_shape=(64, 64, 3), weights=None, classes=3),
                        64, "raw", "efficientnet"),
    "resnet50": (lambda k: k.applications.ResNet50(input_shape=(64, 64, 3), weights=None, classes=3),
                 64, "caffe", "resnet"),
}


@pytest.fixture(scope="module", params=list(APPLICATIONS))
def application(request, model_dir, cached_export, tmp_path_factory):
    """(name, .keras path, exported ONNX path, labels file): exported through the CLI, preprocessing auto-detected."""
    from slidewin.cli import main

    name = request.param
    build, side, _, _ = APPLICATIONS[name]
    path = save_keras(build, model_dir / f"{name}.keras")
    n = 5 if name == "mobilenet_v2" else 3
    lab = labels(tmp_path_factory.mktemp("lab") / "labels.txt", n)

    def export(out: Path):
        from slidewin_export._common import ExportReport

        assert main(["export", "keras", str(path), "--labels", str(lab), "--out", str(out)]) == 0
        return ExportReport(out, read_meta(out), 0.0, 0.0, 0)

    # The .keras file is rebuilt each session from the same seed, so the same weights: a cached
    # export made from an earlier session's file still matches it (the parity test checks).
    out = cached_export(f"keras-{name}", export)
    return name, path, out, side


@pytest.mark.slow
def test_application_preprocessing_and_parity(application):
    name, path, out, side = application
    _, _, preset, arch = APPLICATIONS[name]
    meta = read_meta(out)
    assert meta.preprocessing == PRESETS[preset], name
    assert meta.architecture == arch and meta.input_hw == (side, side)
    assert meta.feature_stride == 32
    x = images(3, (side, side))
    np.testing.assert_allclose(run(out, x), keras_probs(path, x, preset), atol=1e-4)


@pytest.mark.slow
def test_application_detect_runs(application, capsys):
    from slidewin.cli import main

    _, _, out, _ = application
    assert main(["detect", str(PHOTO), "--model", str(out), "--classes", "flower1", "--json", "-"]) == 0


@pytest.mark.slow
def test_keras_resnet50_records_caffe(resnet50_random_onnx):
    assert read_meta(resnet50_random_onnx).preprocessing == PRESETS["caffe"]


@pytest.mark.slow
def test_application_dense_map_is_the_classifier_on_the_whole_input(application, tmp_path):
    """The dense form of a Keras model (tf2onnx's graph: NHWC, ReduceMean or GlobalAveragePool):
    where the window is the whole input, its one cell equals the classifier (1e-4)."""
    import os

    from slidewin.runtime.classifier import Classifier
    from slidewin.runtime.dense import DenseClassifier

    _, _, out, side = application
    model = tmp_path / "m.onnx"
    os.link(out, model)                      # the dense form is cached beside the model: here, not in the cache
    clf = Classifier(model, device="cpu")
    x = images(2, (side, side))
    dense = DenseClassifier(clf)
    cells = np.stack([dense.predict_map(im)[0, 0] for im in x])
    np.testing.assert_allclose(cells, clf.predict(x), atol=1e-4)
