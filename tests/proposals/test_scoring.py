"""Scoring proposals: pooled scoring equals the dense map where a proposal is a dense window;
the geometry helpers by hand."""

import os

import cv2
import numpy as np
import pytest

from slidewin.core.detector import RunStats
from slidewin.proposals.scoring import (CropScorer, PooledScorer, assign_levels, box_cells, contrast_scores,
                                        grow_boxes, pool_cells, pooled_levels)
from slidewin.runtime.classifier import Classifier
from slidewin.runtime.dense import DenseClassifier


def _windows(rows: int, cols: int, size: int, stride: int) -> tuple[np.ndarray, list[tuple[int, int]]]:
    cells = [(i, j) for i in range(rows) for j in range(cols)]
    boxes = np.array([[j * stride, i * stride, j * stride + size, i * stride + size] for i, j in cells], np.float32)
    return boxes, cells


@pytest.mark.parametrize("which", ["tiny_conv", "effnet"])
def test_pooled_scoring_of_dense_windows_equals_the_dense_map(which, tiny_conv, effnet_onnx, tmp_path):
    if which == "effnet":
        model = tmp_path / "m.onnx"
        os.link(effnet_onnx, model)
        clf = Classifier(model)
    else:
        clf = tiny_conv
    size, stride = clf.input_hw[0], clf.meta.feature_stride
    from skimage import data

    image = cv2.resize(data.astronaut(), (size + 3 * stride, size + 2 * stride), interpolation=cv2.INTER_AREA)
    dense = DenseClassifier(clf)
    want = dense.predict_map(image)                               # (3, 4, K): every window of the level
    boxes, cells = _windows(want.shape[0], want.shape[1], size, stride)
    scorer = PooledScorer(dense, context=0.0, max_scale=1.0)      # the first level is the image itself
    got = scorer.probabilities(image, boxes, RunStats())
    for k, (i, j) in enumerate(cells):
        np.testing.assert_allclose(got[k], want[i, j], rtol=1e-4, atol=1e-6)


def test_pooled_levels_and_assignment_by_hand():
    levels = pooled_levels((480, 640), (224, 224), max_scale=3.0, factor=1.5, max_pixels=1 << 40)
    scales = [round(lv.scale, 4) for lv in levels]
    assert scales == [3.0, 2.0, 1.3333, 0.8889, 0.5926, 0.3951, 0.2634]     # down past 224/640 = 0.35
    assert levels[0].size_hw == (1440, 1920) and levels[-1].size_hw == (224, 224)   # never below the input
    # a 224 px box belongs at scale 1 -> 0.8889 or 1.3333 (log-nearest: 0.8889); 75 px at 3.0; 600 px at 0.3951
    which = assign_levels(np.array([[0, 0, 224, 224], [0, 0, 75, 75], [0, 0, 600, 600]], np.float32), levels, 224)
    assert [scales[k] for k in which] == [0.8889, 3.0, 0.3951]
    capped = pooled_levels((480, 640), (224, 224), 3.0, 1.5, max_pixels=1000 * 1000)
    assert capped[0].scale == 1.3333333333333333                               # 3.0 and 2.0 exceed the cap


def test_box_cells_and_pooling_by_hand():
    cells = box_cells(np.array([[0, 0, 64, 32], [40, 10, 41, 11], [100, 0, 500, 90]], np.float32),
                      (1.0, 1.0), 32, (3, 4))
    np.testing.assert_array_equal(cells, [[0, 0, 2, 1],     # exactly 2 x 1 cells
                                          [1, 0, 2, 1],     # a sliver: its nearest cell, never empty
                                          [3, 0, 4, 3]])    # clipped to the grid
    features = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    pooled = pool_cells(features, np.array([[0, 0, 2, 1], [1, 1, 4, 3]]))
    np.testing.assert_allclose(pooled[0], [features[0, 0, :2].mean(), features[1, 0, :2].mean()])
    np.testing.assert_allclose(pooled[1], [features[0, 1:, 1:].mean(), features[1, 1:, 1:].mean()])


def test_grow_boxes_adds_context_inside_the_image():
    grown = grow_boxes(np.array([[10, 10, 30, 50]], np.float32), 0.1, (100, 100))
    np.testing.assert_allclose(grown, [[8, 6, 32, 54]])
    np.testing.assert_allclose(grow_boxes(np.array([[0, 0, 100, 100]], np.float32), 0.5, (100, 100)), [[0, 0, 100, 100]])


