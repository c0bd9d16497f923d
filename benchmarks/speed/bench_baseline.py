"""Per-image latency: the usual Keras tutorial recipe against slidewin, same weights, same run.

The baseline is `baseline_recipe.tutorial_detect` (the PyImageSearch Keras sliding-window
script: width 600, pyramid scale 1.5, 200x150 ROI, step 16, one ``model.predict`` over all
windows, top-1 >= 0.9, imutils NMS). slidewin runs the *same* ResNet50 weights (Keras
``ResNet50(weights=None)`` after ``keras.utils.set_random_seed(0)``, exactly as the exporter's
``--weights none`` builds the network it exports to models/resnet50-random.onnx; checked on one
window below) on the same resized image:

- patch mode with the tutorial's windows (`slidewin.apps.evaluate.tutorial_config`: one 200x150
  window, pyramid 1.5, 16 px steps of the ROI along both axes; slidewin also keeps one window
  flush with the right/bottom edge, which the tutorial's ``range`` drops, so it classifies a
  few more windows - counts are printed);
- patch mode with slidewin's default settings;
- dense mode with both, stepping by the network stride.

Every image goes through every method once, interleaved (the order mirrored every other image),
so load from other processes hits all alike. Random weights: speed figures only, no accuracy. Run:

    python benchmarks/speed/bench_baseline.py [--images 3] [--width 600] [--out-dir DIR] [--data DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: _common

from _common import (
    RESULTS,
    Result,
    add_data_option,
    ensure_model,
    interleave,
    machine,
    machine_line,
    median,
    parse,
    photos,
    print_table,
)
from baseline_recipe import (
    INPUT_SIZE,
    PYR_SCALE,
    ROI_SIZE,
    WIDTH,
    WIN_STEP,
    count_windows,
    imutils_resize,
    tutorial_detect,
)

SEED = 0  # what export_keras_resnet50(..., seed=0) and ensure_model("resnet50-random") use
# Targets per image against the baseline. The "tutorial windows" rows are the fair comparison;
# the "defaults" rows classify fewer windows and are reported for what users get out of the box.
TARGETS = {"patch (tutorial windows)": 3.0, "patch int8 (tutorial windows)": 3.0,
           "patch (slidewin defaults)": 3.0, "dense (tutorial windows)": 30.0, "dense (slidewin defaults)": 30.0}
INT8_METHOD = "patch int8 (tutorial windows)"


@contextlib.contextmanager
def _quiet_stderr_fd():
    """Silence fd 2 while TensorFlow loads: it prints oneDNN notices through C++ logging before
    it reads TF_CPP_MIN_LOG_LEVEL (as the exporter does it)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as sink:
            os.dup2(sink.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def load_keras_resnet50(seed: int = SEED):
    """``(model, preprocess_input)``: Keras ResNet50 with the random weights the exporter uses.

    Mirrors ``slidewin_export.keras_resnet50._load(weights="none")``: seed, then build at once,
    so the weights equal those inside models/resnet50-random.onnx (verified by the caller).
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with _quiet_stderr_fd():
        import keras

    keras.utils.set_random_seed(seed)
    model = keras.applications.ResNet50(weights=None)
    return model, keras.applications.resnet50.preprocess_input


def sample_images(data: Path | None, n: int, width: int | None) -> list[tuple[str, np.ndarray]]:
    """The first n photos of the data set (RGB), resized to ``width`` as the tutorial does;
    synthetic 640x480 noise without a data set."""
    from slidewin.io.images import load_image

    paths = photos(data, n)
    if paths:
        images = [(p.name, load_image(p, convert=True)) for p in paths]
    else:
        rng = np.random.default_rng(0)
        images = [(f"noise-{i}", rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)) for i in range(n)]
    return [(name, imutils_resize(im, width=width) if width else im) for name, im in images]


def slidewin_configs() -> dict[str, object]:
    """slidewin's runs: the tutorial recipe exactly (`slidewin.apps.evaluate.tutorial_config`: ROI
    200x150, 16 px steps along both axes of the ROI, pyramid 1.5) and slidewin's defaults, in
    patch and dense mode. Dense mode steps by the network stride (32 classifier-input pixels),
    a coarser grid than the tutorial's; the window counts printed make that visible."""
    from slidewin.apps.evaluate import tutorial_config
    from slidewin.pipeline.config import DetectorConfig, Mode

    return {
        "patch (tutorial windows)": tutorial_config(INPUT_SIZE, Mode.PATCH),
        "patch (slidewin defaults)": DetectorConfig(mode=Mode.PATCH),
        "dense (tutorial windows)": tutorial_config(INPUT_SIZE, Mode.DENSE),
        "dense (slidewin defaults)": DetectorConfig(mode=Mode.DENSE),
    }


