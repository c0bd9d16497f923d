"""Reading images, with one-line errors for everything that is not an 8-bit RGB photo.

slidewin's models take 8-bit RGB. Grayscale, images with alpha and 16-bit images are refused by
default with a message that says so; ``convert=True`` (CLI ``--convert``) turns them into 8-bit
RGB instead.

Memory follows the image, never the file. `load_image` looks at a path with ``stat`` first (only
regular files are opened: FIFOs, devices and directories are refused unopened), reads the first
bytes, and judges the header from them (`slidewin.io.formats`: the format from the content, its
declared size, formats it cannot check refused) before the rest of the file is read:

- an image over ``max_pixels`` is refused, and so is a header that claims far more pixels than a
  file of its size could describe (a bomb, or a corrupt file);
- a file far larger than its declared image could need is refused unread;
- a PNG's chunks are checked (lengths, critical CRCs, IEND) and a JPEG must have an end-of-image
  marker (bytes after it, as some phones write, are fine);
- what libjpeg and libpng print about corrupt data while decoding is captured
  (`slidewin.io.stderr`): corrupt data is an `ImageError` naming the file, a mere warning is a
  note the caller may collect (``notes``), nothing reaches the terminal unlabelled.

EXIF orientation is applied for every format that carries it: by the decoder for JPEG and TIFF,
here for PNG (eXIf chunk) and WebP (EXIF chunk), so boxes are in the orientation viewers show.
"""

from __future__ import annotations

import os
import stat
import zlib
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from slidewin.errors import ImageError
from slidewin.io.formats import SUFFIXES, Header, HeaderError, ImageFormat, NeedMoreBytes, jpeg_has_end, read_header
from slidewin.io.stderr import captured_stderr

if "OPENCV_LOG_LEVEL" not in os.environ:
    # Decoding failures are reported here, one line per file; OpenCV's own "[ERROR] imdecode_ ..."
    # log lines would only repeat them (set OPENCV_LOG_LEVEL to see them again).
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_FATAL)

#: Default limit on width * height; 20000 x 20000 images fit, decompression bombs do not.
DEFAULT_MAX_PIXELS = 400_000_000

#: The suffixes a folder walk takes: every format slidewin decodes (see `slidewin.io.formats`).
IMAGE_SUFFIXES = tuple(s for suffixes in SUFFIXES.values() for s in suffixes)

#: The header is judged from this many first bytes (more are read only when it runs past them).
HEAD_BYTES = 1 << 20
#: A file may hold at most this many bytes per declared pixel (16-bit RGBA, uncompressed) ...
_BYTES_PER_PIXEL = 8
#: ... plus this much metadata (ICC profiles, EXIF thumbnails, XMP, further pages).
_METADATA_BYTES = 64 << 20

# What libjpeg and libpng print that does not mean lost pixels: the image was decoded whole.
_HARMLESS = ("warning", "extraneous bytes before marker 0xd9")

