"""Errors that the CLI turns into one line and a non-zero exit code.

Every error slidewin raises on purpose derives from `SlidewinError`; its message is a single
sentence that names the file (when there is one) and the problem. Anything else escaping to the
CLI is a bug and is reported as such, still in one line.
"""

from __future__ import annotations

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


def one_line(e: BaseException, with_path: bool = True) -> str:
    """Any exception as one line: what the CLI prints and what folder runs record.

    A `SlidewinError` gives its message (with the file it names, unless ``with_path`` is False:
    records name their image already); a MemoryError says what to change; anything else is a
    bug and says so, with its type and the first line of its message.
    """
    if isinstance(e, SlidewinError):
        text = str(e) if with_path else e.problem
        return text.strip().splitlines()[0] if text.strip() else type(e).__name__
    if isinstance(e, MemoryError):
        return "out of memory (try a larger --window, --max-levels or a lower --max-pixels)"
    text = str(e).strip()
    return f"internal error: {type(e).__name__}" + (f": {text.splitlines()[0][:300]}" if text else "")


def is_internal(e: BaseException) -> bool:
    """True for an exception slidewin did not raise on purpose (a bug to report)."""
    return not isinstance(e, (SlidewinError, MemoryError))
