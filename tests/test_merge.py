import numpy as np
import pytest

from slidewin.detections import Detections
from slidewin.merge import Merge, merge_detections, suppress_nested, vote_boxes


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