_FILE_KINDS = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
               (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def max_file_bytes(pixels: int) -> int:
    """The most bytes an image file of ``pixels`` pixels may hold (raw 16-bit RGBA plus metadata)."""
    return pixels * _BYTES_PER_PIXEL + _METADATA_BYTES


def _too_large(size: tuple[int, int], max_pixels: int) -> str:
    w, h = size
    return f"image too large: {w}x{h} = {w * h:,} pixels exceeds --max-pixels {max_pixels:,}"


def check_header(header: Header, file_bytes: int, max_pixels: int) -> None:
    """Refuse what a header declares before anything is decoded.

    Args:
        header: the declared format and size.
        file_bytes: bytes of the image: the file's size, or (once read) ``header.coded_bytes``.
        max_pixels: the most pixels allowed.

    Raises:
        HeaderError: too many pixels, more pixels than ``file_bytes`` could describe, or more
            bytes than the declared image could need.
    """
    fmt, pixels = header.format.value, header.pixels
    if pixels > max_pixels:
        raise HeaderError(_too_large((header.width, header.height), max_pixels))
    if pixels > file_bytes * header.max_pixels_per_byte:
        raise HeaderError(
            f"header claims {header.width}x{header.height} = {pixels:,} pixels in {file_bytes:,} bytes, far more "
            f"than a {fmt} file that size can hold (at most {header.max_pixels_per_byte:,} pixels per byte): "
            "corrupt or a decompression bomb")
    if file_bytes > max_file_bytes(pixels):
        raise HeaderError(f"{file_bytes:,} bytes is far more than a {header.width}x{header.height} {fmt} image "
                          f"needs (at most {max_file_bytes(pixels):,})")


def _header(data: bytes, path: str, max_pixels: int, file_bytes: int | None = None) -> Header:
    """`read_header` and `check_header` of a whole file's bytes, as one-line ImageErrors."""
    try:
        header = read_header(data)
        check_header(header, header.coded_bytes if file_bytes is None else file_bytes, max_pixels)
    except NeedMoreBytes as e:
        raise ImageError(f"truncated image ({e})", path) from None
    except HeaderError as e:
        raise ImageError(str(e), path) from None
    return header


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


def _check_png(data: bytes, path: str) -> None:
    """Walk a PNG's chunks: each must fit in the file, critical ones must pass their CRC, and
    IEND must come. libpng would fail on the same files, after allocating the image."""
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


def _check_structure(data: bytes, header: Header, path: str) -> None:
    """Structural checks a codec would only make after allocating the image."""
    if header.format is ImageFormat.JPEG and not jpeg_has_end(data):
        raise ImageError("truncated JPEG (no end-of-image marker)", path)
    if header.format is ImageFormat.PNG:
        _check_png(data, path)


#: cv2.rotate / cv2.flip steps that turn a stored image into what a viewer shows, per EXIF orientation.
_ORIENT = {2: [("flip", 1)], 3: [("rotate", cv2.ROTATE_180)], 4: [("flip", 0)],
           5: [("rotate", cv2.ROTATE_90_CLOCKWISE), ("flip", 1)], 6: [("rotate", cv2.ROTATE_90_CLOCKWISE)],
           7: [("rotate", cv2.ROTATE_90_COUNTERCLOCKWISE), ("flip", 1)], 8: [("rotate", cv2.ROTATE_90_COUNTERCLOCKWISE)]}


def apply_orientation(img: np.ndarray, orientation: int) -> np.ndarray:
    """An image as a viewer shows it, given its EXIF orientation (1-8; 1 = as stored)."""
    for op, arg in _ORIENT.get(orientation, []):
        img = cv2.rotate(img, arg) if op == "rotate" else cv2.flip(img, arg)
    return img


def _judge_messages(messages: list[str], img, header: Header, path: str, notes: list[str] | None):
    """Decoder messages: corrupt data is an ImageError; warnings become notes."""
    fmt = header.format.value
    bad = [m for m in messages if not any(h in m.lower() for h in _HARMLESS)]
    if img is None:
        detail = f" ({(bad or messages)[0][:200]})" if messages else ""
        raise ImageError(f"truncated or corrupt {fmt} image{detail}", path)
    if bad:
        raise ImageError(f"corrupt {fmt} image: the decoder reports '{bad[0][:200]}'", path)
    if notes is not None:
        notes.extend(m[:200] for m in messages)


def _decode(data: bytes, header: Header, path: str, notes: list[str] | None) -> np.ndarray:
    # JPEG: ANYCOLOR keeps grayscale visible and applies EXIF orientation (JPEG has no alpha).
    # Others: UNCHANGED keeps alpha and 16-bit so that they can be reported (libtiff orients
    # TIFF itself; PNG and WebP are oriented below).
    jpeg = header.format is ImageFormat.JPEG
    flags = cv2.IMREAD_ANYCOLOR | cv2.IMREAD_ANYDEPTH if jpeg else cv2.IMREAD_UNCHANGED
    with captured_stderr() as messages:
        try:
            img = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
        except cv2.error as e:
            raise ImageError(f"cannot decode image ({str(e).strip().splitlines()[-1]})", path) from None
    _judge_messages(messages, img, header, path, notes)
    return apply_orientation(img, header.orientation)


def decode_image(data: bytes, path: str | Path = "<bytes>", convert: bool = False,
                 max_pixels: int = DEFAULT_MAX_PIXELS, notes: list[str] | None = None) -> np.ndarray:
    """Decode encoded image bytes to uint8 RGB (H, W, 3), in the orientation viewers show.

    Args:
        data: the encoded file.
        path: what error messages name.
        convert: convert grayscale, alpha and 16-bit images to 8-bit RGB instead of refusing them.
        max_pixels: refuse images with more pixels than this, from the header, before decoding.
        notes: if given, the decoder's harmless warnings about this image are appended to it.

    Raises:
        ImageError: empty, truncated, corrupt, not an image, a format slidewin does not read,
            too large, or not 8-bit RGB (unless ``convert``).
    """
    path = str(path)
    if not data:
        raise ImageError("empty file (0 bytes)", path)
    header = _header(data, path, max_pixels)
    _check_structure(data, header, path)
    img = _decode(data, header, path, notes)
    if img.shape[0] * img.shape[1] > max_pixels:
        raise ImageError(_too_large((img.shape[1], img.shape[0]), max_pixels), path)
    return _to_rgb8(img, path, convert)


def _regular_file_size(p: Path) -> int:
    """The size of a regular file, judged with ``stat`` alone (nothing is opened)."""
    try:
        st = os.stat(p)
    except FileNotFoundError:
        raise ImageError("no such file", p) from None
    except OSError as e:
        raise ImageError(f"cannot read file ({e.strerror})", p) from None
    if stat.S_ISDIR(st.st_mode):
        raise ImageError("is a directory, not an image", p)
    if not stat.S_ISREG(st.st_mode):
        kind = next((name for test, name in _FILE_KINDS if test(st.st_mode)), "not a regular file")
        raise ImageError(f"not an image file: {kind}", p)
    if st.st_size == 0:
        raise ImageError("empty file (0 bytes)", p)
    return st.st_size


def _read(fd: int, offset: int, count: int) -> bytes:
    chunks = []
    while count > 0:
        chunk = os.pread(fd, min(count, 1 << 26), offset)
        if not chunk:
            break
        chunks.append(chunk)
        offset += len(chunk)
        count -= len(chunk)
    return b"".join(chunks)


def read_judged(read_at: Callable[[int, int], bytes], size: int, path: str | Path, max_pixels: int) -> bytes:
    """The ``size`` bytes of an image file through ``read_at(offset, count)``, whatever stores it
    (a local file, a Ray filesystem): the first `HEAD_BYTES` are judged (`judge_head`) before the
    rest is read.

    Raises:
        ImageError: a truncated or refused header, naming ``path``. An OSError of ``read_at``
            passes, for the caller to say in its own words.
    """
    head = read_at(0, min(size, HEAD_BYTES))
    try:
        judge_head(head, size, max_pixels)
    except NeedMoreBytes as e:
        raise ImageError(f"truncated image ({e})", path) from None
    except HeaderError as e:
        raise ImageError(str(e), path) from None
    return head if size <= len(head) else head + read_at(len(head), size - len(head))


def read_image_file(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> bytes:
    """The bytes of an image file, read only once its header allows them.

    ``stat`` first: only regular files are opened (without blocking, and checked again once
    open). The header is judged from the first `HEAD_BYTES`; the rest is read only when the
    declared image is within ``max_pixels`` and could need the file's size. A header that runs
    past the first bytes is judged once the file is read, which is then capped by
    ``max_pixels`` (`max_file_bytes`).

    Raises:
        ImageError: naming the file and the problem.
    """
    p = Path(path)
    size = _regular_file_size(p)
    try:
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise ImageError(f"cannot read file ({e.strerror})", p) from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # replaced between stat and open
            raise ImageError("not an image file: not a regular file", p)
        return read_judged(lambda offset, count: _read(fd, offset, count), size, p, max_pixels)
    except OSError as e:
        raise ImageError(f"cannot read file ({e.strerror})", p) from None
    finally:
        os.close(fd)


def load_image(path: str | Path, convert: bool = False, max_pixels: int = DEFAULT_MAX_PIXELS,
               notes: list[str] | None = None) -> np.ndarray:
    """Read an image file as uint8 RGB (H, W, 3), in the orientation viewers show.

    Args:
        path: image file (a regular file; its name does not matter, its content does).
        convert: convert grayscale, alpha and 16-bit images to 8-bit RGB instead of refusing them.
        max_pixels: refuse images with more pixels than this, from the header, before the file
            is read whole or decoded.
        notes: if given, the decoder's harmless warnings about this image are appended to it.

    Raises:
        ImageError: with a one-line message naming the file and the problem.
    """
    data = read_image_file(path, max_pixels)
    return decode_image(data, path, convert=convert, max_pixels=max_pixels, notes=notes)


#: The channel orders `as_rgb` takes for arrays.
CHANNEL_ORDERS = ("rgb", "bgr")


def _channel_order(bgr: bool | None, channels: str | None) -> str | None:
    """``bgr=`` and ``channels=`` as one order ("rgb" / "bgr"), or None when neither is given."""
    if channels is not None:
        order = str(channels).lower()
        if order not in CHANNEL_ORDERS:
            raise ValueError(f"channels must be one of {', '.join(CHANNEL_ORDERS)}, got {channels!r}")
        if bgr is not None and bgr != (order == "bgr"):
            raise ValueError(f"bgr={bgr} contradicts channels={channels!r}")
        return order
    return None if bgr is None else ("bgr" if bgr else "rgb")


def _is_pil_image(image) -> bool:
    # Judged by the type's module, so that PIL is imported only when the caller already did.
    return any(t.__module__.startswith("PIL.") and t.__name__ == "Image" for t in type(image).__mro__)


def _pil_orientation(image) -> int:
    """A PIL image's EXIF orientation (1 when it has none or it cannot be read): ``Image.open``
    keeps pixels as stored, and viewers, like `load_image`, show them turned."""
    try:
        value = image.getexif().get(0x0112, 1)
    except Exception:  # a broken EXIF block is no orientation, as for files
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _array_to_rgb(image: np.ndarray, order: str | None, convert: bool) -> np.ndarray:
    """A uint8 array (H, W, 3|4) or (H, W[, 1]) -> uint8 RGB (H, W, 3); the same array when it
    already is one and no conversion is asked for."""
    channels = 1 if image.ndim == 2 else image.shape[2] if image.ndim == 3 else 0
    if image.dtype != np.uint8 or channels not in (1, 3, 4) or 0 in image.shape[:2]:
        raise ImageError(f"expected a uint8 (H, W, 3) RGB array, got {image.dtype} {tuple(image.shape)}")
    if channels != 3 and not convert:
        kind = "grayscale" if channels == 1 else "has an alpha channel"
        raise ImageError(f"unsupported array {tuple(image.shape)}: {kind} (slidewin expects 8-bit RGB; "
                         "pass convert=True to convert it)")
    if channels == 3 and order != "bgr":
        return image  # what detectors took before: no copy, whatever its strides
    if channels == 1:
        return np.ascontiguousarray(np.repeat(image.reshape(image.shape[0], image.shape[1], 1), 3, axis=2))
    rgb = image[..., :3]
    if order == "bgr":
        rgb = rgb[..., ::-1]
    return np.ascontiguousarray(rgb)


def as_rgb(image, *, bgr: bool | None = None, channels: str | None = None, convert: bool = False,
           max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """What people pass as an image, as the uint8 RGB (H, W, 3) array detectors take.

    Accepts:

    - a path (``str`` or ``os.PathLike``): read with `load_image`, so a file that is not an
      image is the same one-line `ImageError` as on the command line;
    - encoded image bytes (a file's content): `decode_image`;
    - a PIL image: converted to RGB and turned by its EXIF orientation, as a file is (PIL is
      not imported here unless the caller did);
    - a NumPy uint8 array (H, W, 3): RGB unless ``bgr=True`` or ``channels="bgr"`` says
      otherwise, as OpenCV's ``cv2.imread`` returns::

          detector.detect(cv2.imread("photo.jpg"), bgr=True)

      A bare 3-channel array is taken as RGB and returned as is (no copy): its order cannot be
      seen in its values, so it must be stated.

    Args:
        image: the image.
        bgr: the array's channels are blue, green, red (arrays only).
        channels: ``"rgb"`` or ``"bgr"``, the same statement by name (arrays only).
        convert: convert grayscale and alpha (and, for files, 16-bit) to RGB instead of
            refusing them; a 4-channel array's alpha is dropped.
        max_pixels: refuse image files larger than this (see `load_image`).

    Returns:
        uint8 (H, W, 3) RGB: the array itself when it is RGB already, otherwise a new
        C-contiguous one.

    Raises:
        ImageError: not an image, or not one slidewin takes (one line, naming the file).
        ValueError: ``bgr``/``channels`` given for a file or a PIL image (their order is known),
            or contradicting each other.
    """
    order = _channel_order(bgr, channels)
    if isinstance(image, np.ndarray):
        return _array_to_rgb(image, order, convert)
    if order is not None:
        raise ValueError(f"bgr= and channels= describe arrays; a {type(image).__name__} has a known channel order")
    if isinstance(image, (str, os.PathLike)):
        return load_image(image, convert=convert, max_pixels=max_pixels)
    if isinstance(image, (bytes, bytearray, memoryview)):
        return decode_image(bytes(image), convert=convert, max_pixels=max_pixels)
    if _is_pil_image(image):
        if image.width * image.height > max_pixels:
            raise ImageError(_too_large((image.width, image.height), max_pixels))
        rgb = np.asarray(image if image.mode == "RGB" else image.convert("RGB"))
        return np.ascontiguousarray(apply_orientation(rgb, _pil_orientation(image)))
    raise ImageError(f"cannot read an image from a {type(image).__name__}: give a path, a PIL image "
                     "or a uint8 (H, W, 3) NumPy array")


def judge_head(head: bytes, size: int, max_pixels: int) -> None:
    """Judge a file's first bytes (``head``, at most `HEAD_BYTES`) before the rest is read: the
    header's size against ``max_pixels`` and the file's ``size``. A header that lies past the
    head passes only while the file is no bigger than such an image can be.

    Raises:
        HeaderError: not an image slidewin takes, or too large.
        NeedMoreBytes: the whole file is in ``head`` and its header is cut short.
    """
    try:
        check_header(read_header(head), size, max_pixels)
    except NeedMoreBytes:
        if len(head) == size:
            raise
        if size > max_file_bytes(max_pixels):
            raise HeaderError(f"{size:,} bytes is far more than an image within --max-pixels "
                              f"{max_pixels:,} needs, and its header lies past the first {HEAD_BYTES:,}") from None


def probe_size(path: str | Path) -> tuple[int, int] | None:
    """(width, height) of an image file from its first bytes, without decoding; None if unknown.

    Cheap enough to call ahead of decoding (e.g. to budget memory); refuses nothing.
    """
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return None
        with open(path, "rb") as f:
            header = read_header(f.read(1 << 16))
    except (OSError, HeaderError):
        return None
    return header.width, header.height


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
