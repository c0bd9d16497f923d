"""Patch-based against region-proposal detection: per-image latency, images/s and peak RSS.

Each configuration runs in its own process (so its peak RSS is its own) over the same images:
slidewin patch mode with ResNet50 and with EfficientNet-Lite0, dense mode for both, and Faster
R-CNN ResNet50-FPN v2, all through ONNX Runtime (CUDA when usable, else CPU). Run:

    python benchmarks/speed/bench_detect.py [--data DIR] [--limit 10]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: _common

from _common import Result, add_data_option, ensure_model, machine, parse

CONFIGS = {
    "patch, ResNet50": ("resnet50-random", "patch"),
    "patch, EfficientNet-Lite0": ("efficientnet-lite0", "patch"),
    "dense, ResNet50": ("resnet50-random", "dense"),
    "dense, EfficientNet-Lite0": ("efficientnet-lite0", "dense"),
    "Faster R-CNN v2 (800 px)": ("frcnn-random", None),
}


def image_paths(data: Path, limit: int | None) -> list[Path]:
    folder = data / "images" if (data / "images").is_dir() else data
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    return paths[:limit] if limit else paths


def worker(model: Path, mode: str | None, paths: list[Path], windows: str) -> dict:
    """Runs in a child process: load, warm up on the first image, then time every image."""
    import resource

    from slidewin.io.images import load_image
    from slidewin.pipeline.config import DEFAULT_WINDOWS, DetectorConfig
    from slidewin.pipeline.factory import build_detector

    wins = DEFAULT_WINDOWS if windows == "default" else None  # None: the classifier's input size
    config = DetectorConfig(mode=mode, windows_hw=wins) if mode else DetectorConfig()
    classes = "coco" if mode else None
    det = build_detector(model, config=config, classes=classes)
    det.detect(load_image(paths[0], convert=True))  # warm-up: numba load, ORT first-run allocations
    latencies, windows = [], 0
    t_all = time.perf_counter()
    for p in paths:
        t0 = time.perf_counter()
        image = load_image(p, convert=True)
        det.detect(image)
        stats = det.last_stats
        latencies.append(time.perf_counter() - t0)
        windows += stats.windows
    total = time.perf_counter() - t_all
    return {
        "latencies": latencies,
        "images_per_s": len(paths) / total,
        "windows": windows,
        "unit": stats.unit.value,
        "providers": det.providers,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_option(ap, help="image folder or COCO dataset folder")
    ap.add_argument("--limit", type=int, default=10, help="images to time (default 10; 0 = all)")
    ap.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    ap.add_argument("--windows", choices=["input", "default"], default="input",
                    help="input: one window of the classifier's input size (224, the classic setting); "
                         "default: slidewin's detection defaults (3 sizes, ~20x more windows)")
    ap.add_argument("--worker", nargs=4, metavar=("MODEL", "MODE", "PATHS_JSON", "WINDOWS"), help=argparse.SUPPRESS)
    args = parse(ap, argv)
    if args.worker:
        model, mode, paths, windows = args.worker
        print(json.dumps(worker(Path(model), None if mode == "-" else mode, [Path(p) for p in json.loads(paths)],
                                windows)))
        return 0

    paths = image_paths(args.data, args.limit or None)
    results: list[dict] = []
    result = Result(machine(), args, results, name="detect",
                    extra={"images": [str(p) for p in paths], "windows": args.windows})
    m = result.machine
    print(f"machine: {result.machine_line}; {len(paths)} images from {args.data}")
    rows = []
    for name in args.configs:
        model_name, mode = CONFIGS[name]
        model = ensure_model(model_name)
        print(f"running {name} ...", flush=True)
        proc = subprocess.run([sys.executable, __file__, "--worker", str(model), mode or "-",
                               json.dumps([str(p) for p in paths]), args.windows], capture_output=True, text=True)
        if proc.returncode != 0:
            print(proc.stderr[-2000:])
            sys.exit(f"bench_detect: {name} failed")
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        lat = np.array(r["latencies"])
        r.update(name=name, model=model_name, mode=mode or "region-proposal",
                 median_s=float(np.median(lat)), p90_s=float(np.percentile(lat, 90)))
        results.append(r)
        rows.append([name, f"{r['median_s']:.3f}", f"{r['p90_s']:.3f}", f"{r['images_per_s']:.2f}",
                     f"{r['windows'] / len(paths):.0f} {r['unit']}", f"{r['peak_rss_mb']:.0f}"])
    result.table(["detector", "median s/image", "p90 s/image", "images/s", "evaluated per image", "peak RSS MB"],
                 rows, title=f"Per-image detection, {len(paths)} images, windows: {args.windows} "
                             f"({result.machine_line})")
    result.save()

    def draw(ax):
        y = np.arange(len(results))
        ax.barh(y, [r["median_s"] for r in results], xerr=[[0] * len(results),
                [r["p90_s"] - r["median_s"] for r in results]], color="#4c72b0")
        ax.set_yticks(y, [r["name"] for r in results])
        ax.invert_yaxis()
        ax.set_xlabel("seconds per image (median, whisker to p90)")
        ax.set_title(f"{len(paths)} {args.data.name} images, {m['cpu'][:40]}" + (f", {m['gpu']}" if m["gpu"] else ""))

    result.chart(draw)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
