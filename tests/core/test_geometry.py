"""Pyramid levels, window grids and coordinate mapping: tables of hand-computed cases."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from slidewin.core.geometry import (
    letterbox_params, level_window_boxes, plan_levels, scale_windows, to_image_coords, window_starts,
)


@pytest.mark.parametrize(
    "length, window, step, expected",
    [
        (224, 224, 32, [0]),                       # exactly one window
        (100, 224, 32, [0]),                       # image smaller than the window
        (288, 224, 32, [0, 32, 64]),               # grid ends flush with the edge
        (300, 224, 32, [0, 32, 64, 76]),           # last window snapped to the edge
        (256, 224, 48, [0, 32]),                   # step larger than the slack: one step, snapped
        (240, 224, 16, [0, 16]),
        (10, 4, 3, [0, 3, 6]),
        (11, 4, 3, [0, 3, 6, 7]),
        (100, 40, 25.5, [0, 26, 51, 60]),          # fractional step rounds to whole pixels
    ],
)
def test_window_starts_table(length, window, step, expected):
    np.testing.assert_array_equal(window_starts(length, window, step), expected)


@given(st.integers(1, 3000), st.integers(1, 500), st.floats(0.5, 300))
def test_window_starts_cover_the_extent(length, window, step):
    s = window_starts(length, window, step)
    assert s.dtype == np.int64
    assert s[0] == 0 and np.all(np.diff(s) > 0)
    assert s[-1] == max(length - window, 0)
    assert np.all(np.diff(s) <= np.ceil(step))   # no gap larger than a step


@pytest.mark.parametrize("bad", [(0, 4, 1), (4, 0, 1), (4, 4, 0)])
def test_window_starts_rejects_bad_arguments(bad):
    with pytest.raises(ValueError):
        window_starts(*bad)


def test_plan_levels_square_window_on_640x480():
    # window 224 = input 224: level 0 is the image itself; each next level is 1/1.5 smaller.
    levels = plan_levels((480, 640), (224, 224), [(224, 224)], step=32, scale=1.5)

    sizes = [lv.size_hw for lv in levels]
    # 480/1.5 = 320, 640/1.5 = 426.67 -> 427; 480/2.25 = 213.3 < 224 stops the pyramid.
    assert sizes == [(480, 640), (320, 427)]
    lv0 = levels[0]
    np.testing.assert_array_equal(lv0.xs, [0, 32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416])
    np.testing.assert_array_equal(lv0.ys, [0, 32, 64, 96, 128, 160, 192, 224, 256])
    assert lv0.num_windows == 14 * 9
    np.testing.assert_array_equal(levels[1].xs, [0, 32, 64, 96, 128, 160, 192, 203])
    np.testing.assert_array_equal(levels[1].ys, [0, 32, 64, 96])


def test_plan_levels_aligned_tiles_exactly_with_the_stride():
    # 640 = 224 + 13 * 32 already; 480 = 224 + 8 * 32. Level 1: 427 -> 224 + round(203/32)*32 = 416,
    # 320 -> 224 + 3 * 32 = 320.
    levels = plan_levels((480, 640), (224, 224), [(224, 224)], step=32, scale=1.5, align=True)
    assert [lv.size_hw for lv in levels] == [(480, 640), (320, 416)]
    for lv in levels:
        assert np.all(np.diff(lv.xs) == 32) and np.all(np.diff(lv.ys) == 32)
        assert lv.xs[-1] + 224 == lv.size_hw[1] and lv.ys[-1] + 224 == lv.size_hw[0]
    assert levels[1].scale_xy == pytest.approx((416 / 640, 320 / 480))
    with pytest.raises(ValueError, match="whole-pixel step"):
        plan_levels((480, 640), (224, 224), [(224, 224)], step=17.5, align=True)


def test_plan_levels_window_smaller_than_input_upsamples():
    # A 112 px window on a 224-input classifier: the image is enlarged 2x.
    (lv,) = plan_levels((112, 112), (224, 224), [(112, 112)], step=32, scale=2.0)
    assert lv.size_hw == (224, 224) and lv.scale_xy == (2.0, 2.0)


def test_plan_levels_non_square_window_scales_axes_separately():
    # ROI 200 wide x 150 high -> fx = 224/200, fy = 224/150.
    (lv,) = plan_levels((150, 400), (224, 224), [(150, 200)], step=32, scale=1.5)
    assert lv.size_hw == (224, 448)
    assert lv.scale_xy == pytest.approx((448 / 400, 224 / 150))


def test_plan_levels_image_smaller_than_window_gives_one_window_covering_it():
    levels = plan_levels((100, 150), (224, 224), [(224, 224)], step=32, scale=1.5)
    assert len(levels) == 1
    (lv,) = levels
    assert lv.size_hw == (224, 224) and lv.num_windows == 1
    boxes = to_image_coords(level_window_boxes(lv, (224, 224)), lv.scale_xy, (100, 150))
    np.testing.assert_allclose(boxes, [[0, 0, 150, 100]], atol=1e-4)


def test_level_boxes_map_back_to_original_pixels():
    (lv, *_) = plan_levels((480, 640), (224, 224), [(224, 224)], step=32, scale=1.5)
    boxes = level_window_boxes(lv, (224, 224))
    assert boxes.shape == (lv.num_windows, 4)
    np.testing.assert_array_equal(boxes[0], [0, 0, 224, 224])
    np.testing.assert_array_equal(boxes[-1], [416, 256, 640, 480])   # snapped to both edges
    # Row-major: the second box moves along x.
    np.testing.assert_array_equal(boxes[1], [32, 0, 256, 224])


@pytest.mark.parametrize(
    "xyxy, scale_xy, image_hw, expected",
    [
        ([[0, 0, 224, 224]], (0.5, 0.5), (480, 640), [[0, 0, 448, 448]]),
        ([[10, 20, 30, 40]], (2.0, 4.0), (100, 100), [[5, 5, 15, 10]]),
        ([[200, 100, 300, 300]], (1.0, 1.0), (250, 250), [[200, 100, 250, 250]]),   # clipped
    ],
)
def test_to_image_coords_table(xyxy, scale_xy, image_hw, expected):
    np.testing.assert_allclose(to_image_coords(np.array(xyxy, float), scale_xy, image_hw), expected)


@pytest.mark.parametrize(
    "image_hw, canvas_hw, expected",
    [
        ((480, 640), (800, 800), (1.25, 0, 100)),     # wide: fills the width, padded top/bottom
        ((640, 480), (800, 800), (1.25, 100, 0)),     # tall
        ((100, 100), (800, 800), (8.0, 0, 0)),        # square, enlarged
        ((1000, 2000), (512, 512), (0.256, 0, 128)),
    ],
)
def test_letterbox_params_table(image_hw, canvas_hw, expected):
    s, px, py = letterbox_params(image_hw, canvas_hw)
    assert (s, px, py) == pytest.approx(expected)


@pytest.mark.parametrize(
    "image_hw, reference, expected",
    [
        ((480, 640), 1024, [(150, 200), (75, 100)]),      # smaller than the reference: pixels as given
        ((768, 1024), 1024, [(150, 200), (75, 100)]),     # exactly the reference
        ((1536, 2048), 1024, [(300, 400), (150, 200)]),   # twice as large: windows twice as large
        ((3000, 4000), 1024, [(586, 781), (293, 391)]),   # 4000 / 1024 = 3.906...
        ((4000, 3000), 1024, [(586, 781), (293, 391)]),   # the longer side counts, portrait too
        ((3000, 4000), None, [(150, 200), (75, 100)]),    # None: absolute pixels
    ],
)
def test_scale_windows_table(image_hw, reference, expected):
    assert scale_windows([(150, 200), (75, 100)], image_hw, reference) == expected


def test_scaled_windows_search_a_big_photo_like_a_small_one():
    small = plan_levels((768, 1024), (224, 224), scale_windows([(150, 200)], (768, 1024), 1024), 32, align=True)
    big_hw = (3072, 4096)
    big = plan_levels(big_hw, (224, 224), scale_windows([(150, 200)], big_hw, 1024), 32, align=True)
    assert [lv.size_hw for lv in big] == [lv.size_hw for lv in small]   # the same levels ...
    absolute = plan_levels(big_hw, (224, 224), [(150, 200)], 32, align=True)
    count = lambda levels: sum(len(lv.xs) * len(lv.ys) for lv in levels)  # noqa: E731
    assert count(absolute) > 10 * count(big)                             # ... not 16x the windows


@given(st.integers(1, 4000), st.integers(1, 600), st.floats(0.25, 400))
def test_window_starts_equal_the_sorted_unique_grid(length, window, step):
    """The deduplication of neighbours gives what np.unique gave (identical windows, issue 14)."""
    last = length - window
    want = np.zeros(1, np.int64)
    if last > 0:
        grid = np.round(np.arange(0.0, last + 1e-9, step)).astype(np.int64)
        want = np.unique(grid[grid <= last])
        if want[-1] != last:
            want = np.append(want, last)
    np.testing.assert_array_equal(window_starts(length, window, step), want)
