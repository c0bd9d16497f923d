"""Folder runs: every image ends with one whole JSON line, whatever happens to the run.

``slidewin detect DIR_OR_GLOB --out-dir OUT`` walks the inputs in sorted order (`inputs`) and
appends one record per image (`records`) to ``OUT/results.jsonl`` (`results_log`): the record
``--json`` writes for one image, plus an ``"error"`` (one line) for an image that could not be
processed, with empty detections. A bad image never stops the run. Images are decoded ahead
(`prefetch`) while the detector works, and a bar or log lines show how far it got (`progress`).
With ``resume`` the images already recorded are skipped, so no line is ever duplicated, and
the settings recorded in ``OUT/run.json`` (`run_settings`) must match.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from pathlib import Path

from slidewin.apps.folder.inputs import result_key
from slidewin.apps.folder.prefetch import DEFAULT_PREFETCH, Decoded, Prefetcher
from slidewin.apps.folder.progress import Progress
from slidewin.apps.folder.records import DetectionRecord
from slidewin.apps.folder.results_log import RESULTS_NAME, ResultsLog, relative_key
from slidewin.apps.folder.run_settings import RunFile
from slidewin.core.detector import Detector
from slidewin.errors import SlidewinError, one_line, printable
from slidewin.io.images import DEFAULT_MAX_PIXELS
from slidewin.io.stderr import STDERR_LOCK

DRAWN_DIR = "drawn"
#: Exit code of a folder run in which some images failed (their records say why).
SOME_FAILED_EXIT = 3


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

    def count(self, ok: bool) -> None:
        if ok:
            self.ok += 1
            self.ok_now += 1
        else:
            self.failed += 1
            self.failed_now += 1


def input_root(inputs: list[Path]) -> Path:
    """The inputs' common folder (what relative drawn paths and moved-tree keys start from)."""
    if not inputs or any("://" in str(p) for p in inputs):
        return Path(".")
    try:
        return Path(os.path.commonpath([os.path.abspath(p.parent) for p in inputs]))
    except ValueError:  # different drives
        return Path(".")


def drawn_path(out_dir: Path, root: Path, image_path: Path) -> Path:
    """``OUT/drawn/<path relative to root>``, as JPEG (``.jpg`` appended unless already JPEG)."""
    rel = Path(os.path.relpath(os.path.abspath(image_path), os.path.abspath(root)))
    if rel.parts and rel.parts[0] == "..":  # outside root: keep only the name
        rel = Path(rel.name)
    if rel.suffix.lower() not in (".jpg", ".jpeg"):
        rel = rel.with_name(rel.name + ".jpg")
    return Path(out_dir) / DRAWN_DIR / rel


def drawn_paths(out_dir: Path, root: Path, inputs: list[Path]) -> dict[Path, Path]:
    """`drawn_path` of every input, made unique: ``a.png`` (drawn as ``a.png.jpg``) and an input
    named ``a.png.jpg`` never share a file; the later one in ``inputs`` order gets ``.2`` (``.3``,
    ...) before ``.jpg``. Inputs are in the same order on every run, so a resume draws the same
    names."""
    out, taken = {}, set()
    for p in inputs:
        target = drawn_path(out_dir, root, p)
        n = 2
        while os.path.normcase(str(target)) in taken:
            target = drawn_path(out_dir, root, p)
            target = target.with_name(f"{target.name[:-len(target.suffix)]}.{n}{target.suffix}")
            n += 1
        taken.add(os.path.normcase(str(target)))
        out[p] = target
    return out


class Interrupts:
    """SIGINT/SIGTERM become KeyboardInterrupt (from the main thread; elsewhere nothing changes),
    but never inside a critical section (a record's write and its bookkeeping); there they are
    held until the section ends. A long run uses it so that a batch system's SIGTERM keeps what
    was done, as Ctrl-C does."""

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


def detect_one(detector: Detector, path: Path, decoded: Decoded, model: str | Path,
               drawn: Path | None = None, out_dir: Path | None = None) -> DetectionRecord:
    """The record of one decoded image: its detections, or the one-line reason it failed.

    Args:
        drawn: also write the image with its boxes here (atomically); when that fails (a full
            disk, a read-only folder) the record says so and the run goes on.
        out_dir: the output folder ``drawn`` lies in: no folder between them may be a link or
            a special file (a drawn image never lands outside it).
    """
    image, error, dets, stats = decoded.image, decoded.error, None, None
    if image is not None:
        try:
            dets = detector.detect(image, decoded.prepared)
            stats = detector.last_stats
            if drawn is not None:
                if out_dir is not None:
                    check_own_folders(out_dir, drawn)
                _draw(image, dets, drawn)
        except KeyboardInterrupt:
            raise
        except Exception as e:  # recorded for this image; the run goes on
            error = one_line(e, with_path=False)
            dets = stats = None
    return DetectionRecord.of(path, image, model, dets, stats, decoded.seconds, error, decoded.warnings)


