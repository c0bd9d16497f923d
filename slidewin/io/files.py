"""Files: the cache folder, and writes that readers never see half done."""

from __future__ import annotations

import json
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


#: Caps of `read_small_file` for the files slidewin reads whole: run records, memo records and
#: settings are written by slidewin and hold a few KB.
MAX_SETTINGS_BYTES = 4 << 20


def _kind(mode: int) -> str:
    """A file type in words ("a FIFO", "a folder") for one-line refusals."""
    return {stat.S_IFDIR: "a folder", stat.S_IFIFO: "a FIFO", stat.S_IFCHR: "a character device",
            stat.S_IFBLK: "a block device", stat.S_IFSOCK: "a socket",
            stat.S_IFLNK: "a symbolic link"}.get(stat.S_IFMT(mode), "a special file")


def open_regular(path: str | Path, what: str, follow_links: bool = True) -> int:
    """A read-only descriptor of the regular file ``path``, or a one-line SlidewinError.

    The path is stat'ed first, so a FIFO, a device or a folder is refused before it is opened
    (opening a FIFO blocks, reading ``/dev/zero`` never ends); it is then opened non-blocking and
    checked again on the descriptor, so a file swapped for a FIFO in between cannot hang either.
    With ``follow_links`` False a symbolic link is refused too (``O_NOFOLLOW``): files slidewin
    writes itself are never links.

    Raises:
        SlidewinError: naming ``path``: missing, not a regular file, or unreadable.
    """
    try:
        st = os.stat(path) if follow_links else os.lstat(path)
    except OSError as e:
        raise SlidewinError(f"cannot read {what} ({e.strerror})", path) from None
    if not stat.S_ISREG(st.st_mode):
        raise SlidewinError(f"{what} is {_kind(st.st_mode)}, not a regular file", path)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    if not follow_links:
        flags |= getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags)
    except OSError as e:
        raise SlidewinError(f"cannot read {what} ({e.strerror})", path) from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise SlidewinError(f"{what} is {_kind(mode)}, not a regular file", path)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_small_file(path: str | Path, limit: int, what: str, follow_links: bool = True) -> bytes:
    """The bytes of a file slidewin reads whole (JSON, labels, memo and settings files), read
    only if it is a regular file of at most ``limit`` bytes.

    The size is never taken on trust from ``st_size`` (0 for a device, and a file may grow):
    at most ``limit + 1`` bytes are read, and one more than ``limit`` is a refusal.

    Raises:
        SlidewinError: naming ``path``: missing, special (`open_regular`), unreadable or too big.
    """
    fd = open_regular(path, what, follow_links)
    try:
        with os.fdopen(fd, "rb") as f:
            data = f.read(limit + 1)
    except OSError as e:
        raise SlidewinError(f"cannot read {what} ({e.strerror})", path) from None
    if len(data) > limit:
        raise SlidewinError(f"{what} is larger than {_size(limit)}: not a file slidewin can read whole", path)
    return data


def _size(n: int) -> str:
    return f"{n >> 20} MiB" if n >= 1 << 20 else f"{n >> 10} KiB" if n >= 1 << 10 else f"{n} bytes"


def read_small_json(path: str | Path, limit: int, what: str, follow_links: bool = True):
    """`read_small_file`, parsed as UTF-8 JSON.

    Raises:
        SlidewinError: as `read_small_file`, or the file is not JSON (one line).
    """
    data = read_small_file(path, limit, what, follow_links)
    try:
        return json.loads(data.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError) as e:
        where = f" (line {e.lineno})" if isinstance(e, json.JSONDecodeError) else ""
        raise SlidewinError(f"{what} is not JSON{where}", path) from None
    except RecursionError:
        raise SlidewinError(f"{what} is nested too deeply to be JSON slidewin wrote", path) from None


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
    return None if stat.S_ISREG(mode) else _kind(mode)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


#: What `atomic_write` does with a path that is not a regular file: a path the user named writes
#: through a device or FIFO (``--json /dev/stdout``) and refuses other special files; a file
#: slidewin owns inside an output folder refuses any link or special file (never follows one out
#: of the folder); a cache record replaces whatever entry holds its name.
THROUGH, REFUSE, REPLACE = "through", "refuse", "replace"


def check_own_file(path: str | Path, what: str) -> None:
    """Refuse, in one line, a file slidewin owns (inside an output folder) that is a symbolic
    link (even a dangling one) or a special file; a missing file or a regular one passes.

    Raises:
        SlidewinError: naming the path and what it is.
    """
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    except OSError as e:
        raise SlidewinError(f"cannot use {what} ({e.strerror})", path) from None
    if not stat.S_ISREG(mode):
        raise SlidewinError(f"{what} is {_kind(mode)}, not a regular file: slidewin writes only its own files "
                            "in an output folder; remove it or choose another folder", path)


def atomic_write(out: str | Path, write: Callable[[Path], object], special: str = THROUGH,
                 what: str = "output file") -> object:
    """Call ``write(tmp)`` on a temporary file beside ``out``, then move it to ``out``.

    An interrupted run, or a ``write`` that raises, never leaves a partial file at ``out``; the
    file gets the usual permissions (0666 less the umask), not mkstemp's private 0600.

    Args:
        special: what to do when ``out`` is not a regular file: `THROUGH`, `REFUSE` or `REPLACE`.
        what: how a refusal names ``out``.

    Returns:
        What ``write`` returned.
    """
    out = Path(out)
    if special == REFUSE:
        check_own_file(out, what)
    elif special == THROUGH:
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


def atomic_write_bytes(out: str | Path, data: bytes, special: str = THROUGH, what: str = "output file") -> None:
    """Write ``data`` to ``out`` whole or not at all (``special``, ``what``: as `atomic_write`)."""
    atomic_write(out, lambda tmp: tmp.write_bytes(data), special, what)


def atomic_write_text(out: str | Path, text: str, special: str = THROUGH, what: str = "output file") -> None:
    """Write ``text`` (UTF-8) to ``out`` whole or not at all (``special``, ``what``: as `atomic_write`)."""
    atomic_write_bytes(out, text.encode("utf-8"), special, what)


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
