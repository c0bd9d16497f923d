"""What each ``slidewin`` command does: read its arguments, call the library, print the outcome."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from slidewin.cli.options import detect_config, detector_config, preset_line, proposal_config
from slidewin.errors import SlidewinError, printable
from slidewin.io.stderr import eprint

DEFAULT_DEMO_MODEL = Path("models/efficientnet-lite0.onnx")


def say(text: str, file=None) -> None:
    """Print one line that holds labels or file names, escaped (`printable`): a newline in a
    label cannot start a line of its own."""
    if file is sys.stderr:
        eprint(printable(str(text)))  # not into a decoder's capture of fd 2
    else:
        print(printable(str(text)), file=file or sys.stdout)


def _load(path: Path, convert: bool, max_pixels: int | None = None):
    """`load_image`, with the decoder's harmless warnings printed as notes naming the file."""
    from slidewin.io.images import DEFAULT_MAX_PIXELS, load_image

    notes: list[str] = []
    if str(path) == "-":  # one image from stdin, read no further than it may need
        from slidewin.cli.media import read_stdin_image

        image, _, notes = read_stdin_image(convert, max_pixels)
        path = "<stdin>"
    else:
        image = load_image(path, convert=convert, max_pixels=max_pixels or DEFAULT_MAX_PIXELS, notes=notes)
    for note in notes:
        say(f"slidewin: note: {path}: the decoder says {note!r}", file=sys.stderr)
    return image


def check_outputs(outputs: dict[str, Path | None], inputs: tuple) -> None:
    """Refuse unwritable outputs, and outputs onto an input, before any model is opened."""
    from slidewin.io.files import check_output_file

    for flag, path in outputs.items():
        if path is not None and str(path) != "-":
            check_output_file(path, flag, inputs)


def cmd_classify(args) -> int:
    from slidewin.cli.media import classify_many

    return classify_many(args)


def model_header(meta) -> str:
    """``efficientnet-lite0, weights imagenet, preprocessing torch (RGB x/255 ...)``: what a model is
    and how it sees pixels, said once at the top of a command's output."""
    from slidewin.core.contract import ModelKind

    text = f"{meta.architecture}, weights {meta.weights}"
    if meta.kind is ModelKind.CLASSIFIER:
        pre = meta.preprocessing
        text += ", preprocessing not recorded" if pre is None else f", preprocessing {pre.describe()}"
    return printable(text)


def cmd_labels(args) -> int:
    from slidewin.core.targets import COCO_GROUPS, load_group_notes, load_groups
    from slidewin.core.contract import LabelSet
    from slidewin.runtime.sessions import model_info

    info, _ = model_info(args.model)
    meta = info.meta(args.model)
    say(f"{args.model}: {len(meta.labels)} labels ({meta.label_set}); {model_header(meta)}")
    say("--classes takes ids (281), ranges (281-285), names (tabby), group names (cat), 'all'"
        + (", or 'coco' (every COCO group)" if meta.label_set == LabelSet.IMAGENET_1K else ""))
    for i, name in enumerate(meta.labels):
        say(f"{i:>6}  {name}")
    if args.groups:
        if meta.label_set != LabelSet.IMAGENET_1K:
            say("groups: none (label groups map COCO categories onto ImageNet-1k models only)")
            return 0
        groups = load_groups(COCO_GROUPS)
        say(f"groups ({len(groups)}, all of them: --classes coco):")
        for name, ids in groups.items():
            say(f"  {name}: " + ", ".join(f"{i} {meta.labels[i]}" for i in ids))
        notes = load_group_notes(COCO_GROUPS)
        say(f"COCO categories this model cannot name ({len(notes)}):")
        for name, why in notes.items():
            say(f"  {name}: {why}")
    return 0


def _open_detector(model_path: Path, config, classes, device: str, proposals=None):
    from slidewin.pipeline.factory import build_detector, default_classes

    # no --classes: the model's own choice (COCO groups for an ImageNet-1k model, else every label)
    detector = build_detector(model_path, config=config, classes=default_classes if classes is None else classes,
                              device=device, proposals=proposals)
    if detector.meta.is_random:
        say(f"note: {model_path} has untrained (random) weights: its detections mean nothing "
            "(fine for timing)", file=sys.stderr)
    return detector


