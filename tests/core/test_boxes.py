"""Pairwise overlap: IoU and intersection-over-smaller from one intersection, hand-computed cases."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from slidewin.core.boxes import box_area, box_ios, box_iou, pairwise_intersection

A = [0, 0, 10, 10]


@pytest.mark.parametrize("b, inter, iou, ios", [
    ([0, 0, 10, 10], 100, 1.0, 1.0),            # the same box
    ([5, 0, 15, 10], 50, 50 / 150, 0.5),        # half overlap
    ([2, 2, 4, 4], 4, 4 / 100, 1.0),            # nested: IoU small, IoS 1
    ([10, 0, 20, 10], 0, 0.0, 0.0),             # touching edges: no area in common
    ([20, 20, 30, 30], 0, 0.0, 0.0),            # apart
    ([5, 5, 5, 9], 0, 0.0, 0.0),                # a zero-width box: never divides by zero
])
def test_overlap_table(b, inter, iou, ios):
    a, b = np.array([A], np.float32), np.array([b], np.float32)
    assert pairwise_intersection(a, b)[0, 0] == pytest.approx(inter)
    assert box_iou(a, b)[0, 0] == pytest.approx(iou)
    assert box_ios(a, b)[0, 0] == pytest.approx(ios)


def test_shapes_and_areas():
    a = np.array([[0, 0, 2, 3], [1, 1, 2, 2]], np.float32)
    b = np.array([[0, 0, 1, 1], [0, 0, 4, 4], [3, 3, 5, 5]], np.float32)
    assert box_area(a).tolist() == [6.0, 1.0]
    assert pairwise_intersection(a, b).shape == box_iou(a, b).shape == box_ios(a, b).shape == (2, 3)
    assert box_iou(np.zeros((0, 4)), b).shape == (0, 3)


_boxes = st.lists(st.tuples(st.floats(0, 50), st.floats(0, 50), st.floats(0.5, 30), st.floats(0.5, 30)),
                  min_size=1, max_size=6).map(
    lambda r: np.array([[x, y, x + w, y + h] for x, y, w, h in r], np.float64))


@given(_boxes, _boxes)
def test_iou_and_ios_are_symmetric_bounded_and_ordered(a, b):
    iou, ios = box_iou(a, b), box_ios(a, b)
    np.testing.assert_allclose(iou, box_iou(b, a).T)
    np.testing.assert_allclose(ios, box_ios(b, a).T)
    assert (iou >= 0).all() and (iou <= 1 + 1e-12).all() and (ios <= 1 + 1e-12).all()
    assert (ios >= iou - 1e-12).all()                          # the smaller box is at most the union
    np.testing.assert_allclose(np.diag(box_iou(a, a)), 1.0)
