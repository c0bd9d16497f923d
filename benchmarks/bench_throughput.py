"""Raw classifier images/s against patch-mode windows/s, side by side in one run.

The ratio (detector windows/s over raw images/s at the same batch size and model) is the
detector's overhead: pyramid, crops, scoring and NMS. Run:

    python benchmarks/bench_throughput.py [--batch 16] [--images 8] [--seconds 5]
"""

from __future__ import annotations

import argparse

import numpy as np

from _common import COCO_DEV, ensure_model, machine, machine_line, median, print_table, timed, write_chart, write_json


def sample_images(n: int) -> list[np.ndarray]:
    """n real 640x480-ish photos from coco-dev, or synthetic 640x480 images when it is absent."""
    from slidewin.images import load_image

    paths = sorted((COCO_DEV / "images").glob("*.jpg"))[:n] if COCO_DEV.exists() else []
    if paths:
        return [load_image(p, convert=True) for p in paths]
    rng = np.random.default_rng(0)
    return [rng.integers(0, 255, (480, 640, 3), dtype=np.uint8) for _ in range(n)]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["efficientnet-lite0", "resnet50-random"])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--images", type=int, default=8, help="coco-dev photos for the detector run")
    ap.add_argument("--seconds", type=float, default=5.0, help="minimum timed seconds per measurement")
    args = ap.parse_args(argv)

    from slidewin import Classifier, DetectorConfig, SlidingWindowDetector

    m = machine()
    print(f"machine: {machine_line(m)}")
    images = sample_images(args.images)
    rows, results = [], []
    for name in args.models:
        clf = Classifier(ensure_model(name))
        h, w = clf.input_hw
        batch = np.random.default_rng(1).integers(0, 255, (args.batch, h, w, 3), dtype=np.uint8)
        raw = timed(lambda: clf.predict(batch), args.seconds)
        raw_ips = args.batch / median(raw)

        det = SlidingWindowDetector(clf, config=DetectorConfig(batch_size=args.batch, min_score=0.5))
        stats_all = []

        def run_all():
            stats_all.clear()
            for im in images:
                stats_all.append(det.run(im)[1])

        patch = timed(run_all, args.seconds, min_runs=2)
        windows = sum(s.windows for s in stats_all)
        win_ps = windows / median(patch)
        stages = {k: sum(s.seconds[k] for s in stats_all) for k in stats_all[0].seconds}
        total = sum(stages.values())
        rows.append([name, clf.meta.weights, args.batch, f"{raw_ips:.1f}", f"{win_ps:.1f}",
                     f"{100 * win_ps / raw_ips:.0f}%", f"{1000 * median(patch) / len(images):.0f}",
                     " ".join(f"{k} {100 * v / total:.0f}%" for k, v in stages.items())])
        results.append({"model": name, "weights": clf.meta.weights, "providers": clf.providers, "batch": args.batch,
                        "raw_images_per_s": raw_ips, "patch_windows_per_s": win_ps,
                        "patch_over_raw": win_ps / raw_ips, "images": len(images), "windows": windows,
                        "ms_per_image": 1000 * median(patch) / len(images), "stage_seconds_last_run": stages})
    print_table(["model", "weights", "batch", "raw images/s", "patch windows/s", "patch/raw", "ms/image",
                 "stages (share of detect time)"], rows,
                title=f"Classifier vs patch-mode throughput, {len(images)} images ({machine_line(m)})")
    write_json("throughput", {"machine": m, "args": vars(args), "results": results})

    def draw(ax):
        x = np.arange(len(results))
        ax.bar(x - 0.2, [r["raw_images_per_s"] for r in results], 0.4, label="raw classifier (images/s)")
        ax.bar(x + 0.2, [r["patch_windows_per_s"] for r in results], 0.4, label="patch-mode detector (windows/s)")
        ax.set_xticks(x, [r["model"] for r in results])
        ax.set_ylabel("per second")
        ax.set_title(f"batch {args.batch}, {m['cpu'][:40]} ({m['physical_cores']} cores)")
        ax.legend()

    write_chart("throughput", draw)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
