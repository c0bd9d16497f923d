"""Video: detect in the frames of a clip, one record per frame, and draw them into a new clip.

``slidewin detect clip.mp4`` reads the clip with OpenCV (``cv2.VideoCapture``, FFmpeg), one frame
at a time: memory holds one frame, whatever the clip's length, and a clip whose frames exceed
``--max-pixels`` is refused when it is opened, as an image that large would be. Each frame done
becomes one `FrameRecord` (the image record plus ``frame``, its index from 0, and ``time_ms``,
its time stamp), written as one JSON line as soon as it is made: to ``--json`` (a JSON Lines
file), or to ``OUT/results.jsonl`` in a resumable ``--out-dir`` run (`ResultsLog`, as folder
runs). ``every`` detects in every Nth frame only (frames 0, N, 2N, ...).

The drawn clip (`VideoOut`) keeps the source's codec family where this OpenCV build can encode
it (MPEG-4 Part 2 ``mp4v``, Motion JPEG ``MJPG``, VP8/VP9), and otherwise the output container's
usual codec (``mp4v`` for .mp4/.mov/.mkv, ``MJPG`` for .avi, ``VP80`` for .webm), saying so in a
note: the pip OpenCV wheels carry no H.264 or H.265 encoder. It holds the frames detected in
(every Nth, at the source's rate divided by N, so it plays at the source's speed), is written
beside its target under a temporary name and put in place when the run ends, however it ends:
the frames before a failure are kept. In an ``--out-dir`` run (``--draw``) a resumed run writes
it again from the start, drawing the recorded boxes on the frames done earlier (a video file
cannot be appended to), so it always shows the whole run.

A clip that cannot be opened, or that ends before the frame count its container states, or
whose stream breaks mid-way, ends the run with one line naming the file and the frame; the
records of the frames before it are kept. What FFmpeg prints about damaged data while a frame
still decodes is kept in that frame's record (``warnings``).
"""

from __future__ import annotations

import json
import os
import re
import stat
import sys
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from slidewin.apps.folder.records import DetectionRecord
from slidewin.core.detections import Detections
from slidewin.errors import ImageError, SlidewinError, printable
from slidewin.io.images import DEFAULT_MAX_PIXELS
from slidewin.io.stderr import captured_stderr

#: Suffixes taken as video files (others are judged by their first bytes, `is_video`).
VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".flv", ".ts",
                  ".m2ts", ".mts", ".3gp", ".ogv")

#: Codec families: the FOURCCs a decoder reports for one family, the one asked of the encoder first.
_FAMILIES = (
    (("mp4v", "fmp4", "xvid", "divx", "dx50", "mp4s", "m4s2"), "mp4v"),  # MPEG-4 Part 2
    (("mjpg", "mjpa", "avrn", "jpeg"), "MJPG"),
    (("avc1", "h264", "x264", "avc3", "davc"), "avc1"),  # H.264
    (("hvc1", "hev1", "hevc", "h265"), "hvc1"),  # H.265
    (("vp80",), "VP80"),
    (("vp90", "vp09"), "VP90"),
    (("av01",), "av01"),
)
#: What each output container gets when the source's family cannot be written.
_CONTAINER_CODEC = {".avi": "MJPG", ".webm": "VP80", ".mpg": "PIM1", ".mpeg": "PIM1"}
_DEFAULT_CODEC = "mp4v"
#: Suffixes the drawn clip may have (those written by OpenCV's FFmpeg muxers and checked here).
OUTPUT_SUFFIXES = (".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm")


def _signature_is_video(head: bytes) -> bool:
    if len(head) >= 12 and head[4:8] == b"ftyp":  # ISO base media: MP4, MOV, 3GP; not HEIC/AVIF stills
        return head[8:12] not in (b"heic", b"heix", b"mif1", b"msf1", b"avif", b"avis")
    return (head[:4] == b"RIFF" and head[8:12] == b"AVI ") or head[:4] == b"\x1aE\xdf\xa3"  # AVI, Matroska/WebM


