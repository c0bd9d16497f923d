"""Writing files so that readers never see a half-written one."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_save_onnx(model, out: str | Path, verify: Callable[[Path], object] | None = None):
    """Save an ``onnx.ModelProto`` beside ``out``, optionally ``verify`` it there, then move it in.

    An interrupted run or a failed check never leaves a partial or unverified file at ``out``;
    the file gets the usual permissions (0666 less the umask), not mkstemp's private 0600.

    Returns:
        What ``verify`` returned (None without it).
    """
    import onnx

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        os.chmod(tmp, 0o666 & ~_umask())
        onnx.save(model, str(tmp))
        result = verify(tmp) if verify is not None else None
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return result
