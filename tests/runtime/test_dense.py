"""The dense rewrite and how it runs: exact at the trained size, cached, refused for graphs it
does not know, and tiled passes over big levels that equal the untiled pass."""

import os

import cv2
import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from slidewin.errors import ModelError
from slidewin.runtime.classifier import Classifier
from slidewin.runtime.dense import DenseClassifier, plan_tiles, tile_spans
from slidewin.runtime.dense_graph import context_margin, make_dense
from slidewin.core.contract import Key, read_props


def test_rewrite_is_exact_at_the_trained_size(classifier):
    from skimage import data

    dense = DenseClassifier(classifier)
    for img in (data.chelsea(), data.coffee()):
        x = cv2.resize(img, (224, 224), interpolation=cv2.INTER_AREA)
        p = classifier.predict(x[None])[0]
        q = dense.predict_map(x)
        assert q.shape == (1, 1, 1000)
        np.testing.assert_allclose(q[0, 0], p, atol=1e-5, rtol=1e-4)


def test_dense_cache_is_reused_and_rebuilt_when_stale(classifier):
    path = DenseClassifier(classifier).path
    mtime = path.stat().st_mtime_ns
    assert DenseClassifier(classifier).path == path
    assert path.stat().st_mtime_ns == mtime                    # reused, not rewritten
    model = onnx.load(str(path))
    for p in model.metadata_props:
        if p.key == Key.DENSE_SOURCE:
            p.value = "sha256:stale"
    onnx.save(model, str(path))
    DenseClassifier(classifier)
    props = read_props(onnx.load(str(path), load_external_data=False))
    assert props[Key.DENSE_SOURCE] != "sha256:stale" and props[Key.DENSE] == "true"


def _zero_head(model) -> None:
    """Zero tiny_conv's dense layer in its dense form: another network, same metadata."""
    from onnx import numpy_helper

    for t in model.graph.initializer:
        if t.name == "wd":
            t.CopyFrom(numpy_helper.from_array(np.zeros_like(numpy_helper.to_array(t)), t.name))


def test_a_forged_cache_with_the_right_digest_is_rebuilt(tiny_conv):
    dense = DenseClassifier(tiny_conv)
    forged = onnx.load(str(dense.path))
    _zero_head(forged)                                         # another network, same metadata
    onnx.save(forged, str(dense.path))
    again = DenseClassifier(tiny_conv)
    image = np.random.default_rng(2).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    np.testing.assert_allclose(again.predict_map(image)[0, 0], tiny_conv.predict(image[None])[0], atol=1e-6)
    assert again.path == dense.path                            # rewritten in place


def test_rewritten_external_weights_make_the_cache_stale(tiny_conv, tmp_path):
    """The model's weights live in an external file; rewriting that file must reach dense mode."""
    from onnx import numpy_helper

    from slidewin.runtime.classifier import Classifier

    src = onnx.load(str(tiny_conv.path))
    model_path = tmp_path / "ext" / "m.onnx"
    model_path.parent.mkdir()
    onnx.save(src, str(model_path), save_as_external_data=True, all_tensors_to_one_file=True,
              location="m.weights", size_threshold=0)
    first = DenseClassifier(Classifier(model_path))
    image = np.random.default_rng(3).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    before = first.predict_map(image)[0, 0]
    src = onnx.load(str(tiny_conv.path))                       # (saving moved its weights out)
    for t in src.graph.initializer:                            # new weights, same .onnx file
        if t.name == "wd":
            t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t) * -1.0, "wd"))
    onnx.save(src, str(tmp_path / "new.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
              location="m.weights", size_threshold=0)
    (tmp_path / "m.weights").replace(model_path.parent / "m.weights")
    clf = Classifier(model_path)
    after = DenseClassifier(clf).predict_map(image)[0, 0]
    assert np.abs(after - before).max() > 1e-3
    np.testing.assert_allclose(after, clf.predict(image[None])[0], atol=1e-6)


def test_a_damaged_cache_file_is_rebuilt(tiny_conv):
    path = DenseClassifier(tiny_conv).path
    path.write_bytes(b"not an onnx model")
    assert DenseClassifier(tiny_conv).path == path and onnx.load(str(path)).graph.node


def test_rewrite_refuses_a_graph_without_a_pooled_dense_head(tmp_path):
    from onnx import TensorProto, helper

    from slidewin.core.contract import ModelKind, ModelMeta

    x = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 4])
    y = helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 4])
    g = helper.make_graph([helper.make_node("Softmax", ["image"], ["probabilities"])], "g", [x], [y])
    meta = ModelMeta(ModelKind.CLASSIFIER, (8, 8), ("a", "b", "c", "d"), "custom", "random", "t", "t")
    with pytest.raises(ModelError, match="dense"):
        make_dense(helper.make_model(g), meta)


