"""The ``slidewin`` command: a thin argparse layer over the library.

Every failure the user can cause ends as one line on stderr and a non-zero exit code.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

from slidewin.errors import SlidewinError, is_internal, one_line, printable
from slidewin.io.stderr import eprint

__all__ = ["build_parser", "entry", "main"]


class _Parser(argparse.ArgumentParser):
    """argparse with its errors in one line (no usage block): the rule for every bad input."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {printable(message)} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from slidewin import __version__

    parser = _Parser(
        prog="slidewin",
        description="Turn an image classifier into an object detector (ONNX Runtime, no training framework).",
    )
    parser.add_argument("--version", action="version", version=f"slidewin {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_add_classify, _add_detect, _add_compare, _add_evaluate, _add_labels, _add_demo):
        add(sub)
    # `export` and any other command of an optional package: named in a registry, loaded here
    from slidewin.cli.registry import add_external_commands

    add_external_commands(sub)
    return parser


def _add_classify(sub) -> None:
    from slidewin.cli import commands as c
    from slidewin.cli.options import add_convert_arg, add_device_arg, count

    p = sub.add_parser("classify", help="top-k labels of whole images, one block per image")
    p.add_argument("image", type=Path, nargs="+", metavar="IMAGE",
                   help="one or more photos ('-' reads one from stdin); a bad one is said in one line, the others "
                        "are still classified, and the exit code is non-zero")
    p.add_argument("--model", type=Path, required=True, help="classifier ONNX written by `slidewin export`")
    p.add_argument("--top-k", type=count(1), default=5, metavar="K",
                   help="how many labels to print, most probable first (default %(default)s)")
    add_device_arg(p)
    add_convert_arg(p)
    p.set_defaults(func=c.cmd_classify)


def _add_detect(sub) -> None:
    from slidewin.cli import commands as c
    from slidewin.cli.options import add_convert_arg, add_detector_args, add_engine_args, count, source

    p = sub.add_parser(
        "detect", help="detect objects in an image (drawn image, JSON) or in a folder (results.jsonl)",
        description="One IMAGE: print the detections, optionally --out (drawn) and --json. A folder "
                    "(walked recursively), a quoted glob or several paths, with --out-dir: one JSON line "
                    "per image in OUT/results.jsonl, bad images recorded with an error and skipped; "
                    "exit code 3 when some failed. A run killed at any point keeps whole lines: "
                    "--resume continues it. --engine ray runs a folder on a Ray cluster, same results.")
    p.add_argument("image", type=source, nargs="+", metavar="IMAGE",
                   help="an image, a folder, or a glob such as 'photos/**/*.jpg' (quote it); with --engine ray "
                        "also a folder or file URI such as s3://bucket/photos/; a video (.mp4, .avi, .mov, .mkv, "
                        ".webm, ...): one JSON line per frame, --out-image writes the drawn video; - reads one "
                        "image from stdin")
    p.add_argument("--model", type=Path, required=True, help="ONNX model written by `slidewin export`")
    _add_out_image(p, "write the image with boxes drawn here")
    p.add_argument("--json", type=Path, default=None, help="write the detections as JSON here ('-' for stdout)")
    p.add_argument("--heatmap", type=Path, default=None, metavar="FILE",
                   help="one image: also write here where the classifier sees each class: the dense probability "
                        "map of the 3 classes with the highest peak (all the --classes named, up to 6) blended over "
                        "the photo in the boxes' colours, with a legend; needs a classifier with a dense form")
    g = p.add_argument_group("folders")
    g.add_argument("--out-dir", type=Path, default=None,
                   help="folder run: append one JSON line per image to OUT_DIR/results.jsonl")
    g.add_argument("--resume", action="store_true",
                   help="continue an interrupted run: skip the images already in results.jsonl")
    g.add_argument("--retry-failed", action="store_true",
                   help="with --resume: also redo the images whose record is an error (a full disk, a file "
                        "being copied), replacing those records")
    g.add_argument("--draw", action="store_true", help="also write OUT_DIR/drawn/<relative path>.jpg")
    g.add_argument("--format", action="append", choices=["coco", "yolo", "csv"], default=None,
                   help="also write the results as OUT_DIR/detections.coco.json (a COCO results file with COCO "
                        "category ids), OUT_DIR/yolo/<image stem>.txt with classes.txt, or OUT_DIR/detections.csv "
                        "(repeat for several); made from results.jsonl after the run")
    g.add_argument("--every", type=count(1), default=None, metavar="N",
                   help="video: detect in every Nth frame only (frames 0, N, 2N, ...; default 1)")
    g.add_argument("--prefetch", type=count(0), default=None, metavar="N",
                   help="images decoded ahead while the model runs (default 4; 0 decodes inline)")
    add_engine_args(p)
    p.add_argument("--max-pixels", type=count(1), default=None, metavar="N",
                   help="refuse images with more pixels than this (default 400,000,000: 20000x20000 fits)")
    add_convert_arg(p)
    add_detector_args(p, preset_default="display")
    p.set_defaults(func=c.cmd_detect)


def _add_compare(sub) -> None:
    from slidewin.cli import commands as c
    from slidewin.cli.options import add_convert_arg, add_detector_args
    from slidewin.proposals.generators import ProposalMethod

    p = sub.add_parser("compare", help="windows against region proposals on one image: a table and a picture",
                       description="The classifier slid over the image (windows), the same classifier scoring "
                                   "region proposals (--proposals, default selective-search-fast; 'windows' leaves "
                                   "that panel out), and a Faster R-CNN model when --frcnn is given.")
    p.add_argument("image", type=Path)
    p.add_argument("--model", "--classifier", dest="model", type=Path, required=True,
                   help="classifier ONNX (slid over the image and scoring the proposals)")
    p.add_argument("--frcnn", type=Path, default=None, help="region-proposal ONNX (slidewin export frcnn-...)")
    _add_out_image(p, "write the side-by-side picture here")
    p.add_argument("--json", type=Path, default=None, help="write both results and timings as JSON here")
    add_convert_arg(p)
    add_detector_args(p, classes_default="coco", proposals_default=ProposalMethod.SELECTIVE_SEARCH_FAST)
    p.set_defaults(func=c.cmd_compare)


def _add_evaluate(sub) -> None:
    from slidewin.apps.evaluate import EVAL_MIN_SCORE, Recipe
    from slidewin.cli import commands as c
    from slidewin.cli.options import add_detector_args, choices, count

    p = sub.add_parser("evaluate", help="COCO AP of a model on a COCO-format dataset",
                       description="COCO AP (faster-coco-eval) of a model on a COCO-format dataset: --data DIR, "
                                   "or --images DIR --annotations FILE. With --out-dir: metrics.json, report.md, "
                                   "charts, and detections.json (COCO results). Ctrl-C keeps the detections done.")
    p.add_argument("--data", type=Path, default=None, metavar="DIR",
                   help="dataset folder: images/ and instances.json, or COCO's annotations/instances_<split>.json "
                        "and <split>/")
    p.add_argument("--images", type=Path, default=None, metavar="DIR",
                   help="the images folder (file_name in the annotations is relative to it); with --annotations")
    p.add_argument("--annotations", type=Path, default=None, metavar="FILE",
                   help="the COCO instances file, e.g. annotations/instances_val2017.json; with --images")
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--recipe", choices=choices(Recipe), default=Recipe.SLIDEWIN.value,
                   help="the settings to start from: slidewin's own, or the usual tutorial recipe (top-1 >= 0.9, "
                        "ROI 200x150, step 16); detector flags given explicitly change them")
    p.add_argument("--out-dir", type=Path, default=None, metavar="DIR",
                   help="report folder (metrics.json, report.md, charts)")
    p.add_argument("--out", type=Path, dest="out_dir", default=None, help=argparse.SUPPRESS)  # the old spelling
    p.add_argument("--overwrite", action="store_true",
                   help="write into an --out-dir that holds files already (an earlier report's files are replaced; "
                        "others are left)")
    p.add_argument("--limit", type=count(1), default=None, help="only the first N images (by id)")
    add_detector_args(p, min_score_default=EVAL_MIN_SCORE)
    p.set_defaults(func=c.cmd_evaluate)


