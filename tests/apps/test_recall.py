"""Recall and average recall of candidate boxes, checked against hand-computed cases."""

import numpy as np
import pytest

from slidewin.apps.recall import (AR_THRESHOLDS, CURVE_COUNTS, average_recall, best_ious, first_n, recall_at,
                                  recall_summary)

GT = np.array([[0, 0, 10, 10], [20, 0, 30, 10]], np.float64)


def test_best_iou_per_ground_truth_box_and_per_candidate_count():
    regions = np.array([[0, 0, 10, 5],       # IoU 0.5 with the first box
                        [20, 0, 30, 10],     # exact second box
                        [0, 0, 10, 10]],     # exact first box, third in rank
                       np.float32)
    best = best_ious(GT, regions, counts=(1, 2))
    np.testing.assert_allclose(best, [[0.5, 0.5, 1.0],    # first 1, first 2, all
                                      [0.0, 1.0, 1.0]])


def test_recall_and_average_recall_by_hand():
    best = np.array([0.5, 0.74, 0.75, 0.96, 0.0])
    assert recall_at(best, 0.5) == 4 / 5
    assert recall_at(best, 0.75) == 2 / 5
    # thresholds 0.50 .. 0.95: 0.96 passes all ten, 0.75 passes 0.50-0.75 (6), 0.74 passes 0.50-0.70 (5),
    # 0.5 passes 0.50 (1), 0.0 none: (10 + 6 + 5 + 1 + 0) / (5 * 10)
    assert len(AR_THRESHOLDS) == 10
    assert average_recall(best) == pytest.approx(22 / 50)
    assert recall_at(np.zeros(0), 0.5) == 0.0


def test_unranked_windows_are_subsampled_evenly():
    regions = np.arange(40, dtype=np.float32).reshape(10, 4)
    np.testing.assert_array_equal(first_n(regions, 3, ranked=True), regions[:3])
    np.testing.assert_array_equal(first_n(regions, 3, ranked=False), regions[[0, 4, 9]])   # ends included
    assert first_n(regions, 20, ranked=False) is regions


def test_summary_keys_and_curve():
    rows = np.zeros((4, len(CURVE_COUNTS) + 1))
    rows[:2, :] = 0.9            # two boxes found from the first 10 candidates on
    rows[2, CURVE_COUNTS.index(1000):] = 0.6   # one found only within 1,000
    s = recall_summary(rows)
    assert s["recall50"] == 0.75 and s["recall75"] == 0.5 and s["ground_truth_boxes"] == 4
    assert s["AR100"] == pytest.approx(0.5 * 9 / 10)          # two boxes pass 0.50 .. 0.90
    assert s["AR1000"] == pytest.approx((2 * 9 + 3) / 40)       # and the third 0.50 .. 0.60
    assert s["recall50_curve"]["100"] == 0.5 and s["recall50_curve"]["1000"] == 0.75