def is_video(path: str | Path) -> bool:
    """Whether ``path`` is to be read as a video: a video suffix (`VIDEO_SUFFIXES`), or a regular
    file whose first bytes are an MP4/MOV, AVI or Matroska/WebM container."""
    p = Path(path)
    if p.suffix.lower() in VIDEO_SUFFIXES:
        return True
    try:
        if not stat.S_ISREG(os.stat(p).st_mode):
            return False
        with open(p, "rb") as f:
            return _signature_is_video(f.read(12))
    except OSError:
        return False


def _ffmpeg_lines(messages: list[str]) -> list[str]:
    """FFmpeg's lines among captured ones, without its object addresses (``[mjpeg @ 0x55d...]``
    becomes ``[mjpeg]``) and without OpenCV's own log lines."""
    return [re.sub(r"\[([^\]@]*?) @ 0x[0-9a-fA-F]+\]", r"[\1]", m)[:200] for m in messages if "global " not in m]


def _indexed_container(path: Path) -> bool:
    """Whether the file is MP4/MOV (ISO base media) or AVI, whose frame counts are exact."""
    try:
        with open(path, "rb") as f:
            head = f.read(12)
    except OSError:
        return False
    return head[4:8] == b"ftyp" or (head[:4] == b"RIFF" and head[8:12] == b"AVI ")


def _decoder_says(messages: list[str]) -> str:
    """`` (FFmpeg says '...')`` from captured lines (the last, where it gave up); empty if none."""
    lines = _ffmpeg_lines(messages)
    return f" (FFmpeg says {lines[-1][:160]!r})" if lines else ""


def fourcc_text(code: float | int) -> str:
    """A FOURCC as its four characters ('' when unknown)."""
    n = int(code)
    if n <= 0:
        return ""
    text = n.to_bytes(4, "little").decode("latin-1")
    return text if text.isprintable() else ""


@dataclass
class FrameRecord(DetectionRecord):
    """The record of one video frame: the image record (``image`` is the video) plus its index
    from 0 (``frame``) and its time stamp in milliseconds (``time_ms``)."""

    frame: int = 0
    time_ms: float = 0.0

    def to_json(self) -> dict:
        value = super().to_json()
        return {"image": value.pop("image"), "frame": self.frame, "time_ms": self.time_ms, **value}


@dataclass
class Frame:
    """One frame read: its index, time stamp, RGB pixels (None: skipped, not decoded) and what the
    decoder said about it."""

    index: int
    time_ms: float
    rgb: np.ndarray | None
    seconds: float
    warnings: list[str]


