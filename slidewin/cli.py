"""The ``slidewin`` command: a thin argparse layer over the library.

Every failure the user can cause ends as one line on stderr and a non-zero exit code.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from slidewin.errors import SlidewinError

DEFAULT_DEMO_MODEL = Path("models/efficientnet-lite0.onnx")


def _demo_config():
    from slidewin.detector import DetectorConfig, Mode
    from slidewin.merge import Merge

    # A picture to look at, not an AP run: fast (dense), confident boxes, one box per object.
    return DetectorConfig(mode=Mode.DENSE, min_score=0.8, merge=Merge.NESTED)


def _window(text: str) -> list[tuple[int, int]]:
    """``224`` or ``200x150`` (width x height), comma-separated -> [(h, w), ...]; ``input``."""
    if text.strip().lower() == "input":
        return ["input"]
    out = []
    for part in text.split(","):
        w, _, h = part.strip().lower().partition("x")
        try:
            out.append((int(h or w), int(w)))
        except ValueError:
            raise argparse.ArgumentTypeError(f"window must look like 224 or 200x150, got {part!r}") from None
    return out


def _count(minimum: int):
    """argparse type: a whole number >= minimum; ``400_000_000`` and ``400,000,000`` are fine."""
    def parse(text: str) -> int:
        try:
            value = int(text.replace("_", "").replace(",", ""))
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


def _add_detector_args(p: argparse.ArgumentParser, classes_default: str | None = None) -> None:
    g = p.add_argument_group("sliding window")
    g.add_argument("--mode", choices=["patch", "dense"], default="patch",
                   help="patch: classify every window crop; dense: one fully-convolutional pass per "
                        "pyramid level, same windows at the network stride (default patch)")
    g.add_argument("--window", type=_window, action="extend", metavar="WxH",
                   help="window size(s) in image pixels, e.g. 224 or 200x150 (repeat or comma-separate "
                        "for several; 'input' = the classifier's input size; default 200x150,150x200,100x75, "
                        "chosen on COCO photos)")
    g.add_argument("--reference-side", type=int, default=None, metavar="PX",
                   help="window sizes are pixels of an image up to PX on its longer side; larger images get "
                        "them scaled in proportion (default 1024 for the default windows; --window sizes "
                        "are absolute unless this is given; 0 = absolute)")
    g.add_argument("--stride", type=float, default=32.0,
                   help="step between windows, in classifier-input pixels (default 32, the network stride)")
    g.add_argument("--scale", type=float, default=1.5, help="pyramid factor between levels (default 1.5)")
    g.add_argument("--max-levels", type=int, default=None, help="at most this many pyramid levels")
    g.add_argument("--min-score", type=float, default=0.5, help="minimum class score to keep a window (default 0.5)")
    g.add_argument("--iou", type=float, default=0.5, help="NMS IoU threshold (default 0.5)")
    g.add_argument("--merge", choices=["nms", "soft-nms", "nested", "vote", "nested-vote"], default="nms",
                   help="how overlapping windows become one box: class-aware NMS (default); soft-nms "
                        "(Gaussian score decay); nested also drops boxes lying inside a stronger one (the "
                        "demo's choice: cleaner pictures, lower AP); vote averages each kept box with those "
                        "it suppressed")
    g.add_argument("--classes", default=classes_default,
                   help="what to detect: label indices (281), ranges (281-285), label names, group names "
                        f"(cat) or 'coco' for every COCO group (default: {classes_default or 'every label'})")
    g.add_argument("--batch-size", type=int, default=16, help="windows per inference call (default 16)")
    _add_common(p)


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                   help="execution device (default auto: CUDA when usable, else CPU)")
    p.add_argument("--convert", action="store_true",
                   help="convert grayscale, alpha and 16-bit images to 8-bit RGB instead of refusing them")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="slidewin",
        description="Turn an image classifier into an object detector (ONNX Runtime, no training framework).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("classify", help="top-k labels of a whole image")
    p.add_argument("image", type=Path)
    p.add_argument("--model", type=Path, required=True, help="classifier ONNX written by `slidewin export`")
    p.add_argument("--top-k", type=int, default=5)
    _add_common(p)
    p.set_defaults(func=cmd_classify)

    p = sub.add_parser(
        "detect", help="detect objects in an image (drawn image, JSON) or in a folder (results.jsonl)",
        description="One IMAGE: print the detections, optionally --out (drawn) and --json. A folder "
                    "(walked recursively), a quoted glob or several paths, with --out-dir: one JSON line "
                    "per image in OUT/results.jsonl, bad images recorded with an error and skipped; "
                    "exit code 3 when some failed. A run killed at any point keeps whole lines: "
                    "--resume continues it.")
    p.add_argument("image", type=Path, nargs="+", metavar="IMAGE",
                   help="an image, a folder, or a glob such as 'photos/**/*.jpg' (quote it)")
    p.add_argument("--model", type=Path, required=True, help="ONNX model written by `slidewin export`")
    p.add_argument("--out", type=Path, default=None, help="write the image with boxes drawn here")
    p.add_argument("--json", type=Path, default=None, help="write the detections as JSON here ('-' for stdout)")
    g = p.add_argument_group("folders")
    g.add_argument("--out-dir", type=Path, default=None,
                   help="folder run: append one JSON line per image to OUT_DIR/results.jsonl")
    g.add_argument("--resume", action="store_true",
                   help="continue an interrupted run: skip the images already in results.jsonl")
    g.add_argument("--draw", action="store_true", help="also write OUT_DIR/drawn/<relative path>.jpg")
    g.add_argument("--prefetch", type=_count(0), default=None, metavar="N",
                   help="images decoded ahead while the model runs (default 4; 0 decodes inline)")
    p.add_argument("--max-pixels", type=_count(1), default=None, metavar="N",
                   help="refuse images with more pixels than this (default 400,000,000: 20000x20000 fits)")
    p.add_argument("--dense-tile", type=_count(0), default=None, metavar="PX",
                   help="dense mode: run pyramid levels of more than PX x PX pixels in tiles of at most "
                        "that many (default 3072; 0 never tiles): bounds memory, same results, more time")
    _add_detector_args(p)
    p.set_defaults(func=cmd_detect)

    p = sub.add_parser("compare", help="patch-based against region-proposal detection on one image")
    p.add_argument("image", type=Path)
    p.add_argument("--classifier", type=Path, required=True, help="classifier ONNX (slid over the image)")
    p.add_argument("--frcnn", type=Path, required=True, help="region-proposal ONNX (slidewin export frcnn-...)")
    p.add_argument("--out", type=Path, default=None, help="write the side-by-side picture here")
    p.add_argument("--json", type=Path, default=None, help="write both results and timings as JSON here")
    _add_detector_args(p, classes_default="coco")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("evaluate", help="COCO AP of a model on a COCO-format dataset")
    p.add_argument("--data", type=Path, required=True, help="dataset folder: images/ and instances.json")
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--mode", choices=["patch", "dense"], default="patch")
    p.add_argument("--recipe", choices=["slidewin", "tutorial"], default="slidewin",
                   help="slidewin's own settings, or the usual tutorial recipe (top-1 >= 0.9, ROI 200x150, step 16)")
    p.add_argument("--out", type=Path, default=None, help="report folder (metrics.json, report.md, charts)")
    p.add_argument("--limit", type=int, default=None, help="only the first N images (by id)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("demo", help="export the offline default model if needed and detect in a sample scene")
    p.add_argument("--model", type=Path, default=DEFAULT_DEMO_MODEL,
                   help=f"classifier to use; exported here first if missing (default {DEFAULT_DEMO_MODEL})")
    p.add_argument("--out-dir", type=Path, default=Path("out"), help="where to write demo.jpg and demo.json")
    _add_common(p)
    p.set_defaults(func=cmd_demo)

    from slidewin_export.cli import add_export_parser

    add_export_parser(sub)
    return parser


def _detector_config(args):
    from slidewin.detector import DEFAULT_WINDOWS, REFERENCE_SIDE, DetectorConfig

    if args.reference_side is None:
        reference_side = None if args.window else REFERENCE_SIDE
    else:
        reference_side = args.reference_side or None
    try:
        return DetectorConfig(
            windows_hw=(None if args.window == ["input"] else tuple(args.window)) if args.window else DEFAULT_WINDOWS,
            reference_side=reference_side,
            step=args.stride, scale=args.scale, max_levels=args.max_levels, min_score=args.min_score,
            iou=args.iou, batch_size=args.batch_size, mode=args.mode, merge=args.merge,
        )
    except ValueError as e:
        raise SlidewinError(str(e)) from None


def cmd_classify(args) -> int:
    from slidewin.classifier import Classifier
    from slidewin.images import load_image

    clf = Classifier(args.model, device=args.device)
    image = load_image(args.image, convert=args.convert)
    print(f"{args.image}  ({clf.meta.architecture}, weights {clf.meta.weights})")
    for rank, p in enumerate(clf.classify(image, top_k=args.top_k), 1):
        print(f"{rank:>3}. {p.label:<30} {p.class_id:>5}  {p.probability:.4f}")
    return 0


def _open_detector(model_path: Path, config, classes, device: str, dense_tile: int | None = None):
    from slidewin.loading import build_detector

    detector = build_detector(model_path, config=config, classes=classes, device=device)
    if detector.meta.is_random:
        print(f"note: {model_path} has untrained (random) weights: its detections mean nothing "
              "(fine for timing)", file=sys.stderr)
    if dense_tile is not None and getattr(detector, "dense", None) is not None:
        detector.dense.max_tile = dense_tile
    return detector


def run_detect(image_path: Path, model_path: Path, config, classes, device: str, convert: bool,
               out: Path | None, json_path: Path | None, max_pixels: int | None = None,
               dense_tile: int | None = None) -> dict:
    """Detect in one image and write what was asked; returns the JSON record."""
    from slidewin.batch import detection_record
    from slidewin.draw import draw_detections
    from slidewin.images import DEFAULT_MAX_PIXELS, load_image, save_image

    detector = _open_detector(model_path, config, classes, device, dense_tile)
    t0 = time.perf_counter()
    image = load_image(image_path, convert=convert, max_pixels=max_pixels or DEFAULT_MAX_PIXELS)
    decode = time.perf_counter() - t0
    dets, stats = detector.run(image)
    record = detection_record(image_path, image, model_path, dets, stats, decode)
    if out is not None:
        save_image(out, draw_detections(image, dets))
    if json_path is not None:
        _write_json(json_path, record)
    return record


def _print_detections(record: dict, file=sys.stdout) -> None:
    dets = record["detections"]
    secs = sum(record["seconds"].values())
    print(f"{record['image']}: {len(dets)} detection(s) from {record['windows']} windows in {secs:.2f} s",
          file=file)
    for d in dets:
        x1, y1, x2, y2 = d["xyxy"]
        print(f"  {d['label']:<24} {d['score']:.3f}  [{x1:.0f}, {y1:.0f}, {x2:.0f}, {y2:.0f}]", file=file)


def cmd_detect(args) -> int:
    from slidewin.batch import is_folder_input

    images = args.image
    folder = args.out_dir is not None or len(images) > 1 or is_folder_input(images[0])
    if folder:
        return _detect_folder(args)
    for flag, value in (("--resume", args.resume), ("--draw", args.draw), ("--prefetch", args.prefetch)):
        if value:
            raise SlidewinError(f"{flag} is for folder runs: add --out-dir OUT")
    image = images[0]
    record = run_detect(image, args.model, _detector_config(args), args.classes, args.device,
                        args.convert, args.out, args.json, args.max_pixels, args.dense_tile)
    _print_detections(record, file=sys.stderr if str(args.json) == "-" else sys.stdout)
    for what, path in (("image", args.out), ("json", args.json)):
        if path is not None and str(path) != "-":
            print(f"wrote {what}: {path}", file=sys.stderr if str(args.json) == "-" else sys.stdout)
    return 0


def _detect_folder(args) -> int:
    """Folder, glob or several images: one JSON line each in OUT_DIR/results.jsonl."""
    import shlex

    from slidewin.batch import DEFAULT_PREFETCH, RESULTS_NAME, collect_inputs, run_folder
    from slidewin.images import DEFAULT_MAX_PIXELS, IMAGE_SUFFIXES

    if args.out_dir is None:
        raise SlidewinError("a folder, a glob or several images need --out-dir OUT (results go to "
                            "OUT/results.jsonl)")
    if args.out is not None or args.json is not None:
        raise SlidewinError("--out and --json are for one image; with --out-dir the results go to "
                            "OUT/results.jsonl (and --draw writes the drawn images)")
    results = args.out_dir / RESULTS_NAME
    if not args.resume and results.is_file() and results.stat().st_size:  # say so before loading the model
        raise SlidewinError("already holds results: pass --resume to continue that run, or choose "
                            "another --out-dir", results)
    root, inputs = collect_inputs([str(p) for p in args.image], exclude=args.out_dir)
    if not inputs:
        raise SlidewinError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) in "
                            f"{' '.join(str(p) for p in args.image)}")
    detector = _open_detector(args.model, _detector_config(args), args.classes, args.device, args.dense_tile)
    summary = run_folder(detector, inputs, args.out_dir, args.model, root=root, resume=args.resume,
                         draw=args.draw, convert=args.convert, max_pixels=args.max_pixels or DEFAULT_MAX_PIXELS,
                         prefetch=DEFAULT_PREFETCH if args.prefetch is None else args.prefetch)
    if summary.interrupted:
        argv = list(getattr(args, "argv", None) or sys.argv[1:])
        again = shlex.join(["slidewin", *argv] + ([] if "--resume" in argv else ["--resume"]))
        print(f"slidewin: interrupted; {summary.ok_now + summary.failed_now} image(s) recorded this run, every "
              f"line in {summary.results} is whole. Resume with:\n  {again}", file=sys.stderr)
        return summary.exit_code
    print(summary.line())
    if summary.failed:
        print(f"slidewin: {summary.failed} image(s) failed: their records in {summary.results} have an "
              "\"error\"", file=sys.stderr)
    return summary.exit_code


def cmd_compare(args) -> int:
    from slidewin.compare import compare_table, run_compare, side_by_side
    from slidewin.images import load_image, save_image
    from slidewin.loading import build_detector
    from slidewin.model_meta import ModelKind

    config = _detector_config(args)
    patch = build_detector(args.classifier, config=config, classes=args.classes, device=args.device)
    if patch.meta.kind is not ModelKind.CLASSIFIER:
        raise SlidewinError("--classifier must be a classifier model", args.classifier)
    # A fair race: the region-proposal model looks only for the categories the classifier can name.
    frcnn = build_detector(args.frcnn, config=config, device=args.device)
    if frcnn.meta.kind is not ModelKind.REGION_PROPOSAL:
        raise SlidewinError("--frcnn must be a region-proposal model", args.frcnn)
    shared = [n for n in patch.labels if n in frcnn.labels]
    if shared and len(shared) < len(frcnn.labels):
        frcnn = build_detector(args.frcnn, config=config, classes=shared, device=args.device)
    t0 = time.perf_counter()
    image = load_image(args.image, convert=args.convert)
    decode = time.perf_counter() - t0
    results = run_compare(image, {"patch (" + patch.meta.architecture + ")": patch,
                                  "region proposals (" + frcnn.meta.architecture + ")": frcnn})
    headers, rows = compare_table(results, decode)
    h, w = image.shape[:2]
    print(f"{args.image} ({w}x{h}); Faster R-CNN limited to the {len(shared)} categories the classifier can name")
    from slidewin.report import markdown_table

    print(markdown_table(headers, rows))
    for r in results:
        if r.meta.is_random:
            print(f"note: {r.name} has untrained (random) weights: its scores are refused; "
                  "counts and timings are still measured")
    if args.out is not None:
        save_image(args.out, side_by_side(image, results))
        print(f"wrote image: {args.out}")
    if args.json is not None:
        payload = {
            "image": str(args.image), "width": w, "height": h, "decode_seconds": round(decode, 4),
            "detectors": [
                {"name": r.name, "model": str(path), "weights": r.meta.weights, "evaluated": r.evaluated,
                 "seconds": {k: round(v, 4) for k, v in r.stats.seconds.items()},
                 "detections": [] if r.meta.is_random else r.detections.to_records(),
                 "num_detections": len(r.detections)}
                for r, path in zip(results, (args.classifier, args.frcnn))
            ],
        }
        _write_json(args.json, payload)
        print(f"wrote json: {args.json}")
    return 0


def _write_json(path: Path, payload: dict) -> None:
    text = json.dumps(payload, indent=2)
    if str(path) == "-":
        print(text)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")


def cmd_evaluate(args) -> int:
    from slidewin.evaluate import evaluate

    m = evaluate(args.data, args.model, mode=args.mode, recipe=args.recipe, out_dir=args.out,
                 device=args.device, limit=args.limit, progress=sys.stderr.isatty() or None)
    print(f"{m['model']['architecture']} recipe={m['recipe']} mode={m['mode']}: "
          f"AP {m['AP']:.4f}  AP50 {m['AP50']:.4f}  AP75 {m['AP75']:.4f}  "
          f"({m['images']} images, {len(m['classes_evaluated'])} classes evaluated, "
          f"{len(m['classes_excluded'])} excluded, {m['seconds_per_image']:.2f} s/image)")
    if args.out is not None:
        print(f"wrote report: {args.out / 'report.md'}")
    return 0


def cmd_demo(args) -> int:
    from importlib import resources

    from slidewin.detector import DetectorConfig

    if not args.model.exists():
        from slidewin_export.efficientnet_lite0 import export_efficientnet_lite0

        print(f"exporting the offline default model to {args.model} ...")
        export_efficientnet_lite0(args.model)
    scene = resources.files("slidewin").joinpath("data/demo_scene.jpg")
    with resources.as_file(scene) as scene_path:
        record = run_detect(scene_path, args.model, _demo_config(), "coco", args.device, args.convert,
                            args.out_dir / "demo.jpg", args.out_dir / "demo.json")
    record["image"] = "demo_scene.jpg (packaged sample)"
    print("demo settings: dense mode, COCO classes, boxes scoring >= 0.8, boxes nested in a stronger one merged")
    _print_detections(record)
    print(f"wrote image: {args.out_dir / 'demo.jpg'}")
    print(f"wrote json:  {args.out_dir / 'demo.json'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return args.func(args)
    except SlidewinError as e:
        print(f"slidewin: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("slidewin: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 1
    except Exception as e:  # a bug: still one line, but say so
        msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
        print(f"slidewin: internal error: {type(e).__name__}: {msg} (please report this)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
