"""fp32 vs fp16 vs int8 classifiers: images/s at one batch size, and agreement with fp32.

For each model the fp16 and int8 variants are made from the fp32 export (models/<name>.onnx)
with ``slidewin_export.quantize`` when missing or older than it: int8 is calibrated on windows
from the even-numbered coco-dev photos, and agreement is measured on windows from the
odd-numbered ones (never seen in calibration). As a yardstick for what a top-1 "flip" means on
such windows, the table also shows fp32 against itself on the same windows with +-1 grey level
of noise added.

Speed is measured *interleaved*: each round times every precision back to back, and a
speed-up is the median over rounds of the per-round ratio, so CPU contention from other
processes hits all precisions alike. Run:

    python benchmarks/speed/bench_precision.py [--batch 16] [--rounds 7] [--requantize] [--data DIR]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: _common

from _common import (
    MODELS,
    Result,
    add_data_option,
    ensure_model,
    interleave,
    machine,
    median,
    parse,
)

PRECISIONS = ("fp32", "fp16", "int8")


def variant(name: str, precision: str, fp32, requantize: bool, data: Path):
    """models/<name>-<precision>.onnx, made from the fp32 file when missing, stale, or asked to (int8
    calibrated on the data set's even photos)."""
    from slidewin_export.quantize import calibration_photos, to_fp16, to_int8

    if precision == "fp32":
        return fp32
    path = MODELS / f"{name}-{precision}.onnx"
    if requantize or not path.exists() or path.stat().st_mtime < fp32.stat().st_mtime:
        folder, cal, held = calibration_photos(data / "images")
        print(f"making {path.name} from {fp32.name} ...", flush=True)
        if precision == "fp16":
            to_fp16(fp32, path, photos=held)
        else:
            to_int8(fp32, path, cal, held_out=held)
    return path


def interleaved_speed(classifiers: dict, batch: np.ndarray, rounds: int, runs: int) -> dict[str, list[float]]:
    """images/s per round for each classifier, the classifiers timed back to back in each round."""
    for clf in classifiers.values():  # warm-up: first runs allocate and pick kernels
        clf.predict(batch)
        clf.predict(batch)
    ips: dict[str, list[float]] = {k: [] for k in classifiers}
    for _, key in interleave(classifiers, rounds):
        clf = classifiers[key]
        t0 = time.perf_counter()
        for _ in range(runs):
            clf.predict(batch)
        ips[key].append(runs * len(batch) / (time.perf_counter() - t0))
    return ips


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["efficientnet-lite0", "resnet50-random"])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=7, help="interleaved timing rounds (median reported)")
    ap.add_argument("--runs", type=int, default=2, help="batches per precision per round")
    ap.add_argument("--check-windows", type=int, default=480,
                    help="held-out windows for agreement (6 per photo; 480 = all 80 held-out coco-dev photos)")
    ap.add_argument("--requantize", action="store_true", help="remake the fp16 / int8 files")
    add_data_option(ap, help="COCO-format data set whose even photos calibrate int8 and odd ones check agreement")
    args = parse(ap, argv)

    from slidewin_export.quantize import (
        CHECK_PHOTOS,
        WINDOW_SEED,
        Int8Settings,
        agreement,
        calibration_photos,
        cut_windows,
        probabilities,
    )

    from slidewin import Classifier
    from slidewin.errors import SlidewinError

    try:
        _, _, held = calibration_photos(args.data / "images")
    except SlidewinError as e:
        print(f"bench_precision needs photos to calibrate and check on: {e}")
        return 2
    device = "cuda" if (m := machine())["gpu"] else "cpu"
    results: list[dict] = []
    result = Result(m, args, results, name="precision", extra={
        "device": device,
        "method": "interleaved rounds: each round times fp32, fp16, int8 back to back, in mirrored order every "
                  "other round; speed-up is the median of per-round ratios (robust to CPU contention from other "
                  "processes)"})
    print(f"machine: {result.machine_line}")
    rows = []
    for name in args.models:
        fp32 = ensure_model(name)
        paths = {p: variant(name, p, fp32, args.requantize, args.data) for p in PRECISIONS}
        classifiers = {p: Classifier(paths[p], device=device) for p in PRECISIONS}
        meta = classifiers["fp32"].meta
        h, w = meta.input_hw
        photos = held[:max(CHECK_PHOTOS, -(-args.check_windows // 6))]
        windows = cut_windows(photos, (h, w), args.check_windows, seed=WINDOW_SEED + 1)
        source = f"held-out coco-dev windows ({len(photos)} photos)"
        print(f"{name}: agreement on {len(windows)} {source} ...", flush=True)
        ref = probabilities(classifiers["fp32"].session, windows)
        noisy = np.clip(windows.astype(np.int16) + np.random.default_rng(5).integers(-1, 2, windows.shape), 0, 255)
        floor = agreement(ref, probabilities(classifiers["fp32"].session, noisy.astype(np.uint8)), source)
        agree = {p: agreement(ref, probabilities(classifiers[p].session, windows), source) for p in PRECISIONS[1:]}

        print(f"{name}: timing batch {args.batch}, {args.rounds} interleaved rounds on {device} ...", flush=True)
        batch = np.random.default_rng(1).integers(0, 256, (args.batch, h, w, 3), dtype=np.uint8)
        ips = interleaved_speed(classifiers, batch, args.rounds, args.runs)
        base = ips["fp32"]
        note = " (random weights: agreement not meaningful)" if meta.is_random else ""
        for p in PRECISIONS:
            speedup = median([a / b for a, b in zip(ips[p], base)])
            a = agree.get(p)
            size = paths[p].stat().st_size / 2**20
            rows.append([name, meta.weights, p, ", ".join(classifiers[p].providers[:1]), f"{median(ips[p]):.1f}",
                         f"{speedup:.2f}x", "-" if a is None else f"{100 * a.top1:.1f}%{note and ' *'}",
                         "-" if a is None else f"{100 * a.top1_confident:.1f}% of {a.confident}",
                         "-" if a is None else f"{a.max_abs_diff:.3g}", f"{size:.1f}"])
            results.append({
                "model": name, "weights": meta.weights, "precision": p, "file": paths[p].name, "size_mib": size,
                "providers": classifiers[p].providers, "batch": args.batch,
                "images_per_s": median(ips[p]), "images_per_s_rounds": ips[p], "speedup_vs_fp32": speedup,
                "agreement": None if a is None else {
                    "top1": a.top1, "top1_where_fp32_confident": a.top1_confident, "confident_windows": a.confident,
                    "max_abs_diff": a.max_abs_diff, "windows": a.windows, "source": a.source,
                    "meaningful": not meta.is_random},
                "quantization": classifiers[p].meta.extra.get("quantization"),
                "calibration": classifiers[p].meta.extra.get("calibration"),
            })
        rows.append([name, meta.weights, "fp32 +-1 grey level", "(yardstick)", "", "",
                     f"{100 * floor.top1:.1f}%{note and ' *'}",
                     f"{100 * floor.top1_confident:.1f}% of {floor.confident}", f"{floor.max_abs_diff:.3g}", ""])
        results.append({"model": name, "precision": "fp32 with +-1 grey-level noise (yardstick)",
                        "agreement": {"top1": floor.top1, "top1_where_fp32_confident": floor.top1_confident,
                                      "confident_windows": floor.confident, "max_abs_diff": floor.max_abs_diff,
                                      "windows": floor.windows}})

    title = (f"fp32 vs fp16 vs int8, batch {args.batch} on {device} ({result.machine_line}). Speed: {args.rounds} "
             f"interleaved rounds (every precision timed back to back each round; speed-up = median of per-round "
             f"ratios, so other processes' load hits all alike). Agreement with fp32 on held-out coco-dev windows "
             f"(never used for calibration); 'fp32 >= 0.5': windows where fp32's top-1 probability is at least 0.5. "
             f"* random weights: agreement not meaningful, speed is.")
    result.table(["model", "weights", "precision", "provider", "images/s", "vs fp32", "top-1 agree",
                  "top-1 agree (fp32 >= 0.5)", "max |Δprob|", "MiB"], rows, title=title)
    result.extra["int8_settings"] = Int8Settings().describe()
    result.save()

    def draw(ax):
        timed = [r for r in results if "images_per_s" in r]
        names = list(dict.fromkeys(r["model"] for r in timed))
        x = np.arange(len(names))
        for i, p in enumerate(PRECISIONS):
            vals = [next(r["speedup_vs_fp32"] for r in timed if r["model"] == n and r["precision"] == p) for n in names]
            bars = ax.bar(x + (i - 1) * 0.27, vals, 0.27, label=p)
            for b, n in zip(bars, names):
                r = next(r for r in timed if r["model"] == n and r["precision"] == p)
                if r["agreement"]:
                    star = "" if r["agreement"]["meaningful"] else "*"
                    ax.annotate(f"{100 * r['agreement']['top1']:.0f}%{star}",
                                (b.get_x() + b.get_width() / 2, b.get_height()), ha="center", va="bottom", fontsize=8)
        ax.axhline(1.0, color="grey", lw=0.8)
        ax.set_xticks(x, names)
        ax.set_ylabel(f"images/s relative to fp32 (batch {args.batch})")
        ax.set_title(f"{device}: {m['cpu'][:40]} ({m['physical_cores']} cores), interleaved rounds\nlabels: top-1 "
                     "agreement with fp32 on held-out coco-dev windows (* random weights: not meaningful)", fontsize=9)
        ax.legend()

    result.chart(draw)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