@pytest.mark.parametrize("length, count, margin, spans", [
    (544, 1, 0, [(0, 11, 0, 544)]),                                         # one pass: no margins
    (544, 3, 0, [(0, 4, 0, 320), (4, 8, 128, 448), (8, 11, 224, 544)]),     # evenly shared, one extent
    (544, 3, 40, [(0, 4, 0, 448), (4, 8, 64, 512), (8, 11, 96, 544)]),      # margin rounded up to 64
    (544, 5, 0, [(0, 3, 0, 288), (3, 6, 96, 384), (6, 9, 192, 480), (9, 11, 256, 544)]),  # 3 a tile: 4 tiles
    (320, 9, 500, [(0, 1, 0, 320), (1, 2, 0, 320), (2, 3, 0, 320), (3, 4, 0, 320)]),     # 1 cell each
])
def test_tile_spans_table(length, count, margin, spans):
    assert tile_spans(length, 224, 32, count, margin) == spans


@settings(max_examples=200, deadline=None)
@given(cells=st.integers(1, 200), window=st.sampled_from([32, 64, 224]), stride=st.sampled_from([8, 16, 32]),
       count=st.integers(1, 50), margin=st.integers(0, 600))
def test_tile_spans_compute_every_cell_once_on_the_grid(cells, window, stride, count, margin):
    length = window + (cells - 1) * stride
    spans = tile_spans(length, window, stride, count, margin)
    covered = [c for c0, c1, _, _ in spans for c in range(c0, c1)]
    assert covered == list(range(cells))                                  # each cell exactly once, in order
    assert len({p1 - p0 for _, _, p0, p1 in spans}) == 1                   # one shape for every pass
    assert len(spans) <= count
    m = stride * -(-margin // stride)
    for c0, c1, p0, p1 in spans:
        assert p0 % stride == 0 and (p1 - p0 - window) % stride == 0 and 0 <= p0 < p1 <= length
        assert p0 <= max(0, c0 * stride - m) and p1 >= min(length, (c1 - 1) * stride + window + m)  # context


@settings(max_examples=100, deadline=None)
@given(hw=st.tuples(st.integers(0, 150), st.integers(0, 150)), max_side=st.integers(64, 3000),
       margin=st.sampled_from([0, 32, 448]))
def test_plan_tiles_keeps_each_pass_within_the_pixel_budget(hw, max_side, margin):
    h, w = 224 + 32 * hw[0], 224 + 32 * hw[1]
    rows, cols = plan_tiles((h, w), (224, 224), 32, max_side ** 2, (margin, margin))
    ey, ex = rows[0][3] - rows[0][2], cols[0][3] - cols[0][2]
    if h * w <= max_side ** 2:
        assert (rows, cols) == ([(0, hw[0] + 1, 0, h)], [(0, hw[1] + 1, 0, w)])
    else:  # within the budget, or as small as a tile can be (one cell and its margins)
        m = -(-margin // 32) * 32
        smallest = min(h, 224 + 2 * m) * min(w, 224 + 2 * m)
        assert ey * ex <= max(max_side ** 2, smallest)


def test_plan_tiles_prefers_few_large_tiles():
    # EfficientNet-Lite0 (448 px margins) on a 2240 px level with 2048^2-pixel passes: three
    # 2240 x 1792 strips (12.0 Mpx computed) beat a 3 x 3 grid of 1792^2 tiles (28.9 Mpx).
    spans = plan_tiles((2240, 2240), (224, 224), 32, 2048 ** 2, (448, 448))
    assert sorted(len(s) for s in spans) == [1, 3]
    assert sorted(s[0][3] - s[0][2] for s in spans) == [1792, 2240]
    # A budget below one tile (a cell and its margins): the smallest tiles, not an error.
    rows, cols = plan_tiles((352, 1376), (224, 224), 32, 600 ** 2, (448, 448))
    assert rows == [(0, 5, 0, 352)] and len(cols) == 37




def test_context_margin_covers_the_receptive_field():
    assert context_margin(63, 32, 2, 64) == 64       # tiny_conv_model: 31 px beyond, 16 a side, + 1 stride
    assert context_margin(851, 32, 7, 224) == 448    # EfficientNet-Lite0
    assert context_margin(483, 32, 7, 224) == 288    # ResNet50


def test_tiled_dense_map_equals_the_untiled_pass(tiny_conv):
    dense = DenseClassifier(tiny_conv, max_tile=256)
    assert dense.context_hw == (64, 64)
    rng = np.random.default_rng(5)
    level = rng.integers(0, 256, (64 + 32 * 20, 64 + 32 * 27, 3), dtype=np.uint8)
    untiled = DenseClassifier(tiny_conv, max_tile=0).predict_map(level)
    assert untiled.shape == (21, 28, 4)
    assert len(dense.tiles(level.shape[:2])) >= 9
    np.testing.assert_allclose(dense.predict_map(level), untiled, rtol=0, atol=1e-6)
    dense.context_hw = (0, 0)  # the margin matters: without it tile edges see zero padding
    assert np.abs(dense.predict_map(level) - untiled).max() > 1e-3




def test_tiled_dense_equals_untiled_for_efficientnet(effnet_onnx, tmp_path):
    """A real network: its 851 px receptive field reaches far past the 224 px window."""
    from skimage import data

    model = tmp_path / "m.onnx"
    os.link(effnet_onnx, model)
    clf = Classifier(model)
    level = cv2.resize(data.chelsea(), (224 + 60 * 32, 224 + 32), interpolation=cv2.INTER_AREA)
    untiled = DenseClassifier(clf, max_tile=0).predict_map(level)
    dense = DenseClassifier(clf, max_tile=735)  # two 256 x 2080 passes: one seam, 448 px of context each side
    assert [c for _, c in dense.tiles(level.shape[:2])] == [(0, 31, 0, 2080), (31, 61, 64, 2144)]
    np.testing.assert_allclose(dense.predict_map(level), untiled, rtol=0, atol=1e-5)


def test_a_known_model_and_its_checked_dense_form_open_one_session(tiny_conv, tmp_path, monkeypatch):
    """Once the dense form has passed the probe, a later detector opens neither the classifier's
    session nor probes again, and detects the same (slidewin.io.filememo)."""
    from slidewin.io import filememo
    from slidewin.pipeline.config import DetectorConfig, Mode
    from slidewin.pipeline.factory import build_detector

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(filememo, "RACY_SECONDS", 0.0)
    config = DetectorConfig(mode=Mode.DENSE, windows_hw=((64, 64),), min_score=0.0)
    image = np.random.default_rng(4).integers(0, 255, (160, 224, 3), dtype=np.uint8)
    first = build_detector(tiny_conv.path, config)             # builds, probes, remembers
    probes = []
    monkeypatch.setattr(DenseClassifier, "_matches", lambda self, s: probes.append(s) or True)
    second = build_detector(tiny_conv.path, config)
    assert second.classifier._session is None and not probes
    a, b = first.detect(image), second.detect(image)
    np.testing.assert_array_equal(a.xyxy, b.xyxy)
    np.testing.assert_array_equal(a.scores, b.scores)
    np.testing.assert_array_equal(second.classifier.predict(image[None, :64, :64]),
                                  first.classifier.predict(image[None, :64, :64]))   # opened when needed
    assert second.classifier._session is not None


def test_a_forged_dense_form_is_probed_even_after_a_good_one_passed(tiny_conv, tmp_path, monkeypatch):
    from slidewin.io import filememo

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(filememo, "RACY_SECONDS", 0.0)
    DenseClassifier(tiny_conv)
    dense = DenseClassifier(tiny_conv)                          # probed and remembered
    forged = onnx.load(str(dense.path))
    _zero_head(forged)
    onnx.save(forged, str(dense.path))                          # a new version of the file
    again = DenseClassifier(tiny_conv)
    image = np.random.default_rng(2).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    np.testing.assert_allclose(again.predict_map(image)[0, 0], tiny_conv.predict(image[None])[0], atol=1e-6)


def test_the_dense_form_given_as_the_model_is_refused_by_name(tiny_conv):
    dense = DenseClassifier(tiny_conv)
    with pytest.raises(ModelError, match="is the dense form slidewin cached for a classifier"):
        Classifier(dense.path)
