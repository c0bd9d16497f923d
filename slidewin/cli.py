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


def _window(text: str) -> list[tuple[int, int]]:
    """``224`` or ``200x150`` (width x height), comma-separated -> [(h, w), ...]."""
    out = []
    for part in text.split(","):
        w, _, h = part.strip().lower().partition("x")
        try:
            out.append((int(h or w), int(w)))
        except ValueError:
            raise argparse.ArgumentTypeError(f"window must look like 224 or 200x150, got {part!r}") from None
    return out


def _add_detector_args(p: argparse.ArgumentParser, classes_default: str | None = None) -> None:
    g = p.add_argument_group("sliding window")
    g.add_argument("--mode", choices=["patch", "dense"], default="patch",
                   help="patch: classify every window crop; dense: one fully-convolutional pass per "
                        "pyramid level, same windows at the network stride (default patch)")
    g.add_argument("--window", type=_window, action="extend", metavar="WxH",
                   help="window size(s) in image pixels, e.g. 224 or 200x150 (repeat or comma-separate "
                        "for several; default: the classifier's input size)")
    g.add_argument("--stride", type=float, default=32.0,
                   help="step between windows, in classifier-input pixels (default 32, the network stride)")
    g.add_argument("--scale", type=float, default=1.5, help="pyramid factor between levels (default 1.5)")
    g.add_argument("--max-levels", type=int, default=None, help="at most this many pyramid levels")
    g.add_argument("--min-score", type=float, default=0.5, help="minimum class score to keep a window (default 0.5)")
    g.add_argument("--iou", type=float, default=0.3, help="NMS IoU threshold (default 0.3)")
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

    p = sub.add_parser("detect", help="detect objects in an image, write a drawn image and JSON")
    p.add_argument("image", type=Path)
    p.add_argument("--model", type=Path, required=True, help="ONNX model written by `slidewin export`")
    p.add_argument("--out", type=Path, default=None, help="write the image with boxes drawn here")
    p.add_argument("--json", type=Path, default=None, help="write the detections as JSON here ('-' for stdout)")
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
    from slidewin.detector import DetectorConfig

    try:
        return DetectorConfig(
            windows_hw=tuple(args.window) if args.window else None,
            step=args.stride, scale=args.scale, max_levels=args.max_levels, min_score=args.min_score,
            iou=args.iou, batch_size=args.batch_size, mode=args.mode,
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


def run_detect(image_path: Path, model_path: Path, config, classes, device: str, convert: bool,
               out: Path | None, json_path: Path | None) -> dict:
    """Detect in one image and write what was asked; returns the JSON record."""
    from slidewin.draw import draw_detections
    from slidewin.images import load_image, save_image
    from slidewin.loading import build_detector

    detector = build_detector(model_path, config=config, classes=classes, device=device)
    if detector.meta.is_random:
        print(f"note: {model_path} has untrained (random) weights: its detections mean nothing "
              "(fine for timing)", file=sys.stderr)
    t0 = time.perf_counter()
    image = load_image(image_path, convert=convert)
    decode = time.perf_counter() - t0
    dets, stats = detector.run(image)
    record = {
        "image": str(image_path),
        "width": int(image.shape[1]),
        "height": int(image.shape[0]),
        "model": str(model_path),
        "detections": dets.to_records(),
        "windows": stats.windows,
        "seconds": {"decode": round(decode, 4), **{k: round(v, 4) for k, v in stats.seconds.items()}},
    }
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
    record = run_detect(args.image, args.model, _detector_config(args), args.classes, args.device,
                        args.convert, args.out, args.json)
    _print_detections(record, file=sys.stderr if str(args.json) == "-" else sys.stdout)
    for what, path in (("image", args.out), ("json", args.json)):
        if path is not None and str(path) != "-":
            print(f"wrote {what}: {path}", file=sys.stderr if str(args.json) == "-" else sys.stdout)
    return 0


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
        record = run_detect(scene_path, args.model, DetectorConfig(), "coco", args.device, args.convert,
                            args.out_dir / "demo.jpg", args.out_dir / "demo.json")
    record["image"] = "demo_scene.jpg (packaged sample)"
    _print_detections(record)
    print(f"wrote image: {args.out_dir / 'demo.jpg'}")
    print(f"wrote json:  {args.out_dir / 'demo.json'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
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
