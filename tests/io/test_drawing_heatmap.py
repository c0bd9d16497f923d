"""Heat maps drawn over a photo: geometry of a level's cells in image pixels, the blend, the legend."""

from __future__ import annotations

import numpy as np
import pytest

from slidewin.apps.heatmap import Heat, LevelHeat, _cell_map, _centres
from slidewin.io.drawing import color_for
from slidewin.io.heatmap import EDGE, FLOOR, PHOTO_BRIGHTNESS, draw_heatmap


@pytest.mark.parametrize("scale, first, window, stride, want", [
    # window c covers level pixels [2c, 2c + 4): centre 2c + 2, so image pixel x (centre x + 0.5) = 2c + 1.5
    (1.0, 0, 4, 2, (0.5, -0.75)),
    # a level half the image's size: (x + 0.5) / 2 = 2c + 2, x = 4c + 3.5
    (0.5, 0, 4, 2, (0.25, -0.875)),
    # the first window starting at 8: (x + 0.5) = 8 + 2c + 2, x = 2c + 9.5
    (1.0, 8, 4, 2, (0.5, -4.75)),
])
def test_a_cell_sits_at_its_window_centre(scale, first, window, stride, want):
    a, b = _cell_map(scale, first, window, stride)
    assert (a, b) == pytest.approx(want)
    first_centre, _, sigma = _centres(scale, np.array([first, first + stride]), window)
    assert a * first_centre + b == pytest.approx(0)  # the first centre is cell 0
    assert sigma == pytest.approx(window / scale / 3)


def one_level(scores, hw, window=4, stride=2, scale=1.0):
    """A `Heat` of one level whose windows start at 0 and step by ``stride``."""
    scores = np.asarray(scores, np.float32)
    rows, cols, t = scores.shape
    level = LevelHeat(scores, _cell_map(scale, 0, window, stride), _cell_map(scale, 0, window, stride),
                      _centres(scale, np.arange(cols) * stride, window), _centres(scale, np.arange(rows) * stride, window))
    return Heat(hw, tuple(range(t)), tuple(f"class {i}" for i in range(t)), scores.reshape(-1, t).max(0), [level])


def test_heat_at_window_centres_is_the_cell_and_linear_between():
    # 3 x 3 cells of windows 4 px wide stepping by 2 over an 8 x 8 image: centres at pixels 1.5, 3.5, 5.5
    scores = np.arange(9, dtype=np.float32).reshape(3, 3, 1) / 10
    heat = one_level(scores, (8, 8)).rows(0, 8)[..., 0]
    # pixels 3 and 4 lie 0.5 either side of the middle centre, 3.5: on a linear map their mean is its cell
    assert heat[3:5, 3:5].mean() == pytest.approx(scores[1, 1, 0])
    assert heat[4, 3] == pytest.approx((heat[4, 2] + heat[4, 4]) / 2)  # linear between centres
    # past the outermost centres the heat fades (pixel 7 is 1.5 px past the last centre, sigma 4/3)
    assert heat[6, 7] < heat[6, 6] * 0.8


def test_the_levels_combine_by_their_maximum():
    a = one_level(np.full((3, 3, 1), 0.2), (8, 8))
    b = one_level(np.full((3, 3, 1), 0.7), (8, 8))
    both = Heat((8, 8), (0,), ("x",), np.float32([0.7]), a.levels + b.levels)
    assert np.allclose(both.rows(0, 8), np.maximum(a.rows(0, 8), b.rows(0, 8)))
    assert both.rows(3, 5)[:, 2:6, 0] == pytest.approx(np.full((2, 4), 0.7))  # between the centres: no fading


def test_a_level_of_one_window_is_one_blob_around_its_centre():
    heat = one_level(np.full((1, 1, 1), 0.9), (40, 40), window=20).rows(0, 40)[..., 0]
    assert heat[9:11, 9:11] == pytest.approx(np.full((2, 2), 0.9), rel=0.01)  # its centre, at pixel 9.5
    assert heat[39, 39] < 0.01 < heat[20, 20] < heat[15, 15] < 0.9


def test_the_picture_paints_each_class_where_it_is_hot_and_keeps_the_photo():
    rng = np.random.default_rng(0)
    h, w = 120, 160
    photo = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    # class 0 hot in the left columns of cells, class 1 in the right ones, nothing in the middle
    scores = np.zeros((5, 7, 2), np.float32)
    scores[:, :2, 0] = 1.0
    scores[:, 5:, 1] = 1.0
    heat = one_level(scores, (h, w), window=40, stride=20)
    pic = draw_heatmap(photo, heat)
    assert pic.shape == photo.shape and pic.dtype == np.uint8
    below = np.s_[80:, :]  # below the legend
    left, right, middle = pic[below][:, 20:40].astype(float), pic[below][:, 120:140].astype(float), pic[below][:, 70:90]
    dist = lambda px, c: np.linalg.norm(px - np.float32(c), axis=-1).mean()  # noqa: E731
    assert dist(left, color_for(0)) < dist(left, color_for(1)) and dist(right, color_for(1)) < dist(right, color_for(0))
    # where nothing is hot the photo shows through, dimmed, and still correlates with the original
    grey = photo[below][:, 70:90].astype(float) @ [0.2126, 0.7152, 0.0722]
    shown = middle.astype(float) @ [0.2126, 0.7152, 0.0722]
    assert heat.rows(80, h)[:, 70:90].max() < FLOOR
    assert np.corrcoef(grey.ravel(), shown.ravel())[0, 1] > 0.99
    assert shown.mean() == pytest.approx(PHOTO_BRIGHTNESS * grey.mean(), rel=0.05)
    # the legend: top left, a swatch in each class's colour on a darkened box
    assert (pic[:40, :120] == np.uint8(color_for(0))).all(-1).any()
    assert (pic[:40, :120] == np.uint8(color_for(1))).all(-1).any()


def test_the_picture_is_the_same_drawn_in_bands_and_has_the_edge_line():
    photo = np.full((90, 70, 3), 128, np.uint8)
    scores = np.zeros((4, 3, 1), np.float32)
    scores[2:, :, 0] = 0.9
    heat = one_level(scores, (90, 70), window=30, stride=20)
    whole = draw_heatmap(photo, heat)
    assert (draw_heatmap(photo, heat, band_pixels=70 * 7) == whole).all()  # bands of 7 rows
    hot = heat.rows(0, 90)[..., 0]
    crossing = np.nonzero((hot[1:, 35] >= EDGE) & (hot[:-1, 35] < EDGE))[0][0] + 1
    assert tuple(whole[crossing, 35]) == color_for(0)  # the line where the heat crosses EDGE, opaque


def test_heat_of_another_image_size_is_refused():
    heat = one_level(np.zeros((2, 2, 1)), (10, 10))
    with pytest.raises(ValueError, match="10x10"):
        draw_heatmap(np.zeros((12, 10, 3), np.uint8), heat)
