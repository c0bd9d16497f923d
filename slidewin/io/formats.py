"""Image formats judged from their first bytes: which format, how big, and how big it could be.

The decoder (OpenCV) picks its codec from the content, whatever the file is called, and it
allocates the image a header declares before it reads the pixel data. So everything is decided
here from the content, before any decoding:

- `sniff` names the format from its signature, as OpenCV's codecs do;
- `read_header` reads the declared size of every format slidewin lets the decoder see, and
  refuses the formats it cannot check (`HeaderError`);
- `Header.max_pixels_per_byte` bounds how many pixels one byte of such a file can describe, so
  that a few hundred bytes claiming a gigapixel are refused as the bomb (or corrupt file) they are.

Pure functions of bytes: no file access, no decoding.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from enum import StrEnum


class ImageFormat(StrEnum):
    """Formats OpenCV's decoders recognise by content; the first ten are read, the rest refused."""

    JPEG = "JPEG"
    PNG = "PNG"
    BMP = "BMP"
    GIF = "GIF"
    WEBP = "WebP"
    TIFF = "TIFF"
    PNM = "PNM"
    PAM = "PAM"
    JPEG2000 = "JPEG 2000"
    AVIF = "AVIF"
    # Recognised and refused: floating-point or rarely used, and not worth a header parser.
    HDR = "Radiance HDR"
    PFM = "PFM"
    SUN_RASTER = "Sun raster"
    EXR = "OpenEXR"


#: Formats slidewin decodes, and the file suffixes a folder walk takes for them.
SUFFIXES = {
    ImageFormat.JPEG: (".jpg", ".jpeg", ".jpe", ".jfif"),
    ImageFormat.PNG: (".png",),
    ImageFormat.BMP: (".bmp", ".dib"),
    ImageFormat.GIF: (".gif",),
    ImageFormat.WEBP: (".webp",),
    ImageFormat.TIFF: (".tif", ".tiff"),
    ImageFormat.PNM: (".pbm", ".pgm", ".ppm", ".pnm"),
    ImageFormat.PAM: (".pam",),
    ImageFormat.JPEG2000: (".jp2", ".j2k", ".j2c", ".jpc"),
    ImageFormat.AVIF: (".avif",),
}
READABLE = frozenset(SUFFIXES)

#: Pixels per byte no file of a format can exceed in practice, where the codec sets no tighter
#: bound (wavelets, VP8, AV1, RLE with skips, arithmetic coding, fax codes): a 20000 x 20000
#: image needs at least 6 KB. Blank synthetic images can compress further; photos never come near.
GENERIC_PIXELS_PER_BYTE = 1 << 16
#: Huffman-coded JPEG: every 8x8 block of every component costs at least one bit (DC scan), so
#: a grayscale image holds at most 512 pixels per byte; 1024 leaves a margin.
_JPEG_HUFFMAN_PIXELS_PER_BYTE = 1024
#: Deflate expands at most 1032:1 (a 258-byte match in two one-bit codes).
_DEFLATE_RATIO = 1032
#: LZW with 12-bit codes emits at most 4096 pixels per code (1.5 bytes).
_LZW_PIXELS_PER_BYTE = 4096
#: Uncompressed (and ASCII) formats hold at least one bit per pixel.
_RAW_PIXELS_PER_BYTE = 8


class HeaderError(ValueError):
    """The first bytes are not an image header slidewin can check (message: the problem)."""


class NeedMoreBytes(HeaderError):
    """The header runs past the bytes given (read more of the file, or it is truncated)."""


@dataclass(frozen=True)
class Header:
    """What an image file declares about itself.

    Attributes:
        format: the format, from the content.
        width, height: declared size in pixels.
        max_pixels_per_byte: the most pixels a file of this kind can describe per byte.
        coded_bytes: bytes that belong to the image (a JPEG ends at its end-of-image marker;
            phones append data after it); the whole file for other formats.
        orientation: EXIF orientation (1-8) the decoder does not apply itself (PNG eXIf, WebP
            EXIF); 1 where the decoder applies it (JPEG, TIFF) or there is none.
    """

    format: ImageFormat
    width: int
    height: int
    max_pixels_per_byte: int
    coded_bytes: int
    orientation: int = 1

    @property
    def pixels(self) -> int:
        return self.width * self.height