def int8_model(fp32: Path, data: Path) -> Path:
    """``<stem>-int8.onnx`` beside the fp32 model, quantized (calibrated on the data set's photos)
    when missing or older than it."""
    path = fp32.with_name(f"{fp32.stem}-int8.onnx")
    if not path.exists() or path.stat().st_mtime < fp32.stat().st_mtime:
        from slidewin_export.quantize import calibration_photos, to_int8

        _, calibration, held_out = calibration_photos(data / "images")
        print(f"making {path.name} from {fp32.name} (int8, calibrated on windows of {data.name}) ...", flush=True)
        to_int8(fp32, path, calibration, held_out=held_out)
    return path


def build_slidewin(model_path: Path, config):
    from slidewin.pipeline.factory import build_detector

    return build_detector(model_path, config=config)


def run_slidewin(det, image: np.ndarray) -> dict:
    t0 = time.perf_counter()
    dets = det.detect(image)
    stats = det.last_stats
    # stages: the profile, where the time went
    return {"seconds": time.perf_counter() - t0, "windows": stats.windows, "levels": stats.levels,
            "detections": len(dets), "stages": dict(stats.seconds)}


def run_baseline(model, preprocess, labels, image: np.ndarray, max_windows: int | None) -> dict:
    t0 = time.perf_counter()
    res = tutorial_detect(model, image, preprocess, labels, width=None, max_windows=max_windows)
    return {"seconds": time.perf_counter() - t0, "windows": res.windows, "levels": res.levels,
            "detections": sum(len(v) for v in res.detections.values()), "stages": res.seconds}


def check_same_weights(model, preprocess, model_path: Path, image: np.ndarray) -> float:
    """max |Δprob| between Keras and the ONNX model on one 224x224 window of a real image."""
    import cv2

    from slidewin.runtime.classifier import Classifier

    h, w = image.shape[:2]
    window = cv2.resize(image[: min(h, ROI_SIZE[1]), : min(w, ROI_SIZE[0])], INPUT_SIZE)[None]
    keras_p = np.asarray(model.predict(preprocess(window.astype(np.float32)), verbose=0), np.float64)
    onnx_p = Classifier(model_path, device="cpu").predict(window).astype(np.float64)
    return float(np.abs(keras_p - onnx_p).max())


def _load_avg() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def _network_share(runs: list[dict]) -> float | None:
    """Share of a method's time spent in the network (Keras predict / ONNX Runtime inference)."""
    if not all(r.get("stages") for r in runs):
        return None
    net = sum(r["stages"].get("predict", r["stages"].get("inference", 0.0)) for r in runs)
    return net / sum(r["seconds"] for r in runs)


