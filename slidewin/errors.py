"""Errors that the CLI turns into one line and a non-zero exit code.

Every error slidewin raises on purpose derives from `SlidewinError`; its message is a single
sentence that names the file (when there is one) and the problem. Anything else escaping to the
CLI is a bug and is reported as such, still in one line.
"""

from __future__ import annotations

import os
import unicodedata
from pathlib import Path


class SlidewinError(Exception):
    """A user-facing error with a one-line message."""

    exit_code = 2

    def __init__(self, message: str, path: str | Path | None = None):
        self.path = None if path is None else str(path)
        self.problem = message
        super().__init__(f"{self.path}: {message}" if self.path else message)


class ImageError(SlidewinError):
    """An input image is missing, unreadable, or not something slidewin can detect in."""

    exit_code = 3


class ModelError(SlidewinError):
    """A model file is missing, not ONNX, or lacks the inputs/metadata slidewin needs."""

    exit_code = 4


class UntrainedModelError(SlidewinError):
    """An accuracy figure was asked of a model whose weights are random."""

    exit_code = 5


class MissingDependencyError(SlidewinError):
    """An optional dependency (an extra) is not installed."""

    exit_code = 6


def printable(text: str) -> str:
    """``text`` safe to print on a terminal: control characters escaped (``\\x1b``, ``\\n``).

    Labels come from model files and paths from file names: raw, an escape sequence could clear
    the screen or retitle the window, a newline could forge a ``slidewin: error:`` line, and a
    file name that is not UTF-8 could not be printed at all. Everything slidewin prints from a
    model or a file name goes through here (JSON output escapes by itself).
    """
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() or unicodedata.category(ch) == "Zs" else _escaped(ch) for ch in text)


def _escaped(ch: str) -> str:
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def one_line(e: BaseException, with_path: bool = True) -> str:
    """Any exception as one printable line: what the CLI prints and what folder runs record.

    A `SlidewinError` gives its message (with the file it names, unless ``with_path`` is False:
    records name their image already); an `OSError` (a full disk, a read-only folder) the file
    and the system's reason; a MemoryError says what to change; anything else is a bug and says
    so, with its type and the first line of its message.
    """
    if isinstance(e, SlidewinError):
        text = _first_line(str(e) if with_path else e.problem, type(e).__name__)
    elif isinstance(e, OSError) and e.strerror:
        name = e.filename if with_path and e.filename is not None else None
        text = f"{os.fsdecode(name)}: {e.strerror}" if name is not None else e.strerror
    elif isinstance(e, MemoryError):
        text = "out of memory (try a larger --window, --max-levels or a lower --max-pixels)"
    else:
        msg = _first_line(str(e), "")[:300]
        text = f"internal error: {type(e).__name__}" + (f": {msg}" if msg else "")
    return printable(text)


def first_line(e: BaseException, limit: int | None = 200, default: str | None = None) -> str:
    """The first line of a library's exception, to quote inside one of slidewin's own one-line
    errors ("cannot load model (...)"): ONNX Runtime, onnx and pyarrow put pages of detail after
    it. Its type name (or ``default``) when the message is empty; at most ``limit`` characters
    (None: the whole line)."""
    return _first_line(str(e), default or type(e).__name__)[:limit]


def _first_line(text: str, empty: str) -> str:
    text = text.strip()
    return text.splitlines()[0] if text else empty


def is_internal(e: BaseException) -> bool:
    """True for an exception slidewin did not raise on purpose (a bug to report). A failing
    file operation (`OSError` with a reason: no space, no permission) is the machine's, not a bug."""
    return not isinstance(e, (SlidewinError, MemoryError)) and not (isinstance(e, OSError) and e.strerror)
