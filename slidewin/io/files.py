"""Files: the cache folder, and writes that readers never see half done."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path

from slidewin.errors import SlidewinError


def cache_dir() -> Path:
    """slidewin's cache folder: ``$XDG_CACHE_HOME/slidewin``, else ``~/.cache/slidewin``."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "slidewin"


def check_output_dir(path: str | Path, what: str = "output folder") -> None:
    """Refuse, before any work is done, a folder that cannot take output files.

    The folder need not exist yet (it is created when written), but the nearest folder that
    does exist must be a folder and writable: a test file is created and removed there, which
    catches read-only folders and file systems whatever the user's privileges.

    Raises:
        SlidewinError: naming the path and the problem.
    """
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise SlidewinError(f"{what} is a file, not a folder", p)
    existing = p.absolute()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise SlidewinError(f"{what} cannot be created: {existing} is a file", p)
    try:
        fd, name = tempfile.mkstemp(prefix=".slidewin-write-test-", dir=existing)
        os.close(fd)
        os.unlink(name)
    except OSError as e:
        raise SlidewinError(f"cannot write {what} ({e.strerror})", existing) from None


def check_output_file(path: str | Path, what: str, inputs: tuple = ()) -> None:
    """Refuse, before any work is done, an output file that cannot be written or that would
    overwrite one of ``inputs`` (the image read, the model; None for one not given).

    Raises:
        SlidewinError: naming the path and the problem.
    """
    p = Path(path)
    if p.is_dir():
        raise SlidewinError(f"{what} is a folder, not a file", p)
    if is_stream(p):  # written through, never replaced: nothing is created beside it
        return
    kind = _special_kind(p)
    if kind:
        raise SlidewinError(f"{what} is {kind}, not a regular file: give a file path, or - for stdout", p)
    for other in inputs:
        if other is not None and _same_file(p, Path(other)):
            raise SlidewinError(f"{what} would overwrite an input file", p)
    check_output_dir(p.parent, f"the folder of {what}")


def is_stream(path: str | Path) -> bool:
    """True when writing ``path`` means writing *through* it, never replacing it: a character
    device (a terminal, ``/dev/null``) or a FIFO, directly or through a link, and any path under
    ``/dev/`` or ``/proc/`` (``/dev/stdout`` of a shell redirected to a file is a link to that file:
    replacing it would lose what the shell reads)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    if stat.S_ISCHR(mode) or stat.S_ISFIFO(mode):
        return True
    return os.path.abspath(path).startswith(("/dev/", "/proc/")) and stat.S_ISREG(mode)


def _special_kind(path: Path) -> str | None:
    """What an existing non-regular path is ("a block device", "a socket"), None for a regular
    file or a path that does not exist yet."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    if stat.S_ISREG(mode):
        return None
    return {stat.S_IFBLK: "a block device", stat.S_IFSOCK: "a socket"}.get(stat.S_IFMT(mode), "a special file")


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(out: str | Path, write: Callable[[Path], object]) -> object:
    """Call ``write(tmp)`` on a temporary file beside ``out``, then move it to ``out``.

    An interrupted run, or a ``write`` that raises, never leaves a partial file at ``out``; the
    file gets the usual permissions (0666 less the umask), not mkstemp's private 0600.

    Returns:
        What ``write`` returned.
    """
    out = Path(out)
    if is_stream(out):
        return _write_through(out, write)
    kind = _special_kind(out)
    if kind:
        raise SlidewinError(f"is {kind}, not a regular file: give a file path, or - for stdout", out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp" + out.suffix, dir=out.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        os.chmod(tmp, 0o666 & ~_umask())
        result = write(tmp)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return result


def _write_through(out: Path, write: Callable[[Path], object]) -> object:
    """``write`` into a private temporary file, then its bytes appended to the device or FIFO
    ``out`` (append: a shell's redirection keeps what was written before)."""
    with tempfile.TemporaryDirectory(prefix="slidewin-") as d:
        tmp = Path(d) / ("out" + out.suffix)
        result = write(tmp)
        with open(tmp, "rb") as src, open(out, "ab") as dst:
            shutil.copyfileobj(src, dst)
    return result


def atomic_write_bytes(out: str | Path, data: bytes) -> None:
    """Write ``data`` to ``out`` whole or not at all."""
    atomic_write(out, lambda tmp: tmp.write_bytes(data))


def atomic_write_text(out: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``out`` whole or not at all."""
    atomic_write_bytes(out, text.encode("utf-8"))


def atomic_save_onnx(model, out: str | Path, verify: Callable[[Path], object] | None = None):
    """Save an ``onnx.ModelProto`` beside ``out``, optionally ``verify`` it there, then move it in.

    Returns:
        What ``verify`` returned (None without it).
    """
    import onnx

    def write(tmp: Path):
        onnx.save(model, str(tmp))
        return verify(tmp) if verify is not None else None

    return atomic_write(out, write)
