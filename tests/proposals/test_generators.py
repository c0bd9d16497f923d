"""Proposal generators: boxes inside the image, xyxy float32, deterministic; and one OpenCV."""

import importlib.metadata

import cv2
import numpy as np
import pytest

from slidewin.proposals.generators import (
    MAX_ASPECT,
    MIN_WORK_SIDE,
    STRIP_PIXELS,
    WORK_PIXELS,
    ProposalMethod,
    SelectiveSearch,
    clean_proposals,
    tile_spans,
    working_plan,
    working_size,
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


# --- the bounded working copy (issue 22): time and memory bounded whatever the photo ----------------

@pytest.mark.parametrize("hw", [(422, 640), (1688, 2560), (9000, 12000), (200, 30000), (30000, 200), (2000, 9000),
                                (100, 1_000_000), (1, 50_000), (480, 640)])
def test_working_size_is_bounded_and_keeps_the_shape(hw):
    h, w = hw
    wh, ww = working_size(hw)
    assert wh <= h and ww <= w  # never upscaled
    if h * w <= WORK_PIXELS:
        assert (wh, ww) == hw
        return
    assert wh * ww <= STRIP_PIXELS * WORK_PIXELS
    assert abs(ww / wh - w / h) <= 0.02 * (w / h) + 1.0 / min(wh, ww) * (w / h)  # one scale for both axes
    if min(h, w) * np.sqrt(WORK_PIXELS / (h * w)) >= MIN_WORK_SIDE:  # an ordinary photo: the budget itself
        assert WORK_PIXELS * 0.99 <= wh * ww <= WORK_PIXELS
    else:  # a strip keeps MIN_WORK_SIDE of its short side while it fits STRIP_PIXELS times the budget
        assert min(wh, ww) >= min(MIN_WORK_SIDE, min(hw)) or \
            wh * ww >= STRIP_PIXELS * WORK_PIXELS * (1 - 1 / min(wh, ww)) * 0.99  # whole pixels


def test_working_size_none_is_the_photo_itself():
    assert working_size((9000, 12000), None) == (9000, 12000)
    assert working_plan((200, 30000), None) == ((200, 30000), [(0, 200, 0, 30000)])


@pytest.mark.parametrize("length, short", [(100, 100), (400, 100), (401, 100), (9600, 64), (257, 64), (50, 11)])
def test_tiles_cover_the_axis_and_hold_everything_up_to_the_short_side(length, short):
    spans = tile_spans(length, short)
    assert spans[0][0] == 0 and spans[-1][1] == length
    assert all(b - a <= max(short + 1, MAX_ASPECT * short) for a, b in spans)
    assert all(a2 <= b1 - min(short, length) for (_, b1), (a2, _) in zip(spans, spans[1:]))  # overlap >= short
    for start in range(0, length - short + 1, max(1, short // 3)):  # any segment `short` long lies in one tile
        assert any(a <= start and start + short <= b for a, b in spans), start


def test_working_plan_tiles_long_copies_only():
    (wh, ww), tiles = working_plan((200, 30000))
    assert wh == MIN_WORK_SIDE and len(tiles) > 10
    assert all(y0 == 0 and y1 == wh and x1 - x0 <= MAX_ASPECT * wh for y0, y1, x0, x1 in tiles)
    (wh, ww), tiles = working_plan((30000, 200))  # a tall strip: tiles down the rows
    assert ww == MIN_WORK_SIDE and all(x0 == 0 and x1 == ww for _, _, x0, x1 in tiles) and len(tiles) > 10
    assert working_plan((1688, 2560))[1] == [(0, working_size((1688, 2560))[0], 0, working_size((1688, 2560))[1])]


def test_selective_search_on_a_large_photo_gives_boxes_in_its_own_pixels():
    """A scene 8x larger than the working budget: the search runs on the small copy, and the
    rectangles come back where they are in the full-size photo."""
    k = 8
    image = cv2.resize(_scene(), None, fx=k, fy=k, interpolation=cv2.INTER_NEAREST)  # 1440 x 1920
    boxes = SelectiveSearch(ProposalMethod.SELECTIVE_SEARCH_FAST)(image)
    h, w = image.shape[:2]
    assert boxes.dtype == np.float32 and len(boxes) > 10
    assert (boxes[:, 2] <= w).all() and (boxes[:, 3] <= h).all() and (boxes >= 0).all()
    for rect in ([30, 20, 110, 80], [140, 100, 230, 170]):
        want = np.array(rect, np.float32) * k
        assert np.abs(boxes - want).max(axis=1).min() <= 2 * k, rect  # within the working copy's pixel


def test_selective_search_on_a_strip_finds_objects_in_every_tile():
    """A 120 x 6000 strip with a rectangle every 600 px: tiled, each rectangle is found where it is."""
    h, w = 120, 6000
    image = np.zeros((h, w, 3), np.uint8)
    image[:] = np.linspace(40, 90, w, dtype=np.uint8)[None, :, None]
    rects = [(x, 20, x + 90, 100) for x in range(150, w - 200, 600)]
    for i, (x1, y1, x2, y2) in enumerate(rects):
        image[y1:y2, x1:x2] = (200, 30 + 20 * (i % 5), 30)
    _, tiles = working_plan((h, w))
    assert len(tiles) > 3
    boxes = SelectiveSearch(ProposalMethod.SELECTIVE_SEARCH_SINGLE)(image)
    for rect in rects:
        assert np.abs(boxes - np.array(rect, np.float32)).max(axis=1).min() <= 6, rect


def test_the_region_count_is_bounded(monkeypatch):
    import slidewin.proposals.generators as generators

    image = _scene()
    everything = SelectiveSearch(ProposalMethod.SELECTIVE_SEARCH_FAST)(image)
    monkeypatch.setattr(generators, "MAX_REGIONS", 25)
    first = SelectiveSearch(ProposalMethod.SELECTIVE_SEARCH_FAST)(image)
    assert len(everything) > 25 and len(first) == 25
    np.testing.assert_array_equal(first, everything[:25])  # the best-ranked ones
