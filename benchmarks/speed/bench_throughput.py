"""Raw classifier images/s against patch-mode windows/s, side by side in one run.

The ratio (detector windows/s over raw images/s at the same batch size and model) is the
detector's overhead: pyramid, crops, scoring and NMS. Run:

    python benchmarks/speed/bench_throughput.py [--batch 16] [--images 1] [--rounds 3] [--windows default|input]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: _common

from _common import (
    Result,
    add_data_option,
    ensure_model,
    interleave,
    machine,
    median,
    parse,
    photos,
    timed,
)


def sample_images(data: Path | None, n: int) -> list[np.ndarray]:
    """n real photos of the data set, or synthetic 640x480 images without one."""
    from slidewin.io.images import load_image

    paths = photos(data, n)
    if paths:
        return [load_image(p, convert=True) for p in paths]
    rng = np.random.default_rng(0)
    return [rng.integers(0, 255, (480, 640, 3), dtype=np.uint8) for _ in range(n)]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["efficientnet-lite0", "resnet50-random"])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--images", type=int, default=1,
                    help="photos for the detector run (a coco-dev one has ~2,000 windows with the default windows)")
    ap.add_argument("--seconds", type=float, default=3.0,
                    help="minimum seconds of raw batches per round (after the first: as long as the detector's run)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds (raw, then the detector)")
    ap.add_argument("--windows", choices=["default", "input"], default="default",
                    help="default: slidewin's 3 window sizes (~2,000-3,000 windows per photo); input: one "
                         "window of the classifier's input size (~150 per photo, so fixed costs weigh more)")
    add_data_option(ap, required=False, help="photos for the detector run (default: synthetic noise when there is none)")
    args = parse(ap, argv)

    from slidewin import Classifier, DetectorConfig, SlidingWindowDetector
    from slidewin.pipeline.config import DEFAULT_WINDOWS, Mode

    results: list[dict] = []
    result = Result(machine(), args, results, name="throughput")
    m = result.machine
    print(f"machine: {result.machine_line}")
    images = sample_images(args.data, args.images)
    rows = []
    for name in args.models:
        clf = Classifier(ensure_model(name))
        h, w = clf.input_hw
        batch = np.random.default_rng(1).integers(0, 255, (args.batch, h, w, 3), dtype=np.uint8)
        wins = DEFAULT_WINDOWS if args.windows == "default" else None
        det = SlidingWindowDetector(clf, config=DetectorConfig(mode=Mode.PATCH, batch_size=args.batch, min_score=0.5,
                                                         windows_hw=wins))
        stats_all = []

        def run_all():
            stats_all.clear()
            for im in images:
                det.detect(im)
                stats_all.append(det.last_stats)

        # Interleaved rounds: raw batches for a few seconds and the detector over every image, in
        # mirrored order (raw, patch / patch, raw ...), so load from other processes hits both alike;
        # the ratio is the median per-round ratio.
        clf.predict(batch)
        det.detect(images[0][:240, :320])  # warm-up: numba, ORT first-run allocations
        # Each raw measurement lasts as long as the detector's last run (balanced exposure to noise).
        raw_rounds, patch_rounds = [], []
        raw_seconds = args.seconds
        for _, case in interleave(("raw", "patch"), args.rounds):
            if case == "raw":
                raw_rounds.append(args.batch / median(timed(lambda: clf.predict(batch), raw_seconds, warmup=0)))
                continue
            t0 = time.perf_counter()
            run_all()
            patch_rounds.append(time.perf_counter() - t0)
            raw_seconds = max(args.seconds, patch_rounds[-1])
        raw_ips = median(raw_rounds)
        patch = patch_rounds
        windows = sum(s.windows for s in stats_all)
        win_ps = windows / median(patch)
        ratios = [(windows / p) / r for p, r in zip(patch_rounds, raw_rounds)]
        stages = {k: sum(s.seconds[k] for s in stats_all) for k in stats_all[0].seconds}
        total = sum(stages.values())
        overhead = 1 - stages["inference"] / total  # everything but the network, by the stage timers
        rows.append([name, clf.meta.weights, args.batch, f"{raw_ips:.1f}", f"{win_ps:.1f}",
                     f"{100 * median(ratios):.0f}%", f"{1000 * median(patch) / len(images):.0f}",
                     f"{100 * overhead:.2f}%",
                     " ".join(f"{k} {100 * v / total:.1f}%" for k, v in stages.items())])
        results.append({"model": name, "weights": clf.meta.weights, "providers": clf.providers, "batch": args.batch,
                        "raw_images_per_s": raw_ips, "patch_windows_per_s": win_ps,
                        "patch_over_raw": median(ratios), "patch_over_raw_rounds": ratios,
                        "raw_images_per_s_rounds": raw_rounds, "patch_seconds_rounds": patch_rounds,
                        "target_met": median(ratios) >= 0.9, "images": len(images), "windows": windows,
                        "load_avg_1min": round(os.getloadavg()[0], 2),
                        "ms_per_image": 1000 * median(patch) / len(images), "stage_seconds_last_run": stages,
                        "overhead_share_by_stage_timers": overhead})
    result.table(["model", "weights", "batch", "raw images/s", "patch windows/s", "patch/raw", "ms/image",
                 "time outside the network", "stages (share of detect time)"], rows,
                title=f"Classifier vs patch-mode throughput, {len(images)} images, {args.windows} windows "
                      f"({result.machine_line}); target: patch/raw >= 90%")
    result.save()

    def draw(ax):
        x = np.arange(len(results))
        ax.bar(x - 0.2, [r["raw_images_per_s"] for r in results], 0.4, label="raw classifier (images/s)")
        ax.bar(x + 0.2, [r["patch_windows_per_s"] for r in results], 0.4, label="patch-mode detector (windows/s)")
        ax.set_xticks(x, [r["model"] for r in results])
        ax.set_ylabel("per second")
        ax.set_title(f"batch {args.batch}, {m['cpu'][:40]} ({m['physical_cores']} cores)")
        ax.legend()

    result.chart(draw)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
