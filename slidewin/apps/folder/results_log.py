"""``results.jsonl``: one whole JSON line per image, appended so that a crash never tears a line.

Each record is one complete line written with a single ``os.write`` to a file opened
``O_APPEND`` (and fsynced about once a second and at the end), so a process killed at any moment
leaves whole lines, plus at most one partial last line when the kill lands inside a write or the
machine loses power. On opening, a trailing partial line is truncated away and the images
already recorded are read (for ``--resume``). An exclusive lock keeps two runs from appending to
one file.
"""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path

from slidewin.apps.folder.inputs import result_key
from slidewin.apps.folder.records import DetectionRecord
from slidewin.errors import SlidewinError
from slidewin.io.files import check_own_file

RESULTS_NAME = "results.jsonl"
_FSYNC_SECONDS = 1.0


class ResultsLog:
    """``results.jsonl`` opened for appending whole lines, after repairing and reading it.

    Args:
        path: the file (created with its folder if missing).
        resume: continue a non-empty file; without it, a non-empty file is an error.
        base: the folder that relative ``image`` paths in the file are relative to (the working
            directory of the run that wrote them, see `slidewin.apps.folder.run_settings`;
            default: the current one).

    Attributes:
        done: result key -> True (ok) / False (error) of every image already recorded.
        truncated_bytes: size of the partial last line cut away on opening (0 if none).
        unreadable: numbers (1-based) of complete lines that are not a JSON record; they stay in
            the file and their images are done again.
        models: the ``model`` values already recorded.
    """

    def __init__(self, path: Path, resume: bool, base: str | Path | None = None, old_root: str | None = None):
        self.path = Path(path)
        self.base = base
        self.old_root = old_root
        #: path relative to ``old_root`` -> ok, for the records inside it (a moved tree's resume).
        self.done_rel: dict[str, bool] = {}
        #: key (or ("rel", path inside old_root)) -> numbers of its error lines.
        self.error_lines: dict = {}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Never follow a link out of the output folder, nor append to a FIFO or device: lstat
        # first, then O_NOFOLLOW (a link made in between fails the open), then fstat.
        check_own_file(self.path, "results file")
        created = not self.path.exists()
        flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
        try:
            self.fd = os.open(self.path, flags, 0o644)
        except OSError as e:
            check_own_file(self.path, "results file")
            raise SlidewinError(f"cannot open results file ({e.strerror})", self.path) from None
        try:
            if not stat.S_ISREG(os.fstat(self.fd).st_mode):
                check_own_file(self.path, "results file")
                raise SlidewinError("results file is not a regular file", self.path)
            self._lock()
            self._load(resume)
            if created:
                _fsync_dir(self.path.parent)
        except BaseException:
            os.close(self.fd)
            raise
        self._synced = time.monotonic()
        self.lines_written = 0

    def _lock(self) -> None:
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock
            return
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise SlidewinError("another slidewin run is writing to this file; wait for it or choose "
                                "another --out-dir", self.path) from None

    def _load(self, resume: bool) -> None:
        size = os.fstat(self.fd).st_size
        if size and not resume:
            raise SlidewinError("already holds results: pass --resume to continue that run, or choose "
                                "another --out-dir", self.path)
        self.done: dict[str, bool] = {}
        self.unreadable: list[int] = []
        self.models: set[str] = set()
        whole = 0
        # Streamed line by line: a results file of any size costs memory for its keys only.
        for number, (line, end) in enumerate(complete_lines(self.fd, size), 1):
            whole = end
            self._take(number, line)
        self.truncated_bytes = size - whole
        if self.truncated_bytes:
            os.ftruncate(self.fd, whole)  # a write cut short by a crash: that image is redone
            os.fsync(self.fd)

    def _take(self, number: int, line: bytes | None) -> None:
        """Note the image of one complete line (None: a line too long to be a record)."""
        try:
            if line is None:
                raise ValueError
            record = DetectionRecord.from_json(json.loads(line))
            key = result_key(record.image, self.base)
        except (ValueError, TypeError, KeyError, AttributeError, RecursionError):
            if line is None or line.strip():
                self.unreadable.append(number)
            return
        self.done[key] = record.ok
        self.models.add(record.model)
        rel = None
        if self.old_root is not None and "://" not in record.image:
            rel = relative_key(os.path.join(os.fspath(self.base or os.getcwd()), record.image), self.old_root)
            if rel is not None:
                self.done_rel[rel] = record.ok
        if not record.ok:
            self.error_lines.setdefault(key, []).append(number)
            if rel is not None:
                self.error_lines.setdefault(("rel", rel), []).append(number)

    def drop_lines(self, numbers: set[int]) -> None:
        """Remove the lines ``numbers`` (1-based) from the file, whole or not at all: the rest is
        copied to a temporary file beside it, which replaces it (``--retry-failed``: the error
        records of the images done again)."""
        if not numbers:
            return
        import tempfile

        size = os.fstat(self.fd).st_size
        fd, name = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        try:
            with os.fdopen(fd, "wb") as out:
                for number, (line, _) in enumerate(complete_lines(self.fd, size, max_line=size + 1), 1):
                    if number not in numbers:
                        out.write(line + b"\n")
                out.flush()
                os.fsync(out.fileno())
            os.chmod(name, os.fstat(self.fd).st_mode & 0o777)
            os.replace(name, self.path)
        except OSError as e:
            raise SlidewinError(f"cannot rewrite results file ({e.strerror})", self.path) from None
        finally:
            if os.path.exists(name):
                os.unlink(name)
        old, self.fd = self.fd, os.open(self.path, os.O_RDWR | os.O_APPEND | getattr(os, "O_NOFOLLOW", 0))
        os.close(old)
        self._lock()
        _fsync_dir(self.path.parent)

    def append(self, record: DetectionRecord) -> None:
        """Write one record as one line (one ``os.write`` of the whole line)."""
        line = memoryview((json.dumps(record.to_json()) + "\n").encode())
        try:
            while line:
                n = os.write(self.fd, line)
                line = line[n:]
            if time.monotonic() - self._synced >= _FSYNC_SECONDS:
                self.sync()
        except OSError as e:
            raise SlidewinError(f"cannot write results ({e.strerror})", self.path) from None
        self.lines_written += 1

    def sync(self) -> None:
        os.fsync(self.fd)
        self._synced = time.monotonic()

    def close(self) -> None:
        if self.fd < 0:
            return
        try:
            self.sync()
        finally:
            os.close(self.fd)  # releases the lock
            self.fd = -1


