"""The process's stderr: decoder messages captured per file, one lock for everything written there.

libjpeg and libpng report corrupt data by printing to file descriptor 2 (``Corrupt JPEG data:
premature end of data segment``, ``libpng error: ...``) and then often return an image anyway.
`captured_stderr` points fd 2 at a private file while one decode runs, so those messages can be
judged (an error naming the file, or a note attached to it) instead of leaking unlabelled.

fd 2 belongs to the whole process, so decodes that capture it take `STDERR_LOCK` in turn, and
whatever slidewin itself writes to stderr while decodes may run (progress bars, per-image
errors) takes it too; otherwise that text would land in a decode's capture. Decoding one photo
takes milliseconds against the model's hundreds, so taking turns costs nothing measurable.
"""

from __future__ import annotations

import os
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager

#: Held while fd 2 is captured, and by every slidewin writer to stderr that may run meanwhile.
STDERR_LOCK = threading.RLock()
#: At most this much of one decode's messages is kept.
_MAX_CAPTURE = 1 << 14

_sink = None


def _sink_fd() -> int:
    """One private file, reused (under the lock) for every capture."""
    global _sink
    if _sink is None:
        _sink = tempfile.TemporaryFile(prefix="slidewin-decoder-")
    return _sink.fileno()


@contextmanager
def captured_stderr() -> Iterator[list[str]]:
    """Run the body with fd 2 redirected; the yielded list receives the lines written there.

    Yields:
        A list, filled when the body ends, with the non-empty lines written to fd 2 meanwhile.
    """
    lines: list[str] = []
    with STDERR_LOCK:
        sys.stderr.flush()
        sink = _sink_fd()
        os.ftruncate(sink, 0)
        os.lseek(sink, 0, os.SEEK_SET)
        saved = os.dup(2)
        os.dup2(sink, 2)
        try:
            yield lines
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            text = os.pread(sink, _MAX_CAPTURE, 0).decode("utf-8", "replace")
            lines.extend(line.strip() for line in text.splitlines() if line.strip())


def eprint(text: str) -> None:
    """Print one line to stderr, flushed, holding `STDERR_LOCK`: a decode still running in a
    worker thread (a run being interrupted leaves its current decodes to finish) may have fd 2
    pointed at its capture, and a line written then would be read as that decoder's message and
    never reach the user."""
    with STDERR_LOCK:
        print(text, file=sys.stderr, flush=True)


def share_lock_with_tqdm() -> None:
    """Make tqdm's writes (bars, ``tqdm.write``) take `STDERR_LOCK`, so that they never land in
    a capture."""
    from tqdm import tqdm

    tqdm.set_lock(STDERR_LOCK)
