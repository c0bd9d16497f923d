"""The inputs beyond image files: ``detect`` on a video, ``-`` (one image from stdin) for
``detect`` and ``classify``, and ``classify`` on several photos. `slidewin.cli.commands` hands
these over; the work is in `slidewin.apps.video` and `slidewin.io.stdin`."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from slidewin.errors import ImageError, SlidewinError, one_line

STDIN = "-"


def is_stdin(path) -> bool:
    return str(path) == STDIN


def detect_media(args, engine) -> int | None:
    """Run ``detect`` on a video; None when the inputs are image files, folders or ``-`` (stdin:
    one image, which the one-image path reads through `read_stdin_image`), once the flags that
    do not fit stdin are refused."""
    from slidewin.apps.folder.engines import Engine, is_uri
    from slidewin.apps.video import is_video

    images = args.image
    stdin = any(is_stdin(p) for p in images)
    videos = [p for p in images if not is_uri(p) and not is_stdin(p) and not Path(p).is_dir() and is_video(p)]
    if not stdin and not videos:
        if args.every is not None:
            raise SlidewinError("--every is for videos (it skips frames)")
        return None
    if len(images) > 1:
        first = STDIN if stdin else videos[0]
        raise SlidewinError(f"{first}: {'stdin' if stdin else 'a video'} is read alone: give it as the only input")
    if engine is Engine.RAY:
        raise SlidewinError("--engine ray runs folders of images; a video or stdin runs with --engine local")
    if args.every is not None and stdin:
        raise SlidewinError("--every is for videos (it skips frames)")
    if stdin:
        _refuse(args, ("--out-dir", "--resume", "--retry-failed", "--draw", "--prefetch", "--format"),
                "is for folder runs; - reads one image from stdin")
        return None
    if getattr(args, "heatmap", None) is not None:
        raise SlidewinError("--heatmap is drawn for one image file, not a video", images[0])
    return _detect_video(args, Path(images[0]))


def _refuse(args, flags: tuple[str, ...], why: str) -> None:
    for flag in flags:
        if getattr(args, flag.lstrip("-").replace("-", "_")):
            raise SlidewinError(f"{flag} {why}")


def read_stdin_image(convert: bool, max_pixels: int | None):
    """One image from stdin: (RGB array, decode seconds, the decoder's notes)."""
    from slidewin.io.images import DEFAULT_MAX_PIXELS, decode_image
    from slidewin.io.stdin import STDIN_NAME, read_image_stream

    if sys.stdin is None or sys.stdin.isatty():
        raise ImageError("- reads an image from stdin, which is a terminal: pipe one in (slidewin detect - < "
                         "photo.jpg)", STDIN_NAME)
    max_pixels = max_pixels or DEFAULT_MAX_PIXELS
    t0 = time.perf_counter()
    data = read_image_stream(sys.stdin.buffer, max_pixels)
    notes: list[str] = []
    image = decode_image(data, STDIN_NAME, convert=convert, max_pixels=max_pixels, notes=notes)
    return image, time.perf_counter() - t0, notes


def _detect_video(args, video: Path) -> int:
    """``detect clip.mp4``: one record per frame to ``--json`` (JSON Lines) or OUT/results.jsonl."""
    import shlex

    from slidewin.apps.folder.results_log import RESULTS_NAME
    from slidewin.apps.folder.run import SOME_FAILED_EXIT, check_own_folders, open_log
    from slidewin.apps.video import (OUTPUT_SUFFIXES, JsonLines, VideoReader, describe, last_recorded_frame,
                                     recorded_frames, run_video)
    from slidewin.cli.commands import _open_detector, _report_stream, _settings, check_outputs, model_header, say
    from slidewin.cli.options import preset_line
    from slidewin.io.files import check_output_dir
    from slidewin.io.images import DEFAULT_MAX_PIXELS

    every = args.every or 1
    _refuse(args, ("--retry-failed", "--prefetch", "--format"),
            "is for folders of images; a video's frames are recorded one by one")
    suffixes = ", ".join(OUTPUT_SUFFIXES)
    drawn = results = None
    if args.out_dir is None:
        _refuse(args, ("--resume", "--draw"), "is for --out-dir runs: add --out-dir OUT")
        if args.out_image is not None and (str(args.out_image) == STDIN
                                           or args.out_image.suffix.lower() not in OUTPUT_SUFFIXES):
            raise SlidewinError(f"--out-image of a video is a video file: give it one of the suffixes {suffixes}",
                                args.out_image)
        check_outputs({"--out-image": args.out_image, "--json": args.json}, (video, args.model))
        drawn = args.out_image
    else:
        if args.out_image is not None or args.json is not None:
            raise SlidewinError("--out-image and --json are for a run without --out-dir; with --out-dir the frames' "
                                "records go to OUT/results.jsonl (and --draw writes OUT/drawn/<video name>)")
        check_output_dir(args.out_dir, "--out-dir")
        results = args.out_dir / RESULTS_NAME
        if not args.resume and results.is_file() and results.stat().st_size:
            raise SlidewinError("already holds results: pass --resume to continue that run, or choose "
                                "another --out-dir", results)
        if args.draw:
            suffix = video.suffix.lower() if video.suffix.lower() in OUTPUT_SUFFIXES else ".mp4"
            drawn = args.out_dir / "drawn" / (video.stem + suffix)
            check_own_folders(args.out_dir, drawn)
            drawn.parent.mkdir(parents=True, exist_ok=True)
    VideoReader(video, args.max_pixels or DEFAULT_MAX_PIXELS).close()  # a clip that cannot be read: before the model
    config, proposals, max_pixels, settings = _settings(args)
    detector = _open_detector(args.model, config, args.classes, args.device, proposals)
    to = _report_stream(args.json)
    say(f"model: {model_header(detector.meta)}; {preset_line(args)}", file=to)

    def note(text: str) -> None:
        say(f"slidewin: note: {text}", file=sys.stderr)

    done, recorded = -1, None
    if results is None:
        sink = JsonLines(args.json) if args.json is not None else _NoSink()
    else:
        sink, run_file = open_log(results, args.resume, args.model, {**settings, "every": every}, video.parent)
        done = last_recorded_frame(results, video, run_file.base)
        if drawn is not None and done >= 0:
            recorded = recorded_frames(results, video, run_file.base)
    run = run_video(detector, video, args.model, sink, every=every, drawn=drawn, done=done, recorded=recorded,
                    max_pixels=max_pixels, note=note)
    say(describe(run, every), file=to)
    if drawn is not None and run.drawn is not None:
        say(f"wrote video: {drawn} ({run.drawn_frames} frame(s))", file=to)
    if args.json is not None and str(args.json) != STDIN and run.frames:
        say(f"wrote json: {args.json}", file=to)
    if results is not None:
        say(f"results: {results}", file=to)
    if run.interrupted:
        again = ["slidewin", *args.argv] + ([] if "--resume" in args.argv else ["--resume"])
        how = f" Resume with:\n  {shlex.join(again)}" if results is not None else ""
        say(f"slidewin: interrupted; {run.frames} frame(s) recorded this run.{how}", file=sys.stderr)
        return 130
    if run.error is not None:
        raise run.error
    if run.failed:
        say(f"slidewin: {run.failed} frame(s) failed: their records have an \"error\"", file=sys.stderr)
        return SOME_FAILED_EXIT
    return 0


class _NoSink:
    """Records nowhere (a video run that only draws, or only prints its summary)."""

    path = None

    def append(self, record) -> None:
        pass

    def close(self) -> None:
        pass


def classify_many(args) -> int:
    """``classify`` on each photo (or ``-``): one block each; a bad photo is one line on stderr, the
    others are still classified, and the exit code says that one failed."""
    from slidewin.cli.commands import _load, model_header, say
    from slidewin.io.stdin import STDIN_NAME
    from slidewin.runtime.classifier import Classifier

    if sum(is_stdin(p) for p in args.image) > 1:
        raise SlidewinError("- (stdin) can be given once")
    clf = Classifier(args.model, device=args.device)
    header, failed, printed = model_header(clf.meta), None, False
    for path in args.image:
        try:
            image = _load(path, args.convert)
        except ImageError as e:
            say(f"slidewin: error: {one_line(e)}", file=sys.stderr)
            failed = failed or e
            continue
        if printed:
            say("")
        printed = True
        say(f"{STDIN_NAME if is_stdin(path) else path}  ({header})")
        for rank, p in enumerate(clf.classify(image, top_k=args.top_k), 1):
            say(f"{rank:>3}. {p.label:<30} {p.class_id:>5}  {p.probability:.4f}")
    return 0 if failed is None else failed.exit_code