def _add_labels(sub) -> None:
    from slidewin.cli import commands as c

    p = sub.add_parser("labels", help="list a model's labels and what --classes accepts",
                       description="Print the model's labels with their class ids (what --classes takes as "
                                   "indices, ranges or names); --groups adds the label groups (COCO categories "
                                   "of an ImageNet-1k model) with their members, and the categories it cannot name.")
    p.add_argument("--model", type=Path, required=True, help="ONNX model written by `slidewin export`")
    p.add_argument("--groups", action="store_true", help="also list the label groups and their members")
    p.set_defaults(func=c.cmd_labels)


def _add_out_image(p: argparse.ArgumentParser, help_text: str) -> None:
    """``--out-image FILE``; ``--out`` stays accepted (the old spelling), out of the help."""
    p.add_argument("--out-image", type=Path, default=None, metavar="FILE", help=help_text)
    p.add_argument("--out", type=Path, dest="out_image", default=None, help=argparse.SUPPRESS)


def _add_demo(sub) -> None:
    from slidewin.cli import commands as c
    from slidewin.cli.options import add_convert_arg, add_device_arg

    p = sub.add_parser("demo", help="export the offline default model if needed and detect in a sample scene")
    p.add_argument("--model", type=Path, default=c.DEFAULT_DEMO_MODEL,
                   help=f"classifier to use; exported here first if missing (default {c.DEFAULT_DEMO_MODEL})")
    p.add_argument("--out-dir", type=Path, default=Path("out"), help="where to write demo.jpg and demo.json")
    add_device_arg(p)
    add_convert_arg(p)
    p.set_defaults(func=c.cmd_demo)


