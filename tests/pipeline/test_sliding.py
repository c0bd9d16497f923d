"""The sliding-window detector: patch and dense mode score the same windows, ``auto`` picks dense
when it can, and big levels in tiles give the same detections."""

import cv2
import numpy as np
import pytest

from slidewin.core.detector import Detector, RunStats
from slidewin.errors import SlidewinError
from slidewin.pipeline.config import DetectorConfig, Mode
from slidewin.pipeline.sliding import SlidingWindowDetector, dense_capable


def _photo(hw=(300, 420)) -> np.ndarray:
    from skimage import data

    return cv2.resize(data.astronaut(), hw[::-1], interpolation=cv2.INTER_AREA)


def test_dense_map_has_one_cell_per_patch_window(classifier):
    image = _photo()
    patch = SlidingWindowDetector(classifier, config=DetectorConfig(mode=Mode.PATCH, min_score=0.0))
    dense = SlidingWindowDetector(classifier, config=DetectorConfig(mode=Mode.DENSE, min_score=0.0))
    probs_p, boxes_p = patch.window_probabilities(image)
    probs_d, boxes_d = dense.window_probabilities(image)
    np.testing.assert_array_equal(boxes_p, boxes_d)           # the very same windows
    np.testing.assert_allclose(probs_d.sum(1), 1.0, atol=1e-4)
    if classifier.meta.is_random:
        return  # random weights give about the same output for every window: nothing to correlate
    # A dense cell sees its window plus context, so the modes agree in kind, not exactly. Each
    # window's dense probabilities must track its own crop's (log-probabilities correlate: median
    # r ~0.80 for EfficientNet-Lite0 on this photo) far better than a window 7 places away (~0.44):
    # a map read in the wrong order, or from the wrong level, fails.
    lp, ld = np.log(probs_p + 1e-7), np.log(probs_d + 1e-7)
    lp = (lp - lp.mean(1, keepdims=True)) / lp.std(1, keepdims=True)
    ld = (ld - ld.mean(1, keepdims=True)) / ld.std(1, keepdims=True)
    own = (lp * ld).mean(1)
    other = (lp * np.roll(ld, 7, axis=0)).mean(1)
    assert np.median(own) > 0.5, np.median(own)
    assert np.median(own) > np.median(other) + 0.1, (np.median(own), np.median(other))


def test_window_probabilities_lists_the_same_windows_in_both_modes(classifier):
    image = np.random.default_rng(5).integers(0, 255, (260, 380, 3), dtype=np.uint8)
    patch = SlidingWindowDetector(classifier, config=DetectorConfig(mode=Mode.PATCH, batch_size=5))
    dense = SlidingWindowDetector(classifier, config=DetectorConfig(mode=Mode.DENSE))
    probs_p, boxes_p = patch.window_probabilities(image)
    probs_d, boxes_d = dense.window_probabilities(image)
    n = sum(len(lv.xs) * len(lv.ys) for lv in patch.plan(image.shape[:2]))
    assert probs_p.shape == probs_d.shape == (n, len(classifier.labels))
    np.testing.assert_array_equal(boxes_p, boxes_d)
    # Batches of 5 reuse one buffer: the result must hold every batch, not the last one repeated.
    assert len({row.tobytes() for row in boxes_p}) == n


def test_detector_reports_its_stats_and_implements_the_interface(tiny_conv):
    det = SlidingWindowDetector(tiny_conv, config=DetectorConfig(windows_hw=((96, 96),), min_score=0.0))
    assert isinstance(det, Detector) and det.last_stats is None
    dets = det.detect(np.zeros((200, 300, 3), np.uint8))
    stats = det.last_stats
    assert isinstance(stats, RunStats) and stats.windows > 0 and stats.candidates >= len(dets) > 0
    assert list(stats.seconds) == ["pyramid", "inference", "scoring", "nms"]


@pytest.mark.parametrize("config, expected", [
    (DetectorConfig(), Mode.DENSE),                           # auto: the rewrite knows the graph
    (DetectorConfig(step=16.0), Mode.PATCH),                  # auto: dense cannot step by 16
    (DetectorConfig(mode=Mode.PATCH), Mode.PATCH),
    (DetectorConfig(mode=Mode.DENSE), Mode.DENSE),
])
def test_auto_mode_is_dense_when_the_classifier_can_be_rewritten(tiny_conv, config, expected):
    det = SlidingWindowDetector(tiny_conv, config=config)
    assert det.mode is expected and (det.dense is not None) == (expected is Mode.DENSE)


def test_auto_mode_falls_back_to_patch_for_a_graph_the_rewrite_does_not_know(tmp_path, tiny_model):
    from slidewin.runtime.classifier import Classifier

    clf = Classifier(tiny_model(tmp_path / "tiny.onnx", ["N", 32, 32, 3]))  # no feature stride, no pooled head
    assert not dense_capable(clf)
    assert SlidingWindowDetector(clf).mode is Mode.PATCH
    with pytest.raises(SlidewinError, match="feature_stride"):
        SlidingWindowDetector(clf, config=DetectorConfig(mode=Mode.DENSE))


def test_tiled_dense_detections_equal_untiled(tiny_conv):
    config = DetectorConfig(mode=Mode.DENSE, windows_hw=((96, 96),), min_score=0.3, iou=0.5, dense_tile=0)
    untiled = SlidingWindowDetector(tiny_conv, config=config)
    tiled = SlidingWindowDetector(tiny_conv, config=DetectorConfig(**{**config.__dict__, "dense_tile": 300}))
    image = cv2.GaussianBlur(np.random.default_rng(9).integers(0, 255, (900, 700, 3), dtype=np.uint8), (0, 0), 4)
    assert len(tiled.dense.tiles(tiled.plan(image.shape[:2])[0].size_hw)) > 4
    want, got = untiled.detect(image), tiled.detect(image)
    assert len(want) > 10
    np.testing.assert_allclose(got.xyxy, want.xyxy, atol=1e-3)
    np.testing.assert_allclose(got.scores, want.scores, atol=1e-5)
    np.testing.assert_array_equal(got.class_ids, want.class_ids)