def run_detect(image_path: Path, detector, model_path: Path, convert: bool, out: Path | None,
               json_path: Path | None, max_pixels: int | None = None, heatmap: Path | None = None) -> DetectionRecord:
    """Detect in one image and write what was asked (``heatmap``: the classifier's heat map,
    `slidewin.apps.heatmap`); returns its record."""
    from slidewin.apps.folder.records import DetectionRecord
    from slidewin.io.drawing import draw_detections
    from slidewin.io.images import save_image

    check_outputs({"--out-image": out, "--json": json_path, "--heatmap": heatmap}, (image_path, model_path))
    t0 = time.perf_counter()
    image = _load(image_path, convert, max_pixels)
    decode = time.perf_counter() - t0
    dets = detector.detect(image)
    record = DetectionRecord.of(image_path, image, model_path, dets, detector.last_stats, decode)
    if out is not None:
        save_image(out, draw_detections(image, dets))
    if heatmap is not None:
        from slidewin.apps.heatmap import write_heatmap

        write_heatmap(heatmap, detector, image)
    if json_path is not None:
        write_json(json_path, record.to_json())
    return record


def print_detections(record: DetectionRecord, unit: str = "windows", file=None) -> None:
    file = file or sys.stdout
    dets = record.detections
    secs = sum(record.seconds.values())
    say(f"{record.image}: {len(dets)} detection(s) from {record.windows} {unit} in {secs:.2f} s", file=file)
    for d in dets:
        x1, y1, x2, y2 = d["xyxy"]
        say(f"  {d['label']:<24} {d['score']:.3f}  [{x1:.0f}, {y1:.0f}, {x2:.0f}, {y2:.0f}]", file=file)


def cmd_detect(args) -> int:
    from slidewin.apps.folder.engines import Engine, is_uri
    from slidewin.apps.folder.inputs import is_folder_input

    images, engine = args.image, Engine(args.engine)
    _check_engine_flags(args, engine)
    from slidewin.cli.media import detect_media  # a video, or - (stdin)

    if (code := detect_media(args, engine)) is not None:
        return code
    if args.heatmap is not None:  # one image file, a model with a dense form: said before any work
        from slidewin.apps.heatmap import check_heatmap_request

        check_heatmap_request(args.heatmap, images, args.out_dir, args.model, args.device)
    if engine is Engine.LOCAL and any(is_uri(i) for i in images):
        raise SlidewinError(f"{next(i for i in images if is_uri(i))}: URIs are read through Ray: add --engine ray "
                            "--out-dir OUT")
    folder = args.out_dir is not None or len(images) > 1 or is_folder_input(images[0]) or engine is Engine.RAY
    if folder:
        return _detect_folder(args, engine)
    for flag, value in (("--resume", args.resume), ("--retry-failed", args.retry_failed), ("--draw", args.draw),
                        ("--prefetch", args.prefetch), ("--format", args.format)):
        if value:
            raise SlidewinError(f"{flag} is for folder runs: add --out-dir OUT")
    check_outputs({"--out-image": args.out_image, "--json": args.json, "--heatmap": args.heatmap},
                  (images[0], args.model))  # before any work
    config = detect_config(args)  # first: refuses the flags the detector would not use
    detector = _open_detector(args.model, config, args.classes, args.device)
    to = _report_stream(args.json)
    say(f"model: {model_header(detector.meta)}; {preset_line(args)}", file=to)
    record = run_detect(images[0], detector, args.model, args.convert, args.out_image, args.json, args.max_pixels,
                        args.heatmap)
    print_detections(record, detector.last_stats.unit, file=to)
    for what, path in (("image", args.out_image), ("json", args.json), ("heatmap", args.heatmap)):
        if path is not None and str(path) != "-":
            say(f"wrote {what}: {path}", file=to)
    return 0


def _report_stream(json_path: Path | None):
    """Where a command's report goes: stderr when the JSON goes to stdout (``-``, ``/dev/stdout``,
    a pipe), so that the JSON stays readable; stdout otherwise."""
    from slidewin.io.files import is_stream

    if json_path is not None and (str(json_path) == "-" or is_stream(json_path)):
        return sys.stderr
    return sys.stdout


