"""Image loading: every kind of bad input is one ImageError naming the file and the problem."""

from pathlib import Path

import cv2
import numpy as np
import pytest

from slidewin.errors import ImageError
from slidewin.io.images import decode_image, load_image


def write(path: Path, array: np.ndarray) -> Path:
    assert cv2.imwrite(str(path), array)
    return path


@pytest.fixture
def rgb_jpeg(tmp_path):
    img = np.zeros((40, 60, 3), np.uint8)
    img[:, :, 2] = 200     # BGR red
    return write(tmp_path / "red.jpg", img)


def test_loads_rgb_in_rgb_order(rgb_jpeg):
    img = load_image(rgb_jpeg)
    assert img.shape == (40, 60, 3) and img.dtype == np.uint8 and img.flags.c_contiguous
    assert img[..., 0].mean() > 190 and img[..., 2].mean() < 10


def bad_files(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    good = cv2.imencode(".jpg", np.full((64, 64, 3), 128, np.uint8))[1].tobytes()
    cases = {
        "missing": (tmp_path / "nope.jpg", "no such file"),
        "empty": (tmp_path / "empty.jpg", "empty file"),
        "text": (tmp_path / "notes.jpg", "not an image"),
        "truncated": (tmp_path / "cut.jpg", "truncated"),
        "grayscale": (write(tmp_path / "gray.png", np.zeros((8, 8), np.uint8)), "grayscale"),
        "rgba": (write(tmp_path / "rgba.png", np.zeros((8, 8, 4), np.uint8)), "alpha"),
        "16-bit": (write(tmp_path / "deep.png", np.zeros((8, 8, 3), np.uint16)), "16-bit"),
        "directory": (tmp_path, "directory"),
    }
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "notes.jpg").write_bytes(b"this is not an image\n" * 20)
    (tmp_path / "cut.jpg").write_bytes(good[: len(good) - 40])
    return cases


@pytest.mark.parametrize("case", ["missing", "empty", "text", "truncated", "grayscale", "rgba", "16-bit", "directory"])
def test_bad_input_is_one_line_naming_the_file(tmp_path, case):
    path, problem = bad_files(tmp_path)[case]
    with pytest.raises(ImageError) as info:
        load_image(path)
    msg = str(info.value)
    assert "\n" not in msg
    assert str(path) in msg and problem in msg


@pytest.mark.parametrize("case, shape", [("grayscale", (8, 8, 3)), ("rgba", (8, 8, 3)), ("16-bit", (8, 8, 3))])
def test_convert_turns_odd_images_into_rgb8(tmp_path, case, shape):
    path, _ = bad_files(tmp_path)[case]
    img = load_image(path, convert=True)
    assert img.shape == shape and img.dtype == np.uint8


def test_16bit_conversion_keeps_the_high_byte(tmp_path):
    deep = np.full((4, 4, 3), 0xAB12, np.uint16)
    assert load_image(write(tmp_path / "d.png", deep), convert=True)[0, 0, 0] == 0xAB


def test_declared_size_guard_refuses_bombs_before_decoding(tmp_path):
    # A PNG header that claims 100000 x 100000 pixels.
    img = write(tmp_path / "small.png", np.zeros((4, 4, 3), np.uint8)).read_bytes()
    bomb = img[:16] + (100000).to_bytes(4, "big") * 2 + img[24:]
    with pytest.raises(ImageError, match=r"too large: 100000x100000"):
        decode_image(bomb, "bomb.png")
    with pytest.raises(ImageError, match="exceeds --max-pixels 100"):
        load_image(write(tmp_path / "x.jpg", np.zeros((20, 20, 3), np.uint8)), max_pixels=100)


def test_exif_orientation_is_honoured(tmp_path):
    """A 20x10 (w x h) JPEG tagged 'rotate 90 CW' (orientation 6) loads as 10x20."""
    jpeg = cv2.imencode(".jpg", np.zeros((10, 20, 3), np.uint8))[1].tobytes()
    # Minimal APP1 Exif segment, big-endian TIFF with one IFD entry: Orientation (0x0112) = 6.
    tiff = b"MM\x00\x2a\x00\x00\x00\x08" + b"\x00\x01" + b"\x01\x12\x00\x03\x00\x00\x00\x01\x00\x06\x00\x00" + b"\x00\x00\x00\x00"
    payload = b"Exif\x00\x00" + tiff
    app1 = b"\xff\xe1" + (len(payload) + 2).to_bytes(2, "big") + payload
    path = tmp_path / "rotated.jpg"
    path.write_bytes(jpeg[:2] + app1 + jpeg[2:])
    assert load_image(path).shape == (20, 10, 3)