def check_own_folders(out_dir: Path, path: Path) -> None:
    """Refuse, in one line, a folder between ``out_dir`` and ``path`` (inside it) that is a
    symbolic link or not a folder: writing there would leave the output folder.

    Raises:
        SlidewinError: naming the folder.
    """
    import stat

    cur = Path(out_dir)
    for part in Path(os.path.relpath(path, out_dir)).parts[:-1]:
        cur = cur / part
        try:
            mode = os.lstat(cur).st_mode
        except FileNotFoundError:
            return
        except OSError as e:
            raise SlidewinError(f"cannot use this folder ({e.strerror})", cur) from None
        if not stat.S_ISDIR(mode):
            kind = "a symbolic link" if stat.S_ISLNK(mode) else "not a folder"
            raise SlidewinError(f"is {kind}: slidewin writes drawn images only inside its output folder", cur)


def _draw(image, dets, drawn: Path) -> None:
    from slidewin.io.drawing import draw_detections
    from slidewin.io.files import REFUSE, atomic_write
    from slidewin.io.images import save_image

    try:
        atomic_write(drawn, lambda tmp: save_image(tmp, draw_detections(image, dets)), REFUSE, "drawn image")
    except OSError as e:
        raise SlidewinError(f"cannot write the drawn image {drawn} ({e.strerror})") from None


def _say(text: str) -> None:
    with STDERR_LOCK:
        print(f"slidewin: {printable(text)}", file=sys.stderr)


def open_log(results: Path, resume: bool, model: str | Path, settings: dict | None,
              root: Path | None = None) -> tuple[ResultsLog, RunFile]:
    """The results file, repaired and read, its run record checked (or written), and what was
    repaired or found said on stderr."""
    run = RunFile(results.parent, settings, resume, root)
    log = ResultsLog(results, resume, run.base, run.old_root if run.moved else None)
    if run.moved:
        _say(f"note: the inputs were moved from {run.old_root} to {os.path.abspath(root)} (the output folder with "
             "them): the images recorded there are matched by their path inside it")
    try:
        if resume and not run.path.exists() and log.done:
            _say(f"note: {run.path} is missing (a run of an older slidewin): the settings of the records in "
                 f"{results} are not known; relative paths in them are taken from here")
        if not run.recorded:
            run.write()
    except BaseException:
        log.close()
        raise
    if log.truncated_bytes:
        _say(f"{results}: removed a partial last line ({log.truncated_bytes} bytes) left by an "
             "interrupted write; that image is done again")
    if log.unreadable:
        numbers = ", ".join(map(str, log.unreadable[:10])) + (", ..." if len(log.unreadable) > 10 else "")
        _say(f"{results}: {len(log.unreadable)} corrupt line(s) (line {numbers}) are not JSON records; they are "
             "left as they are, and their images, if any, are done again")
    others = log.models - {str(model)}
    if others:
        _say(f"note: {results} also holds records made with {', '.join(sorted(others))}")
    return log, run


def open_run(inputs: list[Path], out_dir: Path, model: str | Path, resume: bool,
             settings: dict | None = None, root: Path | None = None,
             retry_failed: bool = False) -> tuple[ResultsLog, list[Path], FolderSummary]:
    """Open ``out_dir/results.jsonl`` (repaired and read, its ``run.json`` checked against
    ``settings`` or written) and say what is left to do.

    Every engine starts here, so that all key images alike (`result_key`), record their settings
    alike and resume alike.

    Returns:
        (log, todo, summary): the open results file (`record_all` closes it), the ``inputs`` not
        recorded yet, in order, and the summary so far (what earlier runs recorded).
    """
    results = Path(out_dir) / RESULTS_NAME
    if root is None:
        root = input_root(inputs)
    log, run = open_log(results, resume, model, settings, root)

    def done(p: Path) -> bool | None:
        """ok / failed as recorded earlier, None: not recorded (by absolute path, or in a moved
        tree by the path inside its root)."""
        key = result_key(p)
        if key in log.done:
            return log.done[key]
        if log.done_rel and "://" not in str(p):
            rel = relative_key(os.path.abspath(p), os.path.abspath(root))
            return log.done_rel.get(rel) if rel is not None else None
        return None

    states = [done(p) for p in inputs]
    if retry_failed:  # the failed ones are done again, and their error records removed first
        drop = set()
        for i, p in enumerate(inputs):
            if states[i] is False:
                states[i] = None
                drop.update(log.error_lines.get(result_key(p), ()))
                rel = relative_key(os.path.abspath(p), os.path.abspath(root)) if log.done_rel else None
                drop.update(log.error_lines.get(("rel", rel), ()))
        try:
            log.drop_lines(drop)
        except BaseException:
            log.close()
            raise
    todo = [p for p, state in zip(inputs, states) if state is None]
    earlier = [state for state in states if state is not None]
    summary = FolderSummary(total=len(inputs), ok=sum(earlier), failed=len(earlier) - sum(earlier), ok_now=0,
                            failed_now=0, skipped=len(inputs) - len(todo), truncated_bytes=log.truncated_bytes,
                            results=results)
    return log, todo, summary