#: Flags that only the Ray engine reads.
_RAY_FLAGS = (("--address", "address"), ("--workers", "workers"), ("--cpus-per-worker", "cpus_per_worker"),
              ("--gpus-per-worker", "gpus_per_worker"))


def _check_engine_flags(args, engine) -> None:
    """Each engine's flags given to the other are a mistake, said in one line."""
    from slidewin.apps.folder.engines import Engine

    if engine is Engine.LOCAL:
        for flag, name in _RAY_FLAGS:
            if getattr(args, name) is not None:
                raise SlidewinError(f"{flag} is for --engine ray")
    elif args.prefetch is not None:
        raise SlidewinError("--prefetch is for --engine local (Ray workers read and decode their own images)")
    elif args.retry_failed:
        raise SlidewinError("--retry-failed is for --engine local (with Ray, move the failed images to a folder "
                            "of their own and run it)")


def _detect_folder(args, engine) -> int:
    """Folder, glob or several images: one JSON line each in OUT_DIR/results.jsonl."""
    import shlex

    from slidewin.apps.folder.engines import Engine
    from slidewin.apps.folder.results_log import RESULTS_NAME
    from slidewin.io.files import check_output_dir

    if args.out_dir is None:
        raise SlidewinError("a folder, a glob, several images or --engine ray need --out-dir OUT (results go to "
                            "OUT/results.jsonl)")
    if args.out_image is not None or args.json is not None:
        raise SlidewinError("--out-image and --json are for one image; with --out-dir the results go to "
                            "OUT/results.jsonl (and --draw writes the drawn images)")
    if engine is Engine.RAY:  # a missing extra is said before anything else
        from slidewin.apps.folder.ray_engine import import_ray

        import_ray()
    check_output_dir(args.out_dir, "--out-dir")
    results = args.out_dir / RESULTS_NAME
    if not (args.resume or args.retry_failed) and results.is_file() and results.stat().st_size:  # say so before loading the model
        raise SlidewinError("already holds results: pass --resume to continue that run, or choose "
                            "another --out-dir", results)
    summary, skipped, labels = _detect_on_ray(args) if engine is Engine.RAY else _detect_here(args)
    if summary.interrupted:
        again = shlex.join(["slidewin", *args.argv] + ([] if "--resume" in args.argv else ["--resume"]))
        say(f"slidewin: interrupted; {summary.ok_now + summary.failed_now} image(s) recorded this run, every "
            f"line in {summary.results} is whole. Resume with:", file=sys.stderr)
        say(f"  {again}", file=sys.stderr)
        return summary.exit_code
    say(summary.line())
    if skipped:
        say(skipped)
    if args.format:
        from slidewin.apps.outputs import write_formats

        for path in write_formats(args.out_dir, args.format, labels):
            say(f"wrote {path}")
    if summary.failed:
        say(f"slidewin: {summary.failed} image(s) failed: their records in {summary.results} have an "
            "\"error\"", file=sys.stderr)
    return summary.exit_code


def _check_formats(args, detector) -> None:
    """``--format`` the model cannot give (``coco`` without COCO classes) is refused before the run."""
    if args.format:
        from slidewin.apps.outputs import check_formats

        check_formats(args.format, detector.labels, args.model)


def _no_images(args) -> SlidewinError:
    from slidewin.io.images import IMAGE_SUFFIXES

    return SlidewinError(printable(f"no image files ({', '.join(IMAGE_SUFFIXES)}) in "
                                   f"{' '.join(str(p) for p in args.image)}"))


def _settings(args):
    """(detector config, proposal config, --max-pixels, the run's recorded settings)."""
    from slidewin.apps.folder.run_settings import run_settings
    from slidewin.io.images import DEFAULT_MAX_PIXELS

    from slidewin.pipeline.factory import model_classes

    config = detect_config(args)  # first: refuses the flags the detector would not use
    args.classes = model_classes(args.model, args.classes)  # as recorded, and as Ray's actors open the model
    max_pixels = args.max_pixels or DEFAULT_MAX_PIXELS
    return config, None, max_pixels, run_settings(args.model, config, args.classes, args.convert, max_pixels)


