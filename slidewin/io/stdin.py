"""One image read from a stream (``slidewin detect -``), never more bytes than an image may hold.

A stream has no size to judge before reading, so it is read in chunks: the first `HEAD_BYTES`
give the header, whose declared size sets the most bytes the image may hold (`max_file_bytes`,
the loader's rule for files); without a readable header the limit is that of the largest image
``max_pixels`` allows. One byte past the limit and the input is refused, unread beyond it.
"""

from __future__ import annotations

from typing import BinaryIO

from slidewin.errors import ImageError
from slidewin.io.formats import HeaderError, NeedMoreBytes, read_header
from slidewin.io.images import DEFAULT_MAX_PIXELS, HEAD_BYTES, max_file_bytes

#: What messages call standard input.
STDIN_NAME = "<stdin>"
_CHUNK = 1 << 20


def _read_up_to(stream: BinaryIO, count: int) -> bytes:
    chunks, left = [], count
    while left > 0:
        chunk = stream.read(min(left, _CHUNK))
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def read_image_stream(stream: BinaryIO, max_pixels: int = DEFAULT_MAX_PIXELS, name: str = STDIN_NAME) -> bytes:
    """The bytes of one image from ``stream``, read up to what its header allows.

    Raises:
        ImageError: nothing to read, not an image, an image over ``max_pixels``, or more bytes
            than the image may hold (naming ``name``).
    """
    head = _read_up_to(stream, HEAD_BYTES)
    if not head:
        raise ImageError("empty input (0 bytes)", name)
    limit, what = max_file_bytes(max_pixels), f"an image within --max-pixels {max_pixels:,}"
    try:
        header = read_header(head)
    except NeedMoreBytes:
        header = None  # cut short, or a header beyond the first bytes: the decoder says which
    except HeaderError as e:
        raise ImageError(str(e), name) from None
    if header is not None:
        if header.pixels > max_pixels:
            raise ImageError(f"image too large: {header.width}x{header.height} = {header.pixels:,} pixels exceeds "
                             f"--max-pixels {max_pixels:,}", name)
        limit, what = max_file_bytes(header.pixels), f"a {header.width}x{header.height} image"
    data = head + _read_up_to(stream, limit + 1 - len(head))
    if len(data) > limit:
        raise ImageError(f"more than {limit:,} bytes, more than {what} may hold: refused without reading the rest",
                         name)
    return data
