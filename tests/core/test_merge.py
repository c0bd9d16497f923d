import numpy as np
import pytest

from slidewin.core.detections import Detections
from slidewin.core.merge import Merge, merge_detections, suppress_nested, vote_boxes


def dets(boxes, scores, classes=None):
    n = len(boxes)
    return Detections(np.array(boxes, float).reshape(n, 4), np.array(scores, float),
                      np.zeros(n, int) if classes is None else np.array(classes), ("a", "b"))


def test_nested_box_is_dropped_only_within_its_class():
    # A face window (strong) inside a whole-object window (weaker): IoU 0.25, IoS 1.0.
    d = dets([[0, 0, 100, 100], [0, 0, 200, 200], [0, 0, 200, 200]], [0.9, 0.8, 0.7], [0, 0, 1])
    np.testing.assert_array_equal(suppress_nested(d, 0.6), [0, 2])
    kept = merge_detections(d, Merge.NESTED, iou=0.3)
    assert len(kept) == 2 and kept.class_ids.tolist() == [0, 1]
    assert len(merge_detections(d, Merge.NMS, iou=0.3)) == 3      # plain NMS keeps the nested one


def test_ios_threshold_boundary():
    # Intersection 50 x 100 = 5000 of the smaller area 10000: IoS 0.5.
    d = dets([[0, 0, 100, 100], [50, 0, 250, 200]], [0.9, 0.8])
    assert len(suppress_nested(d, 0.49)) == 1
    assert len(suppress_nested(d, 0.5)) == 2


def test_box_voting_is_the_score_weighted_mean_of_agreeing_windows():
    cand = dets([[0, 0, 100, 100], [10, 0, 110, 100], [500, 500, 600, 600]], [0.6, 0.2, 0.9])
    kept = cand[np.array([0, 2])]
    voted = vote_boxes(kept, cand, iou=0.5)
    np.testing.assert_allclose(voted.xyxy[0], [2.5, 0, 102.5, 100])   # (0.6*0 + 0.2*10) / 0.8
    np.testing.assert_allclose(voted.xyxy[1], [500, 500, 600, 600])   # alone: unchanged
    assert voted.scores.tolist() == pytest.approx([0.6, 0.9])


def test_merges_handle_empty_input():
    empty = Detections.empty(("a",))
    for m in Merge:
        assert len(merge_detections(empty, m, iou=0.3)) == 0


def test_soft_nms_merge_decays_overlapping_same_class_boxes():
    # 0 and 1 overlap at IoU 1/3 (same class); 2 duplicates 0 in class b.
    cand = dets([[0, 0, 10, 10], [5, 0, 15, 10], [0, 0, 10, 10]], [0.9, 0.8, 0.7], [0, 0, 1])
    kept = merge_detections(cand, Merge.SOFT, iou=0.5, min_score=0.001)
    assert kept.class_ids.tolist() == [0, 1, 0]
    np.testing.assert_allclose(kept.scores, [0.9, 0.7, 0.8 * np.exp(-(1 / 9) / 0.5)], rtol=1e-6)
    np.testing.assert_array_equal(kept.xyxy, cand.xyxy[[0, 2, 1]])
    harder = merge_detections(cand, "soft-nms", iou=0.5, sigma=0.1, min_score=0.001)
    np.testing.assert_allclose(harder.scores[2], 0.8 * np.exp(-(1 / 9) / 0.1), rtol=1e-6)
    # Without a floor, nothing goes below the lowest candidate (0.7): box 1 (0.64) is dropped.
    assert merge_detections(cand, Merge.SOFT, iou=0.5).scores.tolist() == pytest.approx([0.9, 0.7])


def test_soft_nms_merge_never_returns_a_score_below_the_candidates():
    # The detector kept candidates >= its min_score (0.5 for `slidewin detect`): the duplicate
    # decays to 0.6 * e^-2 = 0.08, below every candidate, and goes; an explicit floor keeps it.
    cand = dets([[0, 0, 10, 10], [0, 0, 10, 10], [50, 50, 60, 60]], [0.9, 0.6, 0.55])
    kept = merge_detections(cand, Merge.SOFT, iou=0.5)
    assert kept.scores.tolist() == pytest.approx([0.9, 0.55])
    assert kept.scores.min() >= cand.scores.min()
    low = merge_detections(cand, Merge.SOFT, iou=0.5, min_score=0.01)
    assert low.scores.tolist() == pytest.approx([0.9, 0.55, 0.6 * np.exp(-2)])