def _detect_here(args):
    """A folder run in this process (``--engine local``): (summary, what the walk skipped)."""
    from slidewin.apps.folder.inputs import collect_inputs, skipped_summary
    from slidewin.apps.folder.prefetch import DEFAULT_PREFETCH
    from slidewin.apps.folder.run import run_folder

    skipped: list = []
    root, inputs = collect_inputs([str(p) for p in args.image], exclude=args.out_dir, skipped=skipped)
    if not inputs:
        raise _no_images(args)
    config, proposals, max_pixels, settings = _settings(args)
    detector = _open_detector(args.model, config, args.classes, args.device, proposals)
    _check_formats(args, detector)
    say(f"model: {model_header(detector.meta)}; {preset_line(args)}", file=sys.stderr)
    summary = run_folder(detector, inputs, args.out_dir, args.model, root=root,
                         resume=args.resume or args.retry_failed, retry_failed=args.retry_failed,
                         draw=args.draw, convert=args.convert, max_pixels=max_pixels, settings=settings,
                         prefetch=DEFAULT_PREFETCH if args.prefetch is None else args.prefetch)
    return summary, skipped_summary(skipped), detector.labels


def _detect_on_ray(args):
    """A folder run on a Ray cluster's actors (``--engine ray``): (summary, None)."""
    from slidewin.apps.folder.ray_engine import RayOptions, collect_sources, run_ray
    from slidewin.runtime.sessions import Device

    defaults = RayOptions()
    options = RayOptions(address=args.address, workers=args.workers,
                         cpus_per_worker=args.cpus_per_worker or defaults.cpus_per_worker,
                         gpus_per_worker=defaults.gpus_per_worker if args.gpus_per_worker is None
                         else args.gpus_per_worker)
    sources = collect_sources(args.image, exclude=args.out_dir)
    if not sources.files:
        raise _no_images(args)
    config, proposals, max_pixels, settings = _settings(args)
    # Opened once here, on the CPU, so that a bad model or --classes is one line before any
    # cluster starts; the actors open their own.
    detector = _open_detector(args.model, config, args.classes, Device.CPU, proposals)
    _check_formats(args, detector)
    labels = detector.labels
    summary = run_ray(sources, args.out_dir, args.model, options=options, config=config, classes=args.classes,
                      proposals=proposals, device=args.device, resume=args.resume, draw=args.draw,
                      convert=args.convert, max_pixels=max_pixels, settings=settings)
    return summary, None, labels


def cmd_compare(args) -> int:
    from slidewin.apps.compare import compare_payload, compare_table, open_comparison, run_compare, side_by_side
    from slidewin.apps.tables import markdown_table
    from slidewin.io.images import save_image

    check_outputs({"--out-image": args.out_image, "--json": args.json}, (args.image, args.model, args.frcnn))
    proposals = proposal_config(args, windows_too=True)  # the window grid runs too: its flags apply
    comparison = open_comparison(args.model, args.frcnn, detector_config(args), args.classes, args.device, proposals)
    t0 = time.perf_counter()
    image = _load(args.image, args.convert)
    decode = time.perf_counter() - t0
    results = run_compare(image, comparison)
    headers, rows = compare_table(results, decode)
    h, w = image.shape[:2]
    limited = "" if args.frcnn is None else (f"; Faster R-CNN limited to the {len(comparison.shared_labels)} "
                                             "categories the classifier can name")
    to = _report_stream(args.json)
    say(f"{args.image} ({w}x{h}){limited}", file=to)
    print(markdown_table(headers, [[printable(str(cell)) for cell in row] for row in rows]), file=to)
    for r in results:
        if r.meta.is_random:
            say(f"note: {r.name} has untrained (random) weights: its scores are refused; "
                "counts and timings are still measured", file=to)
    if args.out_image is not None:
        save_image(args.out_image, side_by_side(image, results))
        say(f"wrote image: {args.out_image}", file=to)
    if args.json is not None:
        write_json(args.json, compare_payload(args.image, (h, w), decode, results))
        if str(args.json) != "-":
            say(f"wrote json: {args.json}", file=to)
    return 0