def draw_chart(ax, summary: list[dict], m: dict, n_images: int) -> None:
    rows = [s for s in summary if s.get("median_s")]
    y = np.arange(len(rows))
    ax.barh(y, [r["median_s"] for r in rows], color=["C3"] + ["C0"] * (len(rows) - 1))
    for i, r in enumerate(rows):
        label = f"{r['median_s']:.2f} s, mean {r['windows_per_image']:.0f} windows"
        if r["speedup"] and r["method"] != "baseline":
            label += f", {r['speedup']:.1f}x"
        ax.text(r["median_s"], i, " " + label, va="center", fontsize=8)
    ax.set_yticks(y, [r["method"] for r in rows])
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel(f"median seconds per image ({n_images} coco-dev images, log scale)")
    ax.set_title(f"Keras tutorial recipe vs slidewin, ResNet50 random weights\n"
                 f"{m['cpu'][:40]} ({m['physical_cores']} cores), {m['date']}", fontsize=9)
    ax.set_xlim(right=max(r["median_s"] for r in rows) * 8)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=3, help="coco-dev photos (each ~1-2 min for the baseline here)")
    ap.add_argument("--width", type=int, default=WIDTH, help="resize to this width first, as the tutorial (0: keep)")
    ap.add_argument("--max-windows", type=int, default=None, help="cap the baseline's windows per image (smoke tests)")
    ap.add_argument("--model", type=Path, default=None,
                    help="slidewin ONNX of Keras ResNet50 seed-0 random weights (default: models/resnet50-random.onnx)")
    ap.add_argument("--no-int8", dest="int8", action="store_false",
                    help="skip the int8 patch-mode row (it quantizes the model first when needed: export extra)")
    ap.add_argument("--out-dir", type=Path, default=RESULTS)
    add_data_option(ap, required=False,
                    help="photos to time, and to calibrate the int8 row on (default: synthetic noise, no int8 row)")
    args = parse(ap, argv)
    if args.images < 1:
        ap.error("--images must be >= 1")

    m = machine()
    print(f"machine: {machine_line(m)}")
    print("caveat: other processes share this machine's CPU; methods run interleaved per image (mirrored "
          "order), so contention hits all alike, but absolute times carry that noise.", flush=True)
    model_path = args.model or ensure_model("resnet50-random")
    images = sample_images(args.data, args.images, args.width or None)

    t0 = time.perf_counter()
    model, preprocess = load_keras_resnet50()
    build_s = time.perf_counter() - t0
    from slidewin.runtime.classifier import Classifier

    labels = Classifier(model_path, device="cpu").labels
    diff = check_same_weights(model, preprocess, model_path, images[0][1])
    same = diff < 1e-4
    print(f"Keras ResNet50 built in {build_s:.1f} s; same weights as {model_path.name}: max |Δprob| = {diff:.2g} "
          f"on one window ({'OK' if same else 'DIFFERENT - ratios below compare different networks'})", flush=True)
    # Warm-up outside the timings: Keras traces predict for full and partial batches.
    rng = np.random.default_rng(1)
    for n in (33, 37):
        model.predict(preprocess(rng.uniform(0, 255, (n, *INPUT_SIZE, 3)).astype(np.float32)), verbose=0)

    methods: dict[str, object] = {}
    for name, cfg in slidewin_configs().items():
        methods[name] = build_slidewin(model_path, cfg)
    int8_path = None
    if args.int8 and not (args.data and (args.data / "images").is_dir()):
        print("no int8 row: calibrating it needs real photos (pass --data DIR)", flush=True)
    elif args.int8:  # the same weights, quantized: what patch mode gains from --precision int8
        from slidewin.apps.evaluate import tutorial_config
        from slidewin.pipeline.config import Mode

        int8_path = int8_model(model_path, args.data)
        methods = {INT8_METHOD: build_slidewin(int8_path, tutorial_config(INPUT_SIZE, Mode.PATCH)), **methods}
    warm_image = images[0][1][: 240, : 320]
    for name, det in methods.items():
        run_slidewin(det, warm_image)

    print(f"{len(images)} images (resized to width {args.width or 'original'}); windows the tutorial will classify: "
          + ", ".join(f"{nm} {im.shape[1]}x{im.shape[0]}: {count_windows(im.shape[:2], None)[1]}" for nm, im in images),
          flush=True)
    names = ["baseline", *methods]
    per_image = [{"image": img_name, "hw": list(image.shape[:2]), "methods": {}} for img_name, image in images]
    for k, name in interleave(names, len(images)):  # one round per image
        img_name, image = images[k]
        if name == "baseline":
            r = run_baseline(model, preprocess, labels, image, args.max_windows)
        else:
            r = run_slidewin(methods[name], image)
        r["load_avg_1min"] = _load_avg()  # how busy the machine was (other sessions share it)
        per_image[k]["methods"][name] = r
        print(f"  {img_name} {image.shape[1]}x{image.shape[0]}: {name:27s} {r['seconds']:7.2f} s, "
              f"{r['windows']} windows, {r['levels']} levels, {r['detections']} detections, "
              f"load avg {r['load_avg_1min']}", flush=True)

    summary = []
    for name in names:
        secs = [e["methods"][name]["seconds"] for e in per_image]
        wins = [e["methods"][name]["windows"] for e in per_image]
        ratios = [e["methods"]["baseline"]["seconds"] / e["methods"][name]["seconds"] for e in per_image]
        known = all(w is not None for w in wins)
        summary.append({"method": name, "median_s": median(secs), "seconds": secs,
                        "windows": wins, "windows_per_image": float(np.mean(wins)) if known else float("nan"),
                        "windows_per_s": sum(wins) / sum(secs) if known else None,
                        "speedup": median(ratios), "speedup_per_image": ratios,
                        "network_share": _network_share([e["methods"][name] for e in per_image])})
    base_wps = summary[0]["windows_per_s"]
    for s in summary:  # throughput ratio: the speed-up with the difference in window counts taken out
        s["per_window_speedup"] = s["windows_per_s"] / base_wps if s["windows_per_s"] and base_wps else None
    rows = [[s["method"], " / ".join(str(w) for w in s["windows"]), f"{s['median_s']:.2f}",
             f"{s['windows_per_s']:.1f}" if s["windows_per_s"] else "-",
             "1.0x (reference)" if s["method"] == "baseline" else f"{s['speedup']:.1f}x",
             f"{s['per_window_speedup']:.1f}x" if s["per_window_speedup"] else "-",
             f"{100 * s['network_share']:.0f}%" if s["network_share"] is not None else "-"] for s in summary]
    result = Result(m, args, summary, name="baseline", folder=args.out_dir)
    result.table(["method", "windows per image", "median s / image", "windows / s", "speed-up per image",
                 "per-window speed-up", "time in the network"], rows,
                title=f"Keras tutorial recipe vs slidewin, ResNet50 (random weights, max |Δprob| {diff:.1g}), "
                      f"{len(images)} coco-dev images at width {args.width or 'original'}; speed-up = median over "
                      f"images of the per-image ratio, measured side by side ({result.machine_line})")

    targets = []
    for name, goal in TARGETS.items():
        s = next((s for s in summary if s["method"] == name), None)
        if s is None:
            targets.append({"target": f"{name} >= {goal:.0f}x faster per image", "met": None,
                            "value": "not run"})
        else:
            targets.append({"target": f"{name} >= {goal:.0f}x faster per image", "met": s["speedup"] >= goal,
                            "value": f"{s['speedup']:.1f}x"})
    print_table(["target", "value", "met"],
                [[t["target"], t["value"], {True: "met", False: "NOT met", None: "not measured"}[t["met"]]]
                 for t in targets], title="Targets")
    if args.max_windows is not None:
        print(f"note: --max-windows {args.max_windows} capped the baseline; its times are not comparable.")

    result.extra = {"model": str(model_path), "int8_model": str(int8_path) if int8_path else None, "keras_build_s": build_s, "weights_max_abs_diff": diff,
               "recipe": {"width": args.width, "pyramid_scale": PYR_SCALE, "roi_wh": ROI_SIZE, "step": WIN_STEP,
                          "input_wh": INPUT_SIZE, "min_conf": 0.9, "nms": "imutils overlap 0.3",
                          "predict": "one model.predict, default batch_size 32"},
               "slidewin_configs": {k: json.loads(json.dumps(dataclasses.asdict(v), default=str))
                                    for k, v in slidewin_configs().items()},
               "per_image": per_image, "targets": targets,
               "caveat": "CPU shared with other processes; methods interleaved per image; random weights: speed only"}
    result.save()
    result.chart(lambda ax: draw_chart(ax, summary, m, len(images)), figsize=(8.5, 4.5))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
