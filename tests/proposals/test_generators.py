"""Proposal generators: boxes inside the image, xyxy float32, deterministic; and one OpenCV."""

import importlib.metadata

import cv2
import numpy as np
import pytest

from slidewin.proposals.generators import (
    ProposalMethod,
    SelectiveSearch,
    clean_proposals,
)


def _scene(hw=(180, 240)) -> np.ndarray:
    """Three flat rectangles on a gradient: selective search must find boxes around them."""
    h, w = hw
    img = np.zeros((h, w, 3), np.uint8)
    img[:] = np.linspace(40, 90, w, dtype=np.uint8)[None, :, None]
    img[20:80, 30:110] = (200, 30, 30)
    img[100:170, 140:230] = (30, 200, 30)
    img[40:70, 160:200] = (30, 30, 220)
    return img


def test_exactly_one_opencv_distribution_is_installed():
    """opencv-contrib-python-headless replaces opencv-python-headless: both ship `cv2`, the last one
    installed wins, and uninstalling either breaks the other."""
    names = {"opencv-python", "opencv-python-headless", "opencv-contrib-python", "opencv-contrib-python-headless"}
    found = sorted({d.metadata["Name"].lower() for d in importlib.metadata.distributions()} & names)
    assert found == ["opencv-contrib-python-headless"], found
    assert hasattr(cv2, "ximgproc")  # the contrib modules (selective search) are there


@pytest.mark.parametrize("method", [ProposalMethod.SELECTIVE_SEARCH_SINGLE, ProposalMethod.SELECTIVE_SEARCH_FAST,
                                    ProposalMethod.SELECTIVE_SEARCH])
def test_selective_search_boxes_are_float32_xyxy_inside_and_deterministic(method):
    image = _scene()
    generate = SelectiveSearch(method)
    a, b = generate(image), generate(image.copy())
    assert a.dtype == np.float32 and a.ndim == 2 and a.shape[1] == 4 and len(a) > 10
    np.testing.assert_array_equal(a, b)
    h, w = image.shape[:2]
    assert (a[:, 0] >= 0).all() and (a[:, 1] >= 0).all() and (a[:, 2] <= w).all() and (a[:, 3] <= h).all()
    assert (a[:, 2] > a[:, 0]).all() and (a[:, 3] > a[:, 1]).all()
    # the red rectangle is found exactly (its region is one segment)
    assert any(np.allclose(box, [30, 20, 110, 80], atol=2) for box in a)


@pytest.mark.parametrize("boxes, min_size, max_count, expected", [
    ([[-5, -5, 20, 30], [10, 10, 300, 40]], 0, None, [[0, 0, 20, 30], [10, 10, 100, 40]]),   # clipped
    ([[0, 0, 3, 50], [0, 0, 50, 50]], 4, None, [[0, 0, 50, 50]]),                           # too thin
    ([[1, 1, 9, 9], [0, 0, 50, 50], [1, 1, 9, 9]], 0, None, [[1, 1, 9, 9], [0, 0, 50, 50]]),  # duplicate
    ([[1, 1, 9, 9], [0, 0, 50, 50], [2, 2, 9, 9]], 0, 2, [[1, 1, 9, 9], [0, 0, 50, 50]]),   # first 2 kept
    ([[0, 0, 0, 0]], 0, None, np.zeros((0, 4))),                                             # empty box
])
def test_clean_proposals_table(boxes, min_size, max_count, expected):
    got = clean_proposals(np.array(boxes, np.float32), (60, 100), min_size, max_count)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, np.array(expected, np.float32).reshape(-1, 4))