#: A line longer than this is not a record slidewin wrote (a record with 100,000 detections is
#: ~10 MB): it is counted as corrupt without being held in memory.
MAX_LINE_BYTES = 64 << 20
_CHUNK = 1 << 20


def complete_lines(fd: int, size: int, max_line: int = MAX_LINE_BYTES):
    """``(line, end offset)`` for each complete (newline-ended) line of the first ``size`` bytes
    of ``fd``, read in chunks; ``line`` is None for one longer than ``max_line`` (not kept). A
    last line without its newline is not yielded: it ends where the last complete one does."""
    offset, pending, too_long = 0, [], False
    while offset < size:
        chunk = os.pread(fd, min(size - offset, _CHUNK), offset)
        if not chunk:
            break
        i = 0
        while (j := chunk.find(b"\n", i)) >= 0:
            if too_long:
                yield None, offset + j + 1
            else:
                yield b"".join(pending) + chunk[i:j], offset + j + 1
            pending, too_long, i = [], False, j + 1
        if not too_long:
            pending.append(chunk[i:])
            if sum(map(len, pending)) > max_line:
                pending, too_long = [], True
        offset += len(chunk)


def relative_key(path: str, root: str) -> str | None:
    """``path`` relative to ``root``, lexically (the tree may have moved: nothing is resolved),
    or None when it lies outside ``root``."""
    rel = os.path.relpath(os.path.normpath(path), os.path.normpath(root))
    return None if rel == ".." or rel.startswith(".." + os.sep) else rel


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