def test_crop_scorer_classifies_each_box_like_the_classifier_does(tiny_conv):
    image = np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    boxes = np.array([[0, 0, 64, 64], [10, 20, 110, 100]], np.float32)
    got = CropScorer(tiny_conv, context=0.0, batch_size=1).probabilities(image, boxes, RunStats())
    crops = np.stack([image[:64, :64], cv2.resize(image[20:100, 10:110], (64, 64), interpolation=cv2.INTER_AREA)])
    np.testing.assert_allclose(got, tiny_conv.predict(crops), atol=1e-6)


def test_ring_is_the_grown_box_less_the_box_and_absent_for_a_box_filling_the_image(tiny_conv):
    """The ring's probabilities are the head on the mean feature of the cells between the box and the
    box grown by ``ring`` a side, at the box's own level; a box with no room around it has none."""
    size, stride = tiny_conv.input_hw[0], tiny_conv.meta.feature_stride
    image = np.random.default_rng(1).integers(0, 255, (size + 4 * stride, size + 6 * stride, 3), dtype=np.uint8)
    dense = DenseClassifier(tiny_conv)
    h, w = image.shape[:2]
    boxes = np.array([[2 * stride, 2 * stride, 2 * stride + size, 2 * stride + size],   # room on every side
                      [0, 0, w, h]], np.float32)                                       # none
    scorer = PooledScorer(dense, context=0.0, max_scale=1.0, fit=1.0, ring=0.5)
    box_probs, ring_probs = scorer.probabilities_and_ring(image, boxes, RunStats())
    np.testing.assert_allclose(box_probs, scorer.probabilities(image, boxes, RunStats()), atol=1e-7)
    features = dense.feature_map(image)                           # the first box's level is the image
    inner = box_cells(boxes[:1], (1.0, 1.0), stride, features.shape[1:])
    outer = box_cells(grow_boxes(boxes[:1], 0.5, (h, w)), (1.0, 1.0), stride, features.shape[1:])
    assert (outer[0, 2:] - outer[0, :2] > inner[0, 2:] - inner[0, :2]).all()
    n_in, n_out = np.prod(inner[0, 2:] - inner[0, :2]), np.prod(outer[0, 2:] - outer[0, :2])
    ring_mean = (pool_cells(features, outer) * n_out - pool_cells(features, inner) * n_in) / (n_out - n_in)
    np.testing.assert_allclose(ring_probs[0], dense.head()(ring_mean)[0], rtol=1e-4, atol=1e-6)
    assert not ring_probs[1].any()


def test_contrast_scores_by_hand():
    box = np.array([[0.8, 0.5], [0.6, 0.0]], np.float32)
    ring = np.array([[0.5, 0.0], [1.0, 0.9]], np.float32)
    np.testing.assert_allclose(contrast_scores(box, ring, 2.0), [[0.2, 0.5], [0.0, 0.0]], atol=1e-7)
    np.testing.assert_allclose(contrast_scores(box, ring, 0.0), box)
    assert contrast_scores(box, ring, 3.0).dtype == np.float32


@pytest.mark.parametrize("stated", [1, 8, 64])
def test_a_dense_form_lying_about_its_stride_is_refused_in_one_line(tiny_conv, tmp_path, stated, save_rgb,
                                                                     one_line_error, capsys):
    """Issue 22: a dense form whose metadata states another stride than its graph has made pooled
    scoring pool the wrong cells (and, stated small, cost far more). It is refused as windows mode
    refuses a map of the wrong size: one line naming the model, before any work."""
    import onnx

    from slidewin.cli import main
    from slidewin.core.contract import Key
    from slidewin.errors import SlidewinError

    dense = DenseClassifier(tiny_conv)
    PooledScorer(dense)  # the truth passes
    model = onnx.load(str(dense.path))
    for p in model.metadata_props:
        if p.key == Key.FEATURE_STRIDE:
            p.value = str(stated)
    onnx.save(model, str(dense.path))
    lying = DenseClassifier(tiny_conv)
    assert lying.path == dense.path and lying.stride == stated  # the rewritten form is the one in use
    with pytest.raises(SlidewinError, match="stated stride of") as e:
        PooledScorer(lying)
    assert e.value.path == str(tiny_conv.path)
    image = save_rgb(tmp_path / "scene.jpg", cv2.resize(np.full((60, 80, 3), 90, np.uint8), (400, 300)))
    code = main(["detect", str(image), "--model", str(tiny_conv.path), "--proposals", "selective-search-single"])
    one_line_error(capsys, code, tiny_conv.path.name, f"stated stride of {stated} px", "dense form")
