"""Reading images, with one-line errors for everything that is not an 8-bit RGB photo.

slidewin's models take 8-bit RGB. Grayscale, images with alpha and 16-bit images are refused by
default with a message that says so; ``convert=True`` (CLI ``--convert``) turns them into 8-bit
RGB instead. Dimensions are read from the header before decoding (JPEG, PNG, BMP, GIF, WebP,
TIFF, PNM), so a decompression bomb is refused without allocating it. A PNG's chunks are checked
(lengths, critical CRCs, IEND) and a JPEG's end marker before the codec sees them: truncated
files get a clear message instead of libpng/libjpeg noise on stderr.
"""

from __future__ import annotations

import os
import re
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np

from slidewin.errors import ImageError

if "OPENCV_LOG_LEVEL" not in os.environ:
    # Decoding failures are reported here, one line per file; OpenCV's own "[ERROR] imdecode_ ..."
    # log lines would only repeat them (set OPENCV_LOG_LEVEL to see them again).
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_FATAL)

#: Default limit on width * height; 20000 x 20000 images fit, decompression bombs do not.
DEFAULT_MAX_PIXELS = 400_000_000

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")

_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
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


def _tiff_size(data: bytes) -> tuple[int, int] | None:
    """ImageWidth and ImageLength of the first IFD (classic TIFF, either byte order)."""
    e = "<" if data[:2] == b"II" else ">"
    off = struct.unpack(e + "I", data[4:8])[0]
    if off + 2 > len(data):
        return None
    size = {}
    for k in range(struct.unpack(e + "H", data[off:off + 2])[0]):
        p = off + 2 + 12 * k
        if p + 12 > len(data):
            break
        tag, typ = struct.unpack(e + "HH", data[p:p + 4])
        if tag in (256, 257) and typ in (3, 4):
            size[tag] = struct.unpack(e + ("H" if typ == 3 else "I"), data[p + 8:p + (10 if typ == 3 else 12)])[0]
    return (size[256], size[257]) if len(size) == 2 else None


def _webp_size(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8X":
        return 1 + int.from_bytes(data[24:27], "little"), 1 + int.from_bytes(data[27:30], "little")
    if chunk == b"VP8L" and data[20] == 0x2F:
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8 " and data[23:26] == b"\x9d\x01\x2a":
        return int.from_bytes(data[26:28], "little") & 0x3FFF, int.from_bytes(data[28:30], "little") & 0x3FFF
    return None


def _pnm_size(data: bytes) -> tuple[int, int] | None:
    head = re.sub(rb"#[^\n]*", b" ", data[:4096]).split()
    try:
        return int(head[1]), int(head[2])
    except (IndexError, ValueError):
        return None


def _declared_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the header of a JPEG, PNG, BMP, GIF, WebP, TIFF or PNM without
    decoding; None if the format is another one or the header is cut short."""
    try:
        if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
            return struct.unpack(">II", data[16:24])
        if data[:2] == b"\xff\xd8":
            return _jpeg_size(data)
        if data[:2] == b"BM" and len(data) >= 26:
            dib = struct.unpack("<I", data[14:18])[0]
            if dib == 12:
                return struct.unpack("<HH", data[18:22])
            w, h = struct.unpack("<ii", data[18:26])
            return abs(w), abs(h)
        if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
            return struct.unpack("<HH", data[6:10])
        if data[:4] == b"RIFF" and data[8:12] == b"WEBP" and len(data) >= 30:
            return _webp_size(data)
        if data[:4] in (b"II*\x00", b"MM\x00*") and len(data) >= 8:
            return _tiff_size(data)
        if len(data) >= 3 and data[:1] == b"P" and data[1:2] in b"123456" and data[2:3].isspace():
            return _pnm_size(data)
    except struct.error:  # a header cut short
        return None
    return None


def _check_png(data: bytes, path: str) -> None:
    """Walk a PNG's chunks: each must fit in the file, critical ones must pass their CRC, and
    IEND must come. libpng would fail on the same files, printing to stderr as it does."""
    view = memoryview(data)
    i = 8
    while True:
        if i + 8 > len(data):
            raise ImageError("truncated PNG (no IEND chunk)", path)
        length = int.from_bytes(data[i:i + 4], "big")
        ctype = bytes(data[i + 4:i + 8])
        name = ctype.decode("latin-1") if ctype.isalpha() else repr(ctype)[2:-1]
        end = i + 12 + length
        if end > len(data):
            raise ImageError(f"truncated PNG (cut inside a {name} chunk)", path)
        if ctype[:1].isupper() and zlib.crc32(view[i + 4:end - 4]) != int.from_bytes(data[end - 4:end], "big"):
            raise ImageError(f"corrupt PNG (CRC mismatch in a {name} chunk)", path)
        if ctype == b"IEND":
            return
        i = end


def probe_size(path: str | Path, header_bytes: int = 1 << 16) -> tuple[int, int] | None:
    """(width, height) of an image file from its first bytes, without decoding; None if unknown.

    Cheap enough to call ahead of decoding (e.g. to budget memory); TIFF files whose first IFD
    lies past ``header_bytes`` and exotic formats give None.
    """
    try:
        with open(path, "rb") as f:
            return _declared_size(f.read(header_bytes))
    except OSError:
        return None


def _bgr_to_rgb_in_place(img: np.ndarray) -> np.ndarray:
    """Swap B and R of a C-contiguous uint8 (H, W, 3) array in ~16 MB row blocks: converting a
    20000 x 20000 photo must not hold a second 1.2 GB copy of it."""
    rows = max(1, (16 << 20) // (img.shape[1] * 3))
    for y in range(0, img.shape[0], rows):
        block = img[y:y + rows]
        cv2.cvtColor(block, cv2.COLOR_BGR2RGB, dst=block)
    return img


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
    if channels == 3 and img.flags.c_contiguous and img.flags.writeable:
        return _bgr_to_rgb_in_place(img)
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
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        _check_png(data, path)
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