def record_all(records: Generator[DetectionRecord, None, None], log: ResultsLog, summary: FolderSummary,
               progress: bool | None = None,
               on_record: Callable[[int, DetectionRecord], None] | None = None,
               unit: str = "images") -> FolderSummary:
    """Append each record to ``log`` as it comes, count it, show progress (``unit``: what the
    records are of, see `Progress`); then close ``log``.

    Ctrl-C and SIGTERM stop the run between two records (never inside a write): the summary
    says ``interrupted`` and every line written is whole. ``records`` is closed on the way out,
    so whatever it holds (decode threads, a Ray dataset) is released.
    """
    bar = Progress(summary.total, summary.skipped, progress, unit)
    interrupts = Interrupts()
    t_start = time.perf_counter()
    try:
        with interrupts:
            for i, record in enumerate(records):
                interrupts.critical = True
                log.append(record)
                summary.count(record.ok)
                interrupts.leave_critical()
                if not record.ok:
                    bar.failed(record.image, record.error, summary.failed_now)
                bar.advance()
                if on_record is not None:
                    on_record(i, record)
    except KeyboardInterrupt:
        summary.interrupted = True
    finally:
        records.close()
        bar.close()
        log.close()
        summary.seconds = time.perf_counter() - t_start
    return summary


def run_folder(detector: Detector, inputs: list[Path], out_dir: Path, model: str | Path, *,
               root: Path | None = None, resume: bool = False, draw: bool = False, convert: bool = False,
               max_pixels: int = DEFAULT_MAX_PIXELS, prefetch: int = DEFAULT_PREFETCH, workers: int = 2,
               progress: bool | None = None, settings: dict | None = None,
               on_record: Callable[[int, DetectionRecord], None] | None = None,
               retry_failed: bool = False) -> FolderSummary:
    """Detect in every image of ``inputs`` and append one record each to ``out_dir/results.jsonl``.

    Args:
        detector: any `Detector`; its `prepare` step (region proposals) runs in the decode threads.
        inputs: image files in the order to process them (see `collect_inputs`).
        out_dir: where ``results.jsonl`` (and ``drawn/`` with ``draw``) go.
        model: what the records name as the model.
        root: the folder relative drawn paths start from (default: the inputs' common folder).
        resume: skip images already in ``results.jsonl`` (else a non-empty file is an error).
        draw: also write each image with its boxes under ``out_dir/drawn/``.
        convert, max_pixels: as for `load_image`.
        prefetch: images decoded ahead in ``workers`` threads (0: decode inline).
        progress: tqdm bar on stderr (None: when stderr is a terminal).
        settings: what decides the records (`run_settings`), recorded in ``out_dir/run.json``; a
            resume with other settings is refused (None: not checked).
        on_record: called with (index in this run, record) after each record is written.
        retry_failed: with ``resume``, also do again the images whose record is an error; their
            error records are removed from ``results.jsonl`` (before any is done again, so an
            interrupted retry leaves them to a later ``--resume``: none lost, none doubled).

    Returns:
        What was done; ``interrupted`` when Ctrl-C or SIGTERM stopped it (whole lines kept).
    """
    out_dir = Path(out_dir)
    if root is None:
        root = input_root(inputs)
    if draw:  # a drawn/ that is a link or a file would fail every image: refuse the run once
        check_own_folders(out_dir, out_dir / DRAWN_DIR / "x")
    log, todo, summary = open_run(inputs, out_dir, model, resume, settings, root, retry_failed)

    drawn_names = drawn_paths(out_dir, root, inputs) if draw else {}

    def records() -> Generator[DetectionRecord, None, None]:
        with Prefetcher(todo, prefetch, workers, convert, max_pixels, detector.prepare) as decoded_images:
            for path, decoded in decoded_images:
                drawn = drawn_names.get(path) if draw else None
                record = detect_one(detector, path, decoded, model, drawn, out_dir)
                del decoded
                yield record

    return record_all(records(), log, summary, progress, on_record)
