"""Decoding (and preparing) the next images while the current one is detected in.

Images are decoded ahead in a small thread pool (OpenCV releases the GIL) while ONNX Runtime
works on the current one; a detector's `prepare` step (region proposals) runs there too, right
after the decode. The look-ahead is bounded by a count and by the pixels the headers declare, so
a folder of 20000 x 20000 scans is not decoded four at a time.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from slidewin.errors import one_line
from slidewin.io.images import DEFAULT_MAX_PIXELS, decode_image, load_image, probe_size

#: Images decoded ahead of the one being detected in, by default.
DEFAULT_PREFETCH = 4
#: Decoded-ahead images may hold at most this many declared pixels (~150 MB as RGB) in all.
PREFETCH_PIXELS = 50_000_000


@dataclass
class Decoded:
    """An image read for detection (and what its detector prepared for it), or why it could not be."""

    image: np.ndarray | None
    error: str | None
    seconds: float
    warnings: list[str] = field(default_factory=list)
    prepared: object | None = None


def decode(path: Path, convert: bool = False, max_pixels: int = DEFAULT_MAX_PIXELS,
           prepare: Callable[[np.ndarray], object] | None = None, data: bytes | None = None) -> Decoded:
    """`load_image` (or `decode_image` of ``data``, the file's bytes already read), then
    ``prepare(image)``, with any failure kept as a one-line error for the image's record: the same
    validation and the same error text whoever read the bytes (a local run, a Ray worker).
    ``seconds`` is the decode's alone."""
    t0, notes = time.perf_counter(), []
    try:
        image = (load_image(path, convert=convert, max_pixels=max_pixels, notes=notes) if data is None
                 else decode_image(data, path, convert=convert, max_pixels=max_pixels, notes=notes))
    except Exception as e:  # recorded for this image; the run goes on
        return Decoded(None, one_line(e, with_path=False), time.perf_counter() - t0, notes)
    decoded = Decoded(image, None, time.perf_counter() - t0, notes)
    if prepare is not None:
        try:
            decoded.prepared = prepare(image)
        except Exception as e:
            decoded.image, decoded.error = None, one_line(e, with_path=False)
    return decoded


class Prefetcher:
    """Yields ``(path, Decoded)`` for ``paths`` in order, decoding up to ``ahead`` images ahead
    in ``workers`` threads (``ahead`` 0: each image inline when its turn comes), each followed by
    ``prepare(image)`` when given (a detector's `prepare`). Use as a context manager, so that an
    interrupted run cancels what is queued."""

    def __init__(self, paths: list[Path], ahead: int = DEFAULT_PREFETCH, workers: int = 2,
                 convert: bool = False, max_pixels: int = DEFAULT_MAX_PIXELS,
                 prepare: Callable[[np.ndarray], object] | None = None):
        self.paths, self.ahead, self.convert, self.max_pixels = paths, ahead, convert, max_pixels
        self.prepare = prepare
        self.pool = ThreadPoolExecutor(max(1, workers), thread_name_prefix="slidewin-decode") if ahead > 0 else None
        self.pending: deque[tuple[Path, Future, int]] = deque()
        self.next_index = 0

    def __enter__(self) -> "Prefetcher":
        return self

    def __exit__(self, *exc) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)

    def __iter__(self) -> Iterator[tuple[Path, Decoded]]:
        if self.pool is None:
            for path in self.paths:
                yield path, decode(path, self.convert, self.max_pixels, self.prepare)
            return
        for _ in range(len(self.paths)):
            self._fill(needed_now=not self.pending)
            path, future, _ = self.pending.popleft()
            decoded = future.result()
            self._fill(needed_now=False)  # keep the pool busy while this image is detected in
            yield path, decoded

    def _fill(self, needed_now: bool) -> None:
        """Queue decodes ahead. While an image is being detected in (``needed_now`` False) the
        queued ones hold at most PREFETCH_PIXELS; a bigger image waits until it is next."""
        while self.next_index < len(self.paths) and len(self.pending) < self.ahead:
            path = self.paths[self.next_index]
            size = probe_size(path)
            pixels = size[0] * size[1] if size else 0
            queued = sum(px for *_, px in self.pending)
            if (self.pending or not needed_now) and queued + pixels > PREFETCH_PIXELS:
                break
            future = self.pool.submit(decode, path, self.convert, self.max_pixels, self.prepare)
            self.pending.append((path, future, pixels))
            self.next_index += 1