class VideoReader:
    """A video file opened for reading, frame by frame.

    Args:
        path: the video file (a regular file).
        max_pixels: refuse frames with more pixels than this (as images are refused).

    Attributes:
        width, height: the frame size the container states.
        fps: frames per second (0.0 when not stated).
        frame_count: frames the container states (0 when not stated; an estimate for some).
        fourcc: the codec's FOURCC ('' when unknown).

    Raises:
        ImageError: the file is missing, not a regular file, empty, cannot be opened as a
            video, or its frames are too large.
    """

    def __init__(self, path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS):
        self.path = Path(path)
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            raise ImageError("no such file", self.path) from None
        except OSError as e:
            raise ImageError(f"cannot read file ({e.strerror})", self.path) from None
        if stat.S_ISDIR(st.st_mode):
            raise ImageError("is a directory, not a video", self.path)
        if not stat.S_ISREG(st.st_mode):
            raise ImageError("not a video file: not a regular file", self.path)
        if st.st_size == 0:
            raise ImageError("empty file (0 bytes)", self.path)
        with captured_stderr() as messages:
            # One decoding thread: FFmpeg's frame threads print their complaints whenever they
            # decode, after the capture of the frame they belong to has ended (unlabelled on the
            # terminal, or in the wrong frame's record). Decoding one frame costs milliseconds
            # against the detector's tens to hundreds.
            self.cap = cv2.VideoCapture(str(self.path), cv2.CAP_FFMPEG, [cv2.CAP_PROP_N_THREADS, 1])
        if not self.cap.isOpened():
            self.cap.release()
            raise ImageError(f"cannot open video: not a video, or damaged{_decoder_says(messages)}", self.path)
        self.width = int(self.cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        self.height = int(self.cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        fps = self.cap.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if fps and np.isfinite(fps) and 0 < fps < 10_000 else 0.0
        count = self.cap.get(cv2.CAP_PROP_FRAME_COUNT)
        self.frame_count = int(count) if count and np.isfinite(count) and count > 0 else 0
        self.fourcc = fourcc_text(self.cap.get(cv2.CAP_PROP_FOURCC))
        self.exact_count = _indexed_container(self.path)
        if self.width * self.height > max_pixels:
            self.cap.release()
            raise ImageError(f"video frames too large: {self.width}x{self.height} = {self.width * self.height:,} "
                             f"pixels exceeds --max-pixels {max_pixels:,}", self.path)
        self.max_pixels = max_pixels

    def frames(self, every: int = 1, decode_from: int = 0) -> Iterator[Frame]:
        """Every ``every``-th frame (0, N, 2N, ...), in order, one at a time.

        Args:
            every: the step between the frames yielded.
            decode_from: frames before this index are yielded without pixels (``rgb`` None):
                skipping them costs no colour conversion.

        Raises:
            ImageError: the stream ends before the frame count its container states, or breaks:
                naming the frame that could not be read (the frames yielded before it stand).
        """
        index = 0
        while True:
            wanted = index % every == 0
            pixels = wanted and index >= decode_from
            t0 = time.perf_counter()
            with captured_stderr() as messages:
                ok = self.cap.grab()
                bgr = None
                if ok and pixels:
                    ok, bgr = self.cap.retrieve()
                    ok = ok and bgr is not None and bgr.size > 0
            if not ok:
                self._check_end(index, messages)
                return
            if wanted:
                ms = self.cap.get(cv2.CAP_PROP_POS_MSEC)
                if not (np.isfinite(ms) and (ms > 0 or index == 0)) and self.fps:
                    ms = index * 1000.0 / self.fps
                rgb = None if bgr is None else self._rgb(bgr, index)
                yield Frame(index, round(float(ms), 3), rgb, time.perf_counter() - t0,
                            _ffmpeg_lines(messages))
            index += 1

    def _rgb(self, bgr: np.ndarray, index: int) -> np.ndarray:
        if bgr.ndim != 3 or bgr.shape[2] != 3 or bgr.dtype != np.uint8:
            raise ImageError(f"frame {index}: unsupported pixels {bgr.dtype} {tuple(bgr.shape)} (expected 8-bit "
                             "colour)", self.path)
        if bgr.shape[0] * bgr.shape[1] > self.max_pixels:  # a stream whose size changes mid-way
            raise ImageError(f"frame {index}: {bgr.shape[1]}x{bgr.shape[0]} pixels exceeds --max-pixels "
                             f"{self.max_pixels:,}", self.path)
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB, dst=bgr)

    def _check_end(self, index: int, messages: list[str]) -> None:
        """The stream stopped at ``index``: its end, or a failure said in one line.

        MP4/MOV and AVI index their frames, so their count is exact: fewer frames than it (more
        than one fewer, or one with a word from the decoder) is a clip cut short or broken. Other
        containers (Matroska, WebM, MPEG-TS) state a count estimated from the duration: there
        only a stop the decoder complains about is a failure. No frame at all always is."""
        short = self.frame_count - index
        failed = short > 1 or (short == 1 and messages) if self.exact_count else short > 0 and messages
        if index == 0 or failed:
            of = f" of {self.frame_count}" if self.frame_count else ""
            raise ImageError(f"video ends early: frame {index}{of} cannot be read (truncated or corrupt)"
                             f"{_decoder_says(messages)}; the {index} frame(s) before it are kept", self.path)

    def close(self) -> None:
        self.cap.release()

    def __enter__(self) -> "VideoReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def codec_candidates(source_fourcc: str, suffix: str) -> list[str]:
    """The FOURCCs to try for a drawn clip: the source's codec family first, then the output
    container's usual codec."""
    tried: list[str] = []
    key = source_fourcc.strip().lower()
    for members, fourcc in _FAMILIES:
        if key in members:
            tried.append(fourcc)
            break
    else:
        if len(source_fourcc) == 4 and source_fourcc.isalnum():
            tried.append(source_fourcc)
    fallback = _CONTAINER_CODEC.get(suffix.lower(), _DEFAULT_CODEC)
    if fallback not in tried:
        tried.append(fallback)
    return tried


class VideoOut:
    """The drawn clip, written under a temporary name beside ``path`` and put in place by `finish`.

    Args:
        path: the clip to write (a suffix in `OUTPUT_SUFFIXES` chooses the container).
        source_fourcc: the source's codec, whose family is kept where it can be encoded.
        fps: frames per second of the drawn clip.
        size: (width, height) of its frames; frames of another size are resized to it.
        note: called with one line when the codec had to change.

    Raises:
        SlidewinError: no codec of the candidates (`codec_candidates`) can be written here.
    """

    def __init__(self, path: str | Path, source_fourcc: str, fps: float, size: tuple[int, int],
                 note: Callable[[str], None] | None = None):
        self.path = Path(path)
        self.size = (max(2, size[0]), max(2, size[1]))
        self.tmp = self.path.with_name(f".{self.path.stem}.slidewin-{os.getpid()}.tmp{self.path.suffix}")
        self.frames = 0
        self.writer = None
        tried = codec_candidates(source_fourcc, self.path.suffix)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise SlidewinError(f"cannot create the folder of the video ({e.strerror})", self.path) from None
        for fourcc in tried:
            with captured_stderr():  # FFmpeg's complaints about a codec it lacks
                writer = cv2.VideoWriter(str(self.tmp), cv2.VideoWriter_fourcc(*fourcc), fps or 25.0, self.size)
            if writer.isOpened():
                self.writer, self.fourcc = writer, fourcc
                break
            writer.release()
        if self.writer is None:
            self.tmp.unlink(missing_ok=True)
            raise SlidewinError(f"cannot write a {self.path.suffix} video with {' or '.join(tried)} in this OpenCV "
                                "build: write .avi (MJPG) or .mp4 (mp4v)", self.path)
        if tried[0] != self.fourcc and note is not None:
            source = source_fourcc or "unknown"
            note(f"{self.path}: this OpenCV build cannot encode {tried[0]} (the source's codec family, {source}): "
                 f"written as {self.fourcc}")

    def write(self, rgb: np.ndarray) -> None:
        """Append one RGB frame."""
        bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
        if (bgr.shape[1], bgr.shape[0]) != self.size:
            bgr = cv2.resize(bgr, self.size, interpolation=cv2.INTER_AREA)
        self.writer.write(bgr)
        self.frames += 1

    def finish(self) -> bool:
        """Close the clip and put it in place; a clip without frames is removed instead (False)."""
        if self.writer is None:
            return False
        with captured_stderr():
            self.writer.release()
        self.writer = None
        if not self.frames:
            self.tmp.unlink(missing_ok=True)
            return False
        os.replace(self.tmp, self.path)
        return True


class JsonLines:
    """``--json`` of a video: one JSON line per frame, written (and flushed) as each is made, to a
    file or to stdout (``-``); the same ``append``/``close`` as `ResultsLog`. The file is created
    with the first record: a clip that cannot be opened leaves none."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.stdout = str(path) == "-"
        self.file = sys.stdout if self.stdout else None

    def append(self, record: DetectionRecord) -> None:
        try:
            if self.file is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self.file = open(self.path, "w", encoding="utf-8")
            self.file.write(json.dumps(record.to_json()) + "\n")
            self.file.flush()
        except OSError as e:
            raise SlidewinError(f"cannot write ({e.strerror})", self.path) from None

    def close(self) -> None:
        if not self.stdout and self.file is not None and not self.file.closed:
            self.file.close()


def recorded_frames(results: Path, video: str | Path, base: str | Path | None) -> Iterator[tuple[int, list[dict]]]:
    """``(frame, detections)`` of the frame records of ``video`` in a results file, in file order
    (read line by line: a resumed run holds one line at a time)."""
    from slidewin.apps.folder.inputs import result_key
    from slidewin.apps.folder.results_log import complete_lines

    key = result_key(video)
    fd = os.open(results, os.O_RDONLY)
    try:
        for line, _ in complete_lines(fd, os.fstat(fd).st_size):
            try:
                value = json.loads(line)
                if (value.get("error") is None and isinstance(value.get("frame"), int)
                        and result_key(value["image"], base) == key):
                    yield value["frame"], list(value.get("detections") or ())
            except (ValueError, TypeError, AttributeError, RecursionError):
                continue
    finally:
        os.close(fd)


def _detections_of(records: list[dict], labels) -> Detections:
    if not records:
        return Detections.empty(labels)
    return Detections(np.array([r["xyxy"] for r in records], np.float32), np.array([r["score"] for r in records]),
                      np.array([r["class_id"] for r in records]), labels)


@dataclass
class VideoRun:
    """What a video run did."""

    video: Path
    frames: int  # frame records this run wrote
    earlier: int  # frames recorded by an earlier run (resumed)
    failed: int  # frames whose detection failed (their records say why)
    boxes: int  # detections in this run's frames
    drawn: Path | None  # the drawn clip, when it was written
    drawn_frames: int
    seconds: float
    interrupted: bool = False
    error: SlidewinError | None = None  # what ended the run early (the frames before it stand)


def run_video(detector, video: str | Path, model: str | Path, sink, *, every: int = 1,
              drawn: Path | None = None, done: int = -1, recorded: Iterator | None = None,
              max_pixels: int = DEFAULT_MAX_PIXELS, progress: bool | None = None,
              note: Callable[[str], None] | None = None) -> VideoRun:
    """Detect in every ``every``-th frame of ``video`` and append one `FrameRecord` each to ``sink``.

    Args:
        detector: any `Detector`.
        video: the clip.
        model: what the records name as the model.
        sink: where records go, one at a time: a `ResultsLog` (``--out-dir``) or `JsonLines`;
            closed at the end.
        every: detect in frames 0, N, 2N, ... only.
        drawn: also write the frames with their boxes drawn to this clip (`VideoOut`).
        done: the last frame an earlier run recorded (resume): frames up to it are not detected
            again; with ``drawn`` their recorded boxes (``recorded``: ``(frame, detections)`` in
            frame order) are drawn.
        max_pixels: refuse frames with more pixels than this.
        progress: a bar on stderr (None: when stderr is a terminal).
        note: called with one line for things worth saying (a codec changed, damaged data).

    Returns:
        What was done. A stream that breaks, or a Ctrl-C, ends the run with the records and the
        drawn frames before it kept (``error``, ``interrupted``).

    Raises:
        ImageError: the clip cannot be opened (nothing was written).
        SlidewinError: the drawn clip cannot be written.
    """
    from slidewin.apps.folder.run import FolderSummary, record_all
    from slidewin.io.drawing import draw_detections

    video = Path(video)
    t_start = time.perf_counter()
    reader = out = None
    try:
        reader = VideoReader(video, max_pixels)
        if drawn is not None:
            fps = reader.fps / every if reader.fps else 0.0
            out = VideoOut(drawn, reader.fourcc, fps, (reader.width, reader.height), note)
    except BaseException:
        sink.close()
        if reader is not None:
            reader.close()
        raise
    wanted = -(-reader.frame_count // every) if reader.frame_count else None
    earlier = 0 if done < 0 else done // every + 1
    summary = FolderSummary(total=wanted, ok=0, failed=0, ok_now=0, failed_now=0, skipped=earlier,
                            truncated_bytes=0, results=Path(getattr(sink, "path", None) or "-"))
    boxes, damaged = [0], []
    old = iter(recorded or ())
    pending = [next(old, None)]

    def old_boxes(index: int) -> list[dict]:
        while pending[0] is not None and pending[0][0] < index:
            pending[0] = next(old, None)
        return pending[0][1] if pending[0] is not None and pending[0][0] == index else []

    def records() -> Generator[DetectionRecord, None, None]:
        for frame in reader.frames(every, decode_from=done + 1 if out is None else 0):
            if frame.index <= done:  # recorded by an earlier run: drawn again from its record
                if out is not None:
                    out.write(draw_detections(frame.rgb, _detections_of(old_boxes(frame.index), detector.labels)))
                continue
            if frame.warnings:
                damaged.append((frame.index, frame.warnings[-1]))
            record = _detect_frame(detector, video, model, frame, out)
            boxes[0] += len(record.detections)
            yield record

    error = None
    try:
        record_all(records(), sink, summary, progress, unit="frames")
    except ImageError as e:  # the stream broke: the records and drawn frames before it stand
        error = e
    finally:
        reader.close()
        written = out.finish() if out is not None else False
    if damaged and note is not None and error is None:  # else the error's line says it
        index, message = damaged[0]
        note(f"{video}: FFmpeg reported damaged data in {len(damaged)} frame(s), first frame {index}: "
             f"{message!r} (kept in their records' warnings)")
    return VideoRun(video=video, frames=summary.ok_now + summary.failed_now, earlier=earlier,
                    failed=summary.failed_now, boxes=boxes[0], drawn=drawn if written else None,
                    drawn_frames=out.frames if out is not None else 0, seconds=time.perf_counter() - t_start,
                    interrupted=summary.interrupted, error=error)


def _detect_frame(detector, video: Path, model, frame: Frame, out: VideoOut | None) -> FrameRecord:
    """The record of one frame (its detections, or why detection failed), drawn into ``out``."""
    from slidewin.errors import one_line
    from slidewin.io.drawing import draw_detections

    dets = stats = error = None
    try:
        dets = detector.detect(frame.rgb)
        stats = detector.last_stats
    except (KeyboardInterrupt, SlidewinError):
        raise
    except Exception as e:  # recorded for this frame; the run goes on
        error = f"frame {frame.index}: {one_line(e, with_path=False)}"
    if out is not None:
        out.write(frame.rgb if dets is None else draw_detections(frame.rgb, dets))
    base = DetectionRecord.of(video, frame.rgb, model, dets, stats, frame.seconds, error, frame.warnings)
    return FrameRecord(**vars(base), frame=frame.index, time_ms=frame.time_ms)


def last_recorded_frame(results: Path, video: str | Path, base: str | Path | None) -> int:
    """The highest frame index of ``video`` recorded (without error) in ``results`` (-1: none)."""
    last = -1
    for index, _ in recorded_frames(results, video, base):
        last = max(last, index)
    return last


def describe(run: VideoRun, every: int) -> str:
    """One line: what the run did."""
    step = "" if every == 1 else f" (1 in {every})"
    earlier = f" ({run.earlier} recorded earlier)" if run.earlier else ""
    failed = f", {run.failed} failed" if run.failed else ""
    return printable(f"{run.video}: {run.frames} frame(s){step}{earlier}{failed}, {run.boxes} detection(s) "
                     f"in {run.seconds:.1f} s")