def _u16(data: bytes, i: int, e: str = ">") -> int:
    if i + 2 > len(data):
        raise NeedMoreBytes("header cut short")
    return struct.unpack_from(e + "H", data, i)[0]


def _u32(data: bytes, i: int, e: str = ">") -> int:
    if i + 4 > len(data):
        raise NeedMoreBytes("header cut short")
    return struct.unpack_from(e + "I", data, i)[0]


_SIGNATURES = (
    (b"\xff\xd8\xff", ImageFormat.JPEG),
    (b"\x89PNG\r\n\x1a\n", ImageFormat.PNG),
    (b"BM", ImageFormat.BMP),
    (b"GIF87a", ImageFormat.GIF),
    (b"GIF89a", ImageFormat.GIF),
    (b"II*\x00", ImageFormat.TIFF),
    (b"MM\x00*", ImageFormat.TIFF),
    (b"II+\x00", ImageFormat.TIFF),
    (b"MM\x00+", ImageFormat.TIFF),
    (b"P7", ImageFormat.PAM),
    (b"\x00\x00\x00\x0cjP  \r\n\x87\n", ImageFormat.JPEG2000),
    (b"\xff\x4f\xff\x51", ImageFormat.JPEG2000),
    (b"#?RADIANCE", ImageFormat.HDR),
    (b"#?RGBE", ImageFormat.HDR),
    (b"\x59\xa6\x6a\x95", ImageFormat.SUN_RASTER),
    (b"v/1\x01", ImageFormat.EXR),
)


def sniff(data: bytes) -> ImageFormat | None:
    """The format of encoded image bytes from their signature; None when none matches."""
    for magic, fmt in _SIGNATURES:
        if data.startswith(magic):
            return fmt
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return ImageFormat.WEBP
    if len(data) >= 3 and data[:1] == b"P" and data[1:2] in b"123456" and data[2:3].isspace():
        return ImageFormat.PNM
    if data[:2] in (b"PF", b"Pf") and data[2:3].isspace():
        return ImageFormat.PFM
    if data[4:8] == b"ftyp" and (b"avif" in data[8:64] or b"avis" in data[8:64]):
        return ImageFormat.AVIF
    return None


# --- JPEG --------------------------------------------------------------------------------------

_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_JPEG_STANDALONE = {0x01, *range(0xD0, 0xD8)}


def _jpeg(data: bytes) -> Header:
    """Walk the marker segments to the frame header; anything but a marker between segments is
    refused, as libjpeg would only skip it with a warning."""
    i, size = 2, None
    while True:
        if i + 2 > len(data):
            raise NeedMoreBytes("JPEG header cut short")
        if data[i] != 0xFF:
            raise HeaderError(f"corrupt JPEG header (byte 0x{data[i]:02x} where a marker should be, offset {i})")
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in _JPEG_STANDALONE:
            i += 2
            continue
        if marker == 0xD9:
            raise HeaderError("corrupt JPEG (end of image before any image data)")
        length = _u16(data, i + 2)
        if length < 2:
            raise HeaderError("corrupt JPEG header (segment length below 2)")
        if marker in _JPEG_SOF and size is None:
            if i + 9 > len(data):
                raise NeedMoreBytes("JPEG frame header cut short")
            h, w = struct.unpack_from(">HH", data, i + 5)
            size = (w, h, marker)
        if marker == 0xDA:  # start of scan: entropy-coded data follows
            if size is None:
                raise HeaderError("corrupt JPEG (image data before the frame header)")
            break
        i += 2 + length
    w, h, sof = size
    end = data.find(b"\xff\xd9", i)
    arithmetic = sof >= 0xC9
    return Header(ImageFormat.JPEG, w, h,
                  GENERIC_PIXELS_PER_BYTE if arithmetic else _JPEG_HUFFMAN_PIXELS_PER_BYTE,
                  len(data) if end < 0 else end + 2)


def jpeg_has_end(data: bytes) -> bool:
    """True when an end-of-image marker follows the first scan (bytes after it are allowed)."""
    sos = data.find(b"\xff\xda")
    return sos >= 0 and data.find(b"\xff\xd9", sos) >= 0


# --- PNG ---------------------------------------------------------------------------------------

