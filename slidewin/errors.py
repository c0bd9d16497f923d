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
