"""Reading images, with one-line errors for everything that is not an 8-bit RGB photo.

slidewin's models take 8-bit RGB. Grayscale, images with alpha and 16-bit images are refused by
default with a message that says so; ``convert=True`` (CLI ``--convert``) turns them into 8-bit
RGB instead. Dimensions are read from the header before decoding, so a decompression bomb is
refused without allocating it.
"""

from __future__ import annotations

import struct
from pathlib import Path

import cv2
import numpy as np

from slidewin.errors import ImageError

#: Default limit on width * height; 20000 x 20000 images fit, decompression bombs do not.
DEFAULT_MAX_PIXELS = 400_000_000

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")

_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _declared_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG or JPEG header without decoding, or None if unknown."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        return struct.unpack(">II", data[16:24])
    if data[:2] == b"\xff\xd8":
        i = 2
        while i + 9 < len(data):
            if data[i] != 0xFF:
                return None
            marker = data[i + 1]
            if marker == 0xFF:  # fill byte
                i += 1
                continue
            seg_len = struct.unpack(">H", data[i + 2:i + 4])[0]
            if marker in _JPEG_SOF:
                h, w = struct.unpack(">HH", data[i + 5:i + 9])
                return w, h
            i += 2 + seg_len
    return None


def _to_rgb8(img: np.ndarray, path: str, convert: bool) -> np.ndarray:
    """Decoded OpenCV image (BGR/BGRA/gray, 8 or 16 bit) -> contiguous uint8 RGB."""
    channels = 1 if img.ndim == 2 else img.shape[2]
    problems = []
    if img.dtype != np.uint8:
        problems.append(f"{img.dtype.itemsize * 8}-bit")
    if channels == 1:
        problems.append("grayscale")
    elif channels == 4:
        problems.append("has an alpha channel")
    elif channels != 3:
        raise ImageError(f"unsupported image: {channels} channels (expected RGB)", path)
    if problems and not convert:
        raise ImageError(
            f"unsupported image: {' and '.join(problems)} (slidewin expects 8-bit RGB; "
            "pass --convert to convert it)",
            path,
        )
    if img.dtype == np.uint16:
        img = (img >> 8).astype(np.uint8)
    elif img.dtype != np.uint8:
        raise ImageError(f"unsupported pixel type {img.dtype}", path)
    code = {1: cv2.COLOR_GRAY2RGB, 3: cv2.COLOR_BGR2RGB, 4: cv2.COLOR_BGRA2RGB}[channels]
    return np.ascontiguousarray(cv2.cvtColor(img, code))


def decode_image(
    data: bytes, path: str | Path = "<bytes>", convert: bool = False, max_pixels: int = DEFAULT_MAX_PIXELS
) -> np.ndarray:
    """Decode encoded image bytes to uint8 RGB (H, W, 3), EXIF orientation applied for JPEG.

    Raises:
        ImageError: empty, truncated, not an image, too large, or not 8-bit RGB (unless
            ``convert``).
    """
    path = str(path)
    if not data:
        raise ImageError("empty file (0 bytes)", path)
    size = _declared_size(data)
    if size is not None and size[0] * size[1] > max_pixels:
        raise ImageError(
            f"image too large: {size[0]}x{size[1]} = {size[0] * size[1]:,} pixels exceeds "
            f"--max-pixels {max_pixels:,}",
            path,
        )
    buf = np.frombuffer(data, np.uint8)
    is_jpeg = data[:2] == b"\xff\xd8"
    if is_jpeg and data.rstrip(b"\x00\r\n ")[-2:] != b"\xff\xd9":
        raise ImageError("truncated JPEG (no end-of-image marker)", path)
    # JPEG: ANYCOLOR keeps grayscale visible and applies EXIF orientation (JPEG has no alpha).
    # Others: UNCHANGED keeps alpha and 16-bit so that they can be reported.
    flags = cv2.IMREAD_ANYCOLOR | cv2.IMREAD_ANYDEPTH if is_jpeg else cv2.IMREAD_UNCHANGED
    try:
        img = cv2.imdecode(buf, flags)
    except cv2.error as e:
        raise ImageError(f"cannot decode image ({str(e).strip().splitlines()[-1]})", path) from None
    if img is None:
        kind = "truncated or corrupt image" if size is not None else "not an image (or an unsupported format)"
        raise ImageError(kind, path)
    if img.shape[0] * img.shape[1] > max_pixels:
        raise ImageError(f"image too large: {img.shape[1]}x{img.shape[0]} exceeds --max-pixels {max_pixels:,}", path)
    return _to_rgb8(img, path, convert)


def load_image(path: str | Path, convert: bool = False, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read an image file as uint8 RGB (H, W, 3).

    Args:
        path: image file.
        convert: convert grayscale, alpha and 16-bit images to 8-bit RGB instead of refusing them.
        max_pixels: refuse images with more pixels than this (checked before decoding where the
            header allows).

    Raises:
        ImageError: with a one-line message naming the file and the problem.
    """
    p = Path(path)
    if not p.exists():
        raise ImageError("no such file", p)
    if p.is_dir():
        raise ImageError("is a directory, not an image", p)
    try:
        data = p.read_bytes()
    except OSError as e:
        raise ImageError(f"cannot read file ({e.strerror})", p) from None
    return decode_image(data, p, convert=convert, max_pixels=max_pixels)


def save_image(path: str | Path, rgb: np.ndarray, quality: int = 92) -> None:
    """Write a uint8 RGB image (format from the suffix)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    suffix = p.suffix.lower() or ".jpg"
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if suffix in (".jpg", ".jpeg") else []
    try:
        ok, buf = cv2.imencode(suffix, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params)
    except cv2.error:
        ok = False
    if not ok:
        raise ImageError(f"cannot write an image with suffix {suffix!r} (use .jpg or .png)", p)
    p.write_bytes(buf.tobytes())