_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}


def _png(data: bytes) -> Header:
    if data[12:16] != b"IHDR":
        if len(data) < 16:
            raise NeedMoreBytes("PNG header cut short")
        raise HeaderError("corrupt PNG (no IHDR chunk first)")
    if len(data) < 26:
        raise NeedMoreBytes("PNG header cut short")
    w, h = struct.unpack_from(">II", data, 16)
    depth, colour = data[24], data[25]
    if colour not in _PNG_CHANNELS or depth not in (1, 2, 4, 8, 16):
        raise HeaderError(f"corrupt PNG header (bit depth {depth}, colour type {colour})")
    bits = depth * _PNG_CHANNELS[colour]
    return Header(ImageFormat.PNG, w, h, max(1, _DEFLATE_RATIO * 8 // bits), len(data),
                  _png_orientation(data))


def _png_orientation(data: bytes) -> int:
    """EXIF orientation of a PNG's eXIf chunk (1 without one)."""
    i = 8
    while i + 8 <= len(data):
        length = int.from_bytes(data[i:i + 4], "big")
        ctype = data[i + 4:i + 8]
        if ctype == b"eXIf":
            return exif_orientation(data[i + 8:i + 8 + length])
        if ctype in (b"IDAT", b"IEND"):
            return 1
        i += 12 + length
    return 1


# --- BMP, GIF, WebP ----------------------------------------------------------------------------

def _bmp(data: bytes) -> Header:
    dib = _u32(data, 14, "<")
    if dib == 12:
        w, h = _u16(data, 18, "<"), _u16(data, 20, "<")
        bits, compression = _u16(data, 24, "<"), 0
    elif dib >= 40:
        if len(data) < 34:
            raise NeedMoreBytes("BMP header cut short")
        w, h = struct.unpack_from("<ii", data, 18)
        bits, compression = _u16(data, 28, "<"), _u32(data, 30, "<")
    else:
        raise HeaderError(f"corrupt BMP header (info header of {dib} bytes)")
    if w <= 0 or h == 0 or bits not in (1, 4, 8, 16, 24, 32):
        raise HeaderError(f"corrupt BMP header ({w}x{h}, {bits} bits per pixel)")
    # Uncompressed rows hold every pixel; RLE may skip whole regions (unbounded).
    ratio = max(1, 8 // bits) if compression in (0, 3, 6) else GENERIC_PIXELS_PER_BYTE
    return Header(ImageFormat.BMP, w, abs(h), ratio, len(data))


def _gif(data: bytes) -> Header:
    """The logical screen, grown to the first frame's extent (a frame may claim more)."""
    w, h = _u16(data, 6, "<"), _u16(data, 8, "<")
    if len(data) < 13:
        raise NeedMoreBytes("GIF header cut short")
    i = 13 + (3 << ((data[10] & 7) + 1) if data[10] & 0x80 else 0)
    while i < len(data):
        block = data[i]
        if block == 0x2C:  # image descriptor
            left, top, fw, fh = (_u16(data, i + 1 + 2 * k, "<") for k in range(4))
            w, h = max(w, left + fw), max(h, top + fh)
            break
        if block != 0x21:  # only extensions may come first
            break
        i += 2
        while i < len(data) and data[i]:  # sub-blocks
            i += 1 + data[i]
        i += 1
    return Header(ImageFormat.GIF, w, h, _LZW_PIXELS_PER_BYTE, len(data))


def _webp(data: bytes) -> Header:
    chunk = data[12:16]
    if chunk == b"VP8X":
        if len(data) < 30:
            raise NeedMoreBytes("WebP header cut short")
        w, h = 1 + int.from_bytes(data[24:27], "little"), 1 + int.from_bytes(data[27:30], "little")
    elif chunk == b"VP8L" and len(data) >= 25 and data[20] == 0x2F:
        bits = int.from_bytes(data[21:25], "little")
        w, h = (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    elif chunk == b"VP8 " and len(data) >= 30 and data[23:26] == b"\x9d\x01\x2a":
        w, h = int.from_bytes(data[26:28], "little") & 0x3FFF, int.from_bytes(data[28:30], "little") & 0x3FFF
    elif len(data) < 30:
        raise NeedMoreBytes("WebP header cut short")
    else:
        raise HeaderError(f"corrupt WebP header (first chunk {chunk!r})")
    return Header(ImageFormat.WEBP, w, h, GENERIC_PIXELS_PER_BYTE, len(data), _webp_orientation(data))


def _webp_orientation(data: bytes) -> int:
    """EXIF orientation of a WebP's EXIF chunk (1 without one)."""
    i = 12
    while i + 8 <= len(data):
        ctype, length = data[i:i + 4], int.from_bytes(data[i + 4:i + 8], "little")
        if ctype == b"EXIF":
            return exif_orientation(data[i + 8:i + 8 + length])
        i += 8 + length + (length & 1)
    return 1


def exif_orientation(exif: bytes) -> int:
    """The Orientation tag (0x0112) of an EXIF block (TIFF structure, ``Exif\\0\\0`` optional);
    1 when absent or malformed."""
    if exif.startswith(b"Exif\x00\x00"):
        exif = exif[6:]
    if exif[:4] not in (b"II*\x00", b"MM\x00*"):
        return 1
    e = "<" if exif[:2] == b"II" else ">"
    try:
        off = _u32(exif, 4, e)
        for k in range(_u16(exif, off, e)):
            p = off + 2 + 12 * k
            if _u16(exif, p, e) == 0x0112:
                value = _u16(exif, p + 8, e)
                return value if 1 <= value <= 8 else 1
    except HeaderError:
        pass
    return 1


# --- TIFF, PNM, PAM ----------------------------------------------------------------------------

def _tiff(data: bytes) -> Header:
    """ImageWidth and ImageLength of the first directory (classic or BigTIFF, either byte order)."""
    e = "<" if data[:2] == b"II" else ">"
    big = _u16(data, 2, e) == 43
    if big:
        if len(data) < 16:
            raise NeedMoreBytes("BigTIFF header cut short")
        off = struct.unpack_from(e + "Q", data, 8)[0]
        count_size, entry, value_at = 8, 20, 12
    else:
        off = _u32(data, 4, e)
        count_size, entry, value_at = 2, 12, 8
    if off + count_size > len(data):
        raise NeedMoreBytes("TIFF directory lies past the bytes read")
    count = struct.unpack_from(e + ("Q" if big else "H"), data, off)[0]
    size = {}
    for k in range(min(count, 4096)):
        p = off + count_size + entry * k
        if p + entry > len(data):
            raise NeedMoreBytes("TIFF directory cut short")
        tag, typ = struct.unpack_from(e + "HH", data, p)
        if tag in (256, 257):
            fmt = {3: "H", 4: "I", 16: "Q"}.get(typ)
            if fmt is None:
                raise HeaderError(f"corrupt TIFF header (size tag of type {typ})")
            size[tag] = struct.unpack_from(e + fmt, data, p + value_at)[0]
    if len(size) != 2:
        raise HeaderError("corrupt TIFF header (no image width or length)")
    return Header(ImageFormat.TIFF, size[256], size[257], GENERIC_PIXELS_PER_BYTE, len(data))


def _pnm(data: bytes) -> Header:
    # Comments may be long, but a header is never more than a few tokens.
    text = re.sub(rb"#[^\n]*", b" ", data[:1 << 16])
    head = text.split(maxsplit=3)
    if len(head) < 3:
        raise NeedMoreBytes("PNM header cut short")
    try:
        w, h = int(head[1]), int(head[2])
    except ValueError:
        raise HeaderError("corrupt PNM header (width and height are not numbers)") from None
    return Header(ImageFormat.PNM, w, h, _RAW_PIXELS_PER_BYTE, len(data))


def _pam(data: bytes) -> Header:
    end = data.find(b"ENDHDR", 0, 1 << 16)
    if end < 0:
        raise NeedMoreBytes("PAM header cut short")
    fields = dict(re.findall(rb"^(WIDTH|HEIGHT)\s+(\d+)", data[:end], re.M))
    if b"WIDTH" not in fields or b"HEIGHT" not in fields:
        raise HeaderError("corrupt PAM header (no WIDTH or HEIGHT)")
    return Header(ImageFormat.PAM, int(fields[b"WIDTH"]), int(fields[b"HEIGHT"]), _RAW_PIXELS_PER_BYTE, len(data))


# --- JPEG 2000, AVIF ---------------------------------------------------------------------------

def _j2k_siz(data: bytes, i: int) -> tuple[int, int]:
    """Image size from a codestream's SIZ marker segment at ``i`` (after SOC)."""
    if _u16(data, i) != 0xFF51:
        raise HeaderError("corrupt JPEG 2000 codestream (no SIZ marker)")
    xsiz, ysiz, xo, yo = (_u32(data, i + 6 + 4 * k) for k in range(4))
    comps = _u16(data, i + 38)
    if comps > 4:
        raise HeaderError(f"unsupported JPEG 2000 image: {comps} components")
    if xo > xsiz or yo > ysiz:
        raise HeaderError("corrupt JPEG 2000 header (offset past the image)")
    return xsiz - xo, ysiz - yo


def _boxes(data: bytes, start: int, end: int):
    """(type, payload start, payload end) of ISO base media / JP2 boxes in ``data[start:end]``."""
    i = start
    while i + 8 <= end:
        size, kind = _u32(data, i), data[i + 4:i + 8]
        head = 8
        if size == 1:
            size, head = struct.unpack_from(">Q", data, i + 8)[0], 16
        elif size == 0:
            size = end - i
        if size < head:
            raise HeaderError(f"corrupt box structure ({kind!r} box of {size} bytes)")
        yield kind, i + head, min(i + size, end)
        i += size


def _jpeg2000(data: bytes) -> Header:
    if data.startswith(b"\xff\x4f"):
        w, h = _j2k_siz(data, 2)
    else:
        w = h = None
        for kind, a, b in _boxes(data, 0, len(data)):
            if kind == b"jp2c":  # the codestream decides what is allocated
                w, h = _j2k_siz(data, a + 2)
                break
        if w is None:
            raise NeedMoreBytes("JPEG 2000 file without a codestream in the bytes read")
    return Header(ImageFormat.JPEG2000, w, h, GENERIC_PIXELS_PER_BYTE, len(data))


def _avif(data: bytes) -> Header:
    """The largest ``ispe`` (image spatial extent) property of any item: the primary image,
    grid tiles, alpha and thumbnails all declare one."""
    sizes = []

    def walk(a: int, b: int) -> None:
        for kind, start, end in _boxes(data, a, b):
            if kind == b"meta":
                walk(start + 4, end)  # a full box: version and flags first
            elif kind in (b"iprp", b"ipco"):
                walk(start, end)
            elif kind == b"ispe":
                sizes.append((_u32(data, start + 4), _u32(data, start + 8)))

    walk(0, len(data))
    if not sizes:
        raise NeedMoreBytes("AVIF file without an image size (ispe) in the bytes read")
    w, h = max(sizes, key=lambda s: s[0] * s[1])
    return Header(ImageFormat.AVIF, w, h, GENERIC_PIXELS_PER_BYTE, len(data))


_READERS = {
    ImageFormat.JPEG: _jpeg, ImageFormat.PNG: _png, ImageFormat.BMP: _bmp, ImageFormat.GIF: _gif,
    ImageFormat.WEBP: _webp, ImageFormat.TIFF: _tiff, ImageFormat.PNM: _pnm, ImageFormat.PAM: _pam,
    ImageFormat.JPEG2000: _jpeg2000, ImageFormat.AVIF: _avif,
}


def read_header(data: bytes) -> Header:
    """The declared format and size of encoded image bytes, without decoding.

    Raises:
        NeedMoreBytes: the header runs past ``data`` (pass more of the file; at its end, the
            file is truncated).
        HeaderError: not an image, a format slidewin does not read, or a malformed header.
    """
    fmt = sniff(data)
    if fmt is None:
        raise HeaderError("not an image (or an unsupported format)")
    if fmt not in READABLE:
        raise HeaderError(f"unsupported image format ({fmt.value}); slidewin reads "
                          f"{', '.join(f.value for f in SUFFIXES)}")
    try:
        header = _READERS[fmt](data)
    except struct.error:
        raise NeedMoreBytes(f"{fmt.value} header cut short") from None
    if header.width < 1 or header.height < 1:
        raise HeaderError(f"corrupt {fmt.value} header (size {header.width}x{header.height})")
    return header