def main(argv: list[str] | None = None) -> int:
    closed = reopen_closed_streams()
    previous = _catch_sigint()
    try:
        if "stdout" in closed:
            eprint("slidewin: note: standard output is closed: what this command prints is discarded "
                   "(the files it writes are still written)")
        parser = build_parser()
        args = parser.parse_args(argv)
        args.argv = list(sys.argv[1:] if argv is None else argv)
        return args.func(args)
    except KeyboardInterrupt:  # at any point, even while the parser imports the commands
        return _interrupted()
    except BrokenPipeError:
        return 1
    except Exception as e:
        if _sigint_seen:  # a C extension's import turned the interrupt into its own error
            return _interrupted()
        if is_internal(e):  # a bug: still one line, but say so
            eprint(f"slidewin: {one_line(e)} (please report this)")
            return 1
        eprint(f"slidewin: error: {one_line(e)}")
        return e.exit_code if isinstance(e, SlidewinError) else 2
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


_sigint_seen = False


def _on_sigint(signum, frame) -> None:
    """Python's own SIGINT handler, which also notes that the interrupt came: importing NumPy or
    ONNX Runtime turns a KeyboardInterrupt raised inside it into ImportError('initialization
    failed'), which is the user's Ctrl-C all the same, not a bug to report."""
    global _sigint_seen
    _sigint_seen = True
    raise KeyboardInterrupt


def _catch_sigint():
    """Install `_on_sigint` in place of Python's default handler (from the main thread only); the
    handler it replaced, or None."""
    import threading

    global _sigint_seen
    _sigint_seen = False  # an earlier command of this process (a test, a library user) was interrupted

    if threading.current_thread() is not threading.main_thread():
        return None
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        return None  # an embedding program's own handler, or SIGINT ignored: left as it is
    return signal.signal(signal.SIGINT, _on_sigint)


def _interrupted() -> int:
    try:
        eprint("slidewin: interrupted")
    except (OSError, ValueError, KeyboardInterrupt):
        pass
    return 130


def reopen_closed_streams() -> list[str]:
    """Point a standard stream the caller closed (``>&-``, ``2>&-``) at the null device.

    Otherwise the first file slidewin opens takes that descriptor: a decoder's message, or ONNX
    Runtime's, would land in ``results.jsonl``, and ``print`` would fail on ``sys.stderr`` being
    None. Now what would be printed there is discarded and every file is still written.

    Returns:
        The names of the streams that were closed (``stdin``, ``stdout``, ``stderr``).
    """
    closed = []
    for fd, name in ((0, "stdin"), (1, "stdout"), (2, "stderr")):
        try:
            os.fstat(fd)
            is_open = True
        except OSError:
            is_open = False
        if is_open and getattr(sys, name) is not None:
            continue
        mode = "r" if fd == 0 else "w"
        if is_open:  # Python found it closed at start, and a file has taken it since: leave that file alone
            stream = open(os.devnull, mode, errors="backslashreplace")
        else:
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
            stream = open(fd, mode, closefd=False, errors="backslashreplace")
        setattr(sys, name, stream)
        closed.append(name)
    return closed


def entry() -> None:
    """The ``slidewin`` console script: `main`, then a quick exit.

    Tearing the interpreter down after a command frees ONNX Runtime's sessions, NumPy, OpenCV
    and every module one by one: about 0.1 s on the 2-core CPU, a tenth of what a one-photo
    ``detect`` spends outside the network. Once `main` has returned, every output is written and
    every file closed (folder runs write their lines unbuffered), so the process flushes its
    streams and leaves with ``os._exit``, unless the normal shutdown still has work to do
    (`_teardown_needed`).
    """
    code = 1
    try:
        code = main()
        sys.stdout.flush()
        sys.stderr.flush()
    except KeyboardInterrupt:
        code = _interrupted()
    except OSError:  # the reader went away (``| head``): nothing more can be said
        code = code or 1
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    if _teardown_needed():
        sys.exit(code)
    os._exit(code)


def _teardown_needed() -> bool:
    """Whether the interpreter's shutdown has work beyond freeing memory: exit handlers (logging,
    Ray, TensorFlow and torch register them), pending finalizers (temporary folders), or threads
    that are not daemons. Unknown means yes."""
    import atexit
    import threading
    import weakref

    handlers = getattr(atexit, "_ncallbacks", lambda: 1)()
    finalizers = getattr(weakref.finalize, "_registry", {None: None})
    return handlers > 0 or bool(finalizers) or any(
        t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.main_thread())