def write_json(path: Path, payload: dict) -> None:
    """Pretty JSON to a file (written whole or not at all), or to stdout for ``-``."""
    from slidewin.io.files import atomic_write_text

    text = json.dumps(payload, indent=2)
    if str(path) == "-":
        print(text)
        return
    atomic_write_text(path, text + "\n")


def cmd_evaluate(args) -> int:
    from dataclasses import replace

    from slidewin.apps.eval_report import boxes_line
    from slidewin.apps.evaluate import EVAL_MIN_SCORE, EvaluationInterrupted, evaluate
    from slidewin.cli.options import PROPOSAL_DEFAULTS, config_overrides

    overrides = config_overrides(args)
    mode = overrides.pop("mode", None) or "auto"
    proposals = proposal_config(args, replace(PROPOSAL_DEFAULTS, min_score=EVAL_MIN_SCORE))
    try:
        m = evaluate(args.data, args.model, mode=mode, recipe=args.recipe, out_dir=args.out_dir, device=args.device,
                     limit=args.limit, progress=None, overrides=overrides, proposals=proposals,
                     overwrite=args.overwrite, images=args.images, annotations=args.annotations)
    except EvaluationInterrupted as e:
        eprint(f"slidewin: {printable(str(e))}")
        return 130
    except KeyboardInterrupt:
        eprint("slidewin: interrupted before any image was evaluated: nothing was kept")
        return 130
    how = f"mode={m.mode}" if proposals is None else f"proposals={proposals.regions.method} ({proposals.scorer})"
    recall = "" if m.recall50 is None else (f"  recall@0.5 {m.recall50:.3f}  recall@0.75 {m.recall75:.3f}  "
                                            f"AR@100 {m.AR100:.3f}  AR@1000 {m.AR1000:.3f}")
    say(f"{m.model['architecture']} recipe={m.recipe} {how}: "
        f"AP {m.AP:.4f}  AP50 {m.AP50:.4f}  AP75 {m.AP75:.4f}{recall}  "
        f"({m.images} images, {len(m.classes_evaluated)} classes evaluated, "
        f"{len(m.classes_excluded)} excluded, {m.candidates_per_image:.0f} candidates/image, "
        f"{m.seconds_per_image:.2f} s/image{_proposal_share(m.stage_seconds_per_image)})")
    say(boxes_line(m) + " Ground-truth boxes per class: "
        + ", ".join(f"{name} {n}" for name, n in m.ground_truth.items() if name in m.per_class) + ".")
    if m.image_errors:
        say(f"{len(m.image_errors)} image(s) could not be read (said above; their boxes count as missed)")
    if args.out_dir is not None:
        say(f"wrote report: {args.out_dir / 'report.md'} and COCO results: {args.out_dir / 'detections.json'}")
    return 0


def _proposal_share(stages: dict[str, float]) -> str:
    """", proposals N% of the work" when proposals were made (they run beside the network), from
    the seconds per stage."""
    total = sum(stages.values())
    return f", proposals {100 * stages['proposals'] / total:.0f}% of the work" if stages.get("proposals") and total else ""


def cmd_demo(args) -> int:
    from importlib import resources

    from slidewin.pipeline.config import Preset, preset, preset_summary

    if not args.model.exists():
        from slidewin_export.efficientnet_lite0 import export_efficientnet_lite0

        say(f"exporting the offline default model to {args.model} ...")
        export_efficientnet_lite0(args.model)
    scene = resources.files("slidewin").joinpath("data/demo_scene.jpg")
    with resources.as_file(scene) as scene_path:
        detector = _open_detector(args.model, preset(Preset.DISPLAY), "coco", args.device)
        record = run_detect(scene_path, detector, args.model, args.convert, args.out_dir / "demo.jpg",
                            args.out_dir / "demo.json")
    record.image = "demo_scene.jpg (packaged sample)"
    say(f"demo settings: detect's --preset display ({preset_summary(Preset.DISPLAY)}), COCO classes")
    print_detections(record)
    say(f"wrote image: {args.out_dir / 'demo.jpg'}")
    say(f"wrote json:  {args.out_dir / 'demo.json'}")
    return 0
