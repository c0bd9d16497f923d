"""Preprocessing as data: the presets compute what Keras and torchvision compute, by hand-made cases."""

import numpy as np
import pytest

from slidewin.core.preprocessing import PRESETS, Preprocessing, preset

PIXEL = np.array([[[[0, 128, 255]]]], np.uint8)  # one RGB pixel, (1, 1, 1, 3)


@pytest.mark.parametrize("name, expected", [
    ("caffe", [255 - 103.939, 128 - 116.779, 0 - 123.68]),             # BGR, mean subtracted
    ("tf", [0 / 127.5 - 1, 128 / 127.5 - 1, 255 / 127.5 - 1]),         # [-1, 1]
    ("torch", [(0 - 0.485) / 0.229, (128 / 255 - 0.456) / 0.224, (1 - 0.406) / 0.225]),
    ("raw", [0, 128, 255]),
    ("unit", [0, 128 / 255, 1]),
])
def test_presets_compute_the_named_convention(name, expected):
    out = preset(name).apply(PIXEL)
    assert out.dtype == np.float32 and out.shape == (1, 1, 1, 3)
    np.testing.assert_allclose(out[0, 0, 0], expected, rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("p", list(PRESETS.values()) + [Preprocessing("custom", 0.5, (1, 2, 3), (4, 5, 6), bgr=True)])
def test_the_metadata_record_round_trips(p):
    assert Preprocessing.from_json(p.to_json()) == p


@pytest.mark.parametrize("text", ["", "{}", '{"name": "x"}', '{"name": "x", "scale": "a", "mean": [0,0,0], "std": [1,1,1], "bgr": false}',
                                  '{"name": "x", "scale": 1, "mean": [0,0], "std": [1,1,1], "bgr": false}',
                                  '{"name": "x", "scale": 1, "mean": [0,0,0], "std": [0,1,1], "bgr": false}'])
def test_a_malformed_record_is_a_value_error(text):
    with pytest.raises(ValueError):
        Preprocessing.from_json(text)


def test_an_unknown_preset_lists_the_presets():
    with pytest.raises(ValueError, match="caffe, tf, torch, raw, unit"):
        preset("keras")


def test_descriptions_are_short_and_readable():
    assert preset("tf").describe() == "tf (RGB x/127.5 mean 1,1,1)"
    assert preset("caffe").describe() == "caffe (BGR mean 103.939,116.779,123.68)"
    assert preset("raw").is_identity and not preset("unit").is_identity
