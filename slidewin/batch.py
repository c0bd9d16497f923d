"""Folder-scale detection: every image ends with one whole JSON line, whatever happens to the run.

``slidewin detect DIR_OR_GLOB --out-dir OUT`` walks the inputs in sorted order and appends one
record per image to ``OUT/results.jsonl``: the record ``--json`` writes for one image, plus an
``"error"`` (one line) for an image that could not be processed, with empty detections. A bad
image never stops the run.

Crash safety. Each record is one complete line written with a single ``os.write`` to a file
opened ``O_APPEND`` (and fsynced about once a second and at the end), so a process killed at any
moment leaves whole lines, plus at most one partial last line when the kill lands inside a write
or the machine loses power. On start the file is scanned: a trailing partial line is truncated
away, and with ``resume`` the images already recorded (by path) are skipped, so no line is ever
duplicated. An exclusive lock keeps two runs from appending to one file.

Overlap. Images are decoded ahead in a small thread pool (OpenCV releases the GIL) while ONNX
Runtime works on the current one. The look-ahead is bounded by a count and by the pixels the
headers declare, so a folder of 20000 x 20000 scans is not decoded four at a time.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from slidewin.errors import SlidewinError
from slidewin.images import (
    DEFAULT_MAX_PIXELS,
    IMAGE_SUFFIXES,
    load_image,
    probe_size,
    save_image,
)

RESULTS_NAME = "results.jsonl"
DRAWN_DIR = "drawn"
#: Exit code of a folder run in which some images failed (their records say why).
SOME_FAILED_EXIT = 3
#: Images decoded ahead of the one being detected in, by default.
DEFAULT_PREFETCH = 4
#: Decoded-ahead images may hold at most this many declared pixels (~150 MB as RGB) in all.
PREFETCH_PIXELS = 50_000_000
_FSYNC_SECONDS = 1.0
_LOG_EVERY_SECONDS = 30.0
_MAGIC = re.compile(r"[*?[]")


# --- inputs ----------------------------------------------------------------------------------

def is_folder_input(spec: str | Path) -> bool:
    """True for a directory or a glob pattern (``*``, ``?``, ``[``) that is not itself a file."""
    p = Path(spec)
    return p.is_dir() or (not p.exists() and bool(_MAGIC.search(str(spec))))


def _is_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_SUFFIXES) and not name.startswith(".")


def _glob_root(pattern: str) -> Path:
    parts = []
    for part in Path(pattern).parts:
        if _MAGIC.search(part):
            break
        parts.append(part)
    return Path(*parts) if parts else Path(".")


def collect_inputs(specs: Iterable[str | Path], exclude: Path | None = None) -> tuple[Path, list[Path]]:
    """The image files named by directories (walked recursively), globs and plain file paths.

    Directories and globs keep files whose suffix is in `IMAGE_SUFFIXES` (any case), skipping
    hidden names and anything under ``exclude`` (the output folder); a plain file path is kept
    whatever its name. The order is stable: sorted by path components.

    Returns:
        (root, files): the folder that relative output paths (drawn images) start from, and the
        files, each once.
    """
    excluded = os.path.abspath(exclude) if exclude is not None else None

    def keep(path: str) -> bool:
        return excluded is None or os.path.commonpath([os.path.abspath(path), excluded]) != excluded

    roots, files = [], []
    for spec in specs:
        text = str(spec)
        p = Path(text)
        if p.is_dir():
            roots.append(p)
            for dirpath, dirnames, names in os.walk(p):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and keep(os.path.join(dirpath, d)))
                files += [Path(dirpath) / n for n in names if _is_image_name(n)]
        elif not p.exists() and _MAGIC.search(text):
            import glob

            roots.append(_glob_root(text))
            files += [Path(m) for m in glob.glob(text, recursive=True)
                      if os.path.isfile(m) and _is_image_name(os.path.basename(m)) and keep(m)]
        else:
            roots.append(p.parent)
            files.append(p)
    try:
        root = Path(os.path.commonpath([os.path.abspath(r) for r in roots])) if roots else Path(".")
    except ValueError:  # different drives
        root = Path(".")
    unique = {}
    for f in files:
        unique.setdefault(result_key(f), f)
    ordered = sorted(unique.values(), key=lambda f: Path(os.path.relpath(os.path.abspath(f), root)).parts)
    return root, ordered


def result_key(image: str | Path) -> str:
    """What identifies an image across runs: its absolute, normalised path."""
    return os.path.normpath(os.path.abspath(str(image)))


# --- records ---------------------------------------------------------------------------------

def detection_record(image_path: str | Path, image: np.ndarray | None, model: str | Path, dets=None, stats=None,
                     decode_seconds: float = 0.0, error: str | None = None) -> dict:
    """The JSON record of one image (the ``--json`` record; with ``error`` for a failed image)."""
    record = {
        "image": str(image_path),
        "width": None if image is None else int(image.shape[1]),
        "height": None if image is None else int(image.shape[0]),
        "model": str(model),
        "detections": [] if dets is None else dets.to_records(),
        "windows": 0 if stats is None else stats.windows,
        "seconds": {"decode": round(decode_seconds, 4),
                    **({} if stats is None else {k: round(v, 4) for k, v in stats.seconds.items()})},
    }
    if error is not None:
        record["error"] = error
    return record


def _one_line(e: BaseException) -> str:
    if isinstance(e, SlidewinError):
        return e.problem.strip().splitlines()[0] if e.problem.strip() else type(e).__name__
    if isinstance(e, MemoryError):
        return "out of memory (try a larger --window, --max-levels or a lower --max-pixels)"
    text = str(e).strip()
    return f"internal error: {type(e).__name__}" + (f": {text.splitlines()[0][:300]}" if text else "")


# --- results.jsonl ---------------------------------------------------------------------------

class ResultsLog:
    """``results.jsonl`` opened for appending whole lines, after repairing and reading it.

    Args:
        path: the file (created with its folder if missing).
        resume: continue a non-empty file; without it, a non-empty file is an error.

    Attributes:
        done: result key -> True (ok) / False (error) of every image already recorded.
        truncated_bytes: size of the partial last line cut away on opening (0 if none).
        unreadable: complete lines that were not a JSON record (their images are redone).
        models: the ``model`` values already recorded.
    """

    def __init__(self, path: Path, resume: bool):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        created = not self.path.exists()
        try:
            self.fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError as e:
            raise SlidewinError(f"cannot open results file ({e.strerror})", self.path) from None
        try:
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
        chunks, offset = [], 0
        while offset < size:
            chunk = os.pread(self.fd, min(size - offset, 1 << 24), offset)
            if not chunk:
                break
            chunks.append(chunk)
            offset += len(chunk)
        data = b"".join(chunks)
        whole = data.rfind(b"\n") + 1
        self.truncated_bytes = len(data) - whole
        if self.truncated_bytes:
            os.ftruncate(self.fd, whole)  # a write cut short by a crash: that image is redone
            os.fsync(self.fd)
        self.done: dict[str, bool] = {}
        self.unreadable = 0
        self.models: set[str] = set()
        for line in data[:whole].splitlines():
            try:
                record = json.loads(line)
                key = result_key(record["image"])
            except (ValueError, TypeError, KeyError):
                self.unreadable += bool(line.strip())
                continue
            self.done[key] = "error" not in record
            self.models.add(str(record.get("model")))

    def append(self, record: dict) -> None:
        """Write one record as one line (one ``os.write`` of the whole line)."""
        line = memoryview((json.dumps(record) + "\n").encode())
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


# --- the run ---------------------------------------------------------------------------------

@dataclass
class FolderSummary:
    """What a folder run did. ``ok``/``failed`` count every image recorded in the results file,
    ``ok_now``/``failed_now`` those of this run; ``skipped`` were recorded by an earlier run."""

    total: int
    ok: int
    failed: int
    ok_now: int
    failed_now: int
    skipped: int
    truncated_bytes: int
    results: Path
    interrupted: bool = False
    seconds: float = 0.0

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return 130
        return SOME_FAILED_EXIT if self.failed else 0

    def line(self) -> str:
        done_now = self.ok_now + self.failed_now
        parts = f"{self.ok} ok, {self.failed} failed of {self.total} image(s)"
        if self.skipped:
            parts += f" ({done_now} this run, {self.skipped} recorded earlier)"
        return f"{parts}; results: {self.results}"


@dataclass
class _Decoded:
    image: np.ndarray | None
    error: str | None
    seconds: float


def _decode(path: Path, convert: bool, max_pixels: int) -> _Decoded:
    t0 = time.perf_counter()
    try:
        return _Decoded(load_image(path, convert=convert, max_pixels=max_pixels), None, time.perf_counter() - t0)
    except Exception as e:  # recorded for this image; the run goes on
        return _Decoded(None, _one_line(e), time.perf_counter() - t0)


def drawn_path(out_dir: Path, root: Path, image_path: Path) -> Path:
    """``OUT/drawn/<path relative to root>``, as JPEG (``.jpg`` appended unless already JPEG)."""
    rel = Path(os.path.relpath(os.path.abspath(image_path), os.path.abspath(root)))
    if rel.parts and rel.parts[0] == "..":  # outside root: keep only the name
        rel = Path(rel.name)
    if rel.suffix.lower() not in (".jpg", ".jpeg"):
        rel = rel.with_name(rel.name + ".jpg")
    return Path(out_dir) / DRAWN_DIR / rel


def _save_atomically(path: Path, rgb: np.ndarray) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.jpg")
    try:
        save_image(tmp, rgb)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


class _Interrupts:
    """SIGINT/SIGTERM become KeyboardInterrupt, but never inside a critical section (a record's
    write and its bookkeeping); there they are held until the section ends."""

    def __init__(self):
        self.critical = False
        self.pending = False
        self._saved = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._saved[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, handler in self._saved.items():
            signal.signal(sig, handler)
        return False

    def _handle(self, signum, frame):
        if self.critical:
            self.pending = True
        else:
            raise KeyboardInterrupt

    def leave_critical(self):
        self.critical = False
        if self.pending:
            self.pending = False
            raise KeyboardInterrupt


def run_folder(detector, inputs: list[Path], out_dir: Path, model: str | Path, *, root: Path | None = None,
               resume: bool = False, draw: bool = False, convert: bool = False,
               max_pixels: int = DEFAULT_MAX_PIXELS, prefetch: int = DEFAULT_PREFETCH, workers: int = 2,
               progress: bool | None = None,
               on_record: Callable[[int, dict], None] | None = None) -> FolderSummary:
    """Detect in every image of ``inputs`` and append one record each to ``out_dir/results.jsonl``.

    Args:
        detector: anything with ``run(image) -> (Detections, RunStats)``.
        inputs: image files in the order to process them (see `collect_inputs`).
        out_dir: where ``results.jsonl`` (and ``drawn/`` with ``draw``) go.
        model: what the records name as the model.
        root: the folder relative drawn paths start from (default: the inputs' common folder).
        resume: skip images already in ``results.jsonl`` (else a non-empty file is an error).
        draw: also write each image with its boxes under ``out_dir/drawn/``.
        convert, max_pixels: as for `load_image`.
        prefetch: images decoded ahead in ``workers`` threads (0: decode inline).
        progress: tqdm bar on stderr (None: when stderr is a terminal).
        on_record: called with (index in this run, record) after each record is written.

    Returns:
        What was done; ``interrupted`` when Ctrl-C or SIGTERM stopped it (whole lines kept).
    """
    from tqdm import tqdm

    from slidewin.draw import draw_detections

    out_dir = Path(out_dir)
    results = out_dir / RESULTS_NAME
    if root is None:
        root = Path(os.path.commonpath([os.path.abspath(p.parent) for p in inputs])) if inputs else Path(".")
    log = ResultsLog(results, resume)
    keys = [result_key(p) for p in inputs]
    todo = [p for p, k in zip(inputs, keys) if k not in log.done]
    earlier = [log.done[k] for k in keys if k in log.done]
    ok_before, failed_before = sum(earlier), len(earlier) - sum(earlier)
    if log.truncated_bytes:
        print(f"slidewin: {results}: removed a partial last line ({log.truncated_bytes} bytes) left by an "
              "interrupted write; that image is done again", file=sys.stderr)
    if log.unreadable:
        print(f"slidewin: {results}: {log.unreadable} line(s) are not JSON records and were ignored; "
              "their images are done again", file=sys.stderr)
    others = log.models - {str(model)}
    if others:
        print(f"slidewin: note: {results} also holds records made with {', '.join(sorted(others))}",
              file=sys.stderr)

    summary = FolderSummary(total=len(inputs), ok=ok_before, failed=failed_before, ok_now=0, failed_now=0,
                            skipped=len(inputs) - len(todo), truncated_bytes=log.truncated_bytes,
                            results=results)
    pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="slidewin-decode") \
        if prefetch > 0 else None
    pending: deque[tuple[Path, Future | None, int]] = deque()
    next_index = 0

    def fill(needed_now: bool) -> None:
        """Queue decodes ahead. While an image is being detected in (``needed_now`` False) the
        queued ones hold at most PREFETCH_PIXELS; a bigger image waits until it is next."""
        nonlocal next_index
        while next_index < len(todo) and len(pending) < max(1, prefetch):
            path = todo[next_index]
            if pool is None:
                pending.append((path, None, 0))
            else:
                size = probe_size(path)
                pixels = size[0] * size[1] if size else 0
                if (pending or not needed_now) and sum(px for *_, px in pending) + pixels > PREFETCH_PIXELS:
                    break
                pending.append((path, pool.submit(_decode, path, convert, max_pixels), pixels))
            next_index += 1

    bar = tqdm(total=len(inputs), initial=summary.skipped, unit="img", file=sys.stderr, dynamic_ncols=True,
               disable=(not sys.stderr.isatty()) if progress is None else not progress, smoothing=0.1)
    t_start = last_log = time.perf_counter()
    interrupts = _Interrupts()
    try:
        with interrupts:
            for i in range(len(todo)):
                fill(needed_now=not pending)
                path, future, _ = pending.popleft()
                decoded = _decode(path, convert, max_pixels) if future is None else future.result()
                fill(needed_now=False)  # keep the pool busy while this image is detected in
                image, error, dets, stats = decoded.image, decoded.error, None, None
                if image is not None:
                    try:
                        dets, stats = detector.run(image)
                    except KeyboardInterrupt:
                        raise
                    except Exception as e:
                        error = _one_line(e)
                    if draw and error is None:
                        _save_atomically(_ensure_parent(drawn_path(out_dir, root, path)),
                                         draw_detections(image, dets))
                record = detection_record(path, image, model, dets, stats, decoded.seconds, error)
                del image, decoded
                interrupts.critical = True
                log.append(record)
                if error is None:
                    summary.ok += 1
                    summary.ok_now += 1
                else:
                    summary.failed += 1
                    summary.failed_now += 1
                interrupts.leave_critical()
                if error is not None:
                    bar.write(f"slidewin: {path}: {error}", file=sys.stderr)
                    bar.set_postfix_str(f"{summary.failed_now} failed", refresh=False)
                bar.update()
                now = time.perf_counter()
                if bar.disable and now - last_log >= _LOG_EVERY_SECONDS and i + 1 < len(todo):
                    last_log = now
                    rate = (i + 1) / (now - t_start)
                    print(f"slidewin: {summary.skipped + i + 1}/{len(inputs)} images, {rate:.2f} img/s, "
                          f"about {(len(todo) - i - 1) / rate / 60:.1f} min left", file=sys.stderr, flush=True)
                if on_record is not None:
                    on_record(i, record)
    except KeyboardInterrupt:
        summary.interrupted = True
    finally:
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
        bar.close()
        log.close()
        summary.seconds = time.perf_counter() - t_start
    return summary


def _ensure_parent(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path
