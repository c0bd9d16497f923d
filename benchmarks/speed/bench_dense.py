"""Dense against patch mode on 640x480 photos: the same windows, timed side by side.

For each configuration (model x window set) both modes evaluate exactly the same windows (aligned
levels, step = the network stride; checked below), so the ratio of their times is the speed-up of
the fully-convolutional pass. The runs are interleaved per image (patch, dense, patch, dense ...)
so load from other processes hits both alike. Agreement is measured per window: top-1 label of the
patch crop against top-1 of the dense map cell, over all windows and over the windows where the
patch crop's top-1 probability is at least 0.5. When `slidewin evaluate` reports for both modes
exist under results/eval/ (slidewin-patch, slidewin-dense), their AP difference is reported too.

    python benchmarks/speed/bench_dense.py [--images 3] [--rounds 2] [--data DIR]
        [--configs efficientnet-lite0:default efficientnet-lite0:input resnet50-random:input]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: _common

from _common import (
    RESULTS,
    Result,
    add_data_option,
    ensure_model,
    interleave,
    machine,
    median,
    parse,
    photos,
)

TARGET = 10.0  # issue 4: dense at least 10x faster than patch on a 640x480 image
SIZE_WH = (640, 480)
DEFAULT_CONFIGS = ["efficientnet-lite0:default", "efficientnet-lite0:input", "resnet50-random:input"]


def test_images(data: Path | None, n: int) -> list[tuple[str, np.ndarray]]:
    """n photos of the data set resized to exactly 640x480 (synthetic noise without a data set)."""
    from slidewin.io.images import load_image

    paths = photos(data, n)
    if paths:
        return [(p.name, cv2.resize(load_image(p, convert=True), SIZE_WH, interpolation=cv2.INTER_AREA))
                for p in paths]
    rng = np.random.default_rng(0)
    return [(f"noise-{i}", rng.integers(0, 255, (SIZE_WH[1], SIZE_WH[0], 3), dtype=np.uint8)) for i in range(n)]


def ap_difference() -> dict | None:
    """AP of the slidewin recipe in both modes, from saved `slidewin evaluate` reports."""
    out = {}
    for mode in ("patch", "dense"):
        path = RESULTS / "eval" / f"slidewin-{mode}" / "metrics.json"
        if not path.exists():
            return None
        m = json.loads(path.read_text())
        out[mode] = {k: m[k] for k in ("AP", "AP50", "AP75")} | {"images": m["images"], "model": m["model"]}
    out["dense_minus_patch"] = {k: out["dense"][k] - out["patch"][k] for k in ("AP", "AP50", "AP75")}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", nargs="+", default=DEFAULT_CONFIGS,
                    help="MODEL:WINDOWS, WINDOWS = default (slidewin's 3 window sizes) or input "
                         "(one window of the classifier's input size)")
    ap.add_argument("--images", type=int, default=3, help="photos of --data, resized to 640x480")
    ap.add_argument("--rounds", type=int, default=2, help="timed runs per image and mode (median kept)")
    add_data_option(ap, required=False, help="photos to time (default: synthetic noise when there is none)")
    args = parse(ap, argv)

    from slidewin import Classifier, DetectorConfig, SlidingWindowDetector
    from slidewin.pipeline.config import DEFAULT_WINDOWS

    m = machine()
    images = test_images(args.data, args.images)
    results: list[dict] = []
    result = Result(m, args, results, name="dense", extra={
        "size_wh": SIZE_WH, "target_speedup": TARGET,
        "method": "same aligned windows in both modes (checked); per image, interleaved rounds of patch and "
                  "dense, median per mode; speed-up = patch / dense"})
    print(f"machine: {result.machine_line}; load average {os.getloadavg()[0]:.1f}", flush=True)
    rows = []
    for spec in args.configs:
        name, _, windows = spec.partition(":")
        if windows not in ("default", "input"):
            ap.error(f"{spec}: WINDOWS must be default or input")
        clf = Classifier(ensure_model(name))
        wins = DEFAULT_WINDOWS if windows == "default" else None
        det = {mode: SlidingWindowDetector(clf, config=DetectorConfig(mode=mode, windows_hw=wins, min_score=0.5))
               for mode in ("patch", "dense")}
        for d in det.values():  # warm-up: dense graph rewrite (cached), ORT first-run allocations
            d.detect(images[0][1])
        per_image = []
        agree, agree_conf, n_conf, n_all, max_diff = 0, 0, 0, 0, 0.0
        for img_name, image in images:
            secs = {"patch": [], "dense": []}
            for _, mode in interleave(("patch", "dense"), args.rounds):
                t0 = time.perf_counter()
                det[mode].detect(image)
                stats = det[mode].last_stats
                secs[mode].append(time.perf_counter() - t0)
            pp, bp = det["patch"].window_probabilities(image)
            pd, bd = det["dense"].window_probabilities(image)
            if not np.array_equal(bp, bd):
                raise SystemExit(f"bench_dense: {spec}: the two modes planned different windows")
            top_p, top_d = pp.argmax(1), pd.argmax(1)
            conf = pp.max(1) >= 0.5
            agree += int((top_p == top_d).sum())
            agree_conf += int((top_p == top_d)[conf].sum())
            n_conf += int(conf.sum())
            n_all += len(pp)
            max_diff = max(max_diff, float(np.abs(pp - pd).max()))
            t_p, t_d = median(secs["patch"]), median(secs["dense"])
            per_image.append({"image": img_name, "windows": stats.windows, "patch_s": t_p, "dense_s": t_d,
                              "speedup": t_p / t_d, "patch_runs_s": secs["patch"], "dense_runs_s": secs["dense"],
                              "load_avg_1min": round(os.getloadavg()[0], 2)})
            print(f"  {spec} {img_name}: {stats.windows} windows, patch {t_p:.2f} s, dense {t_d:.3f} s, "
                  f"{t_p / t_d:.1f}x  [load avg {os.getloadavg()[0]:.1f}]", flush=True)
        speedups = [r["speedup"] for r in per_image]
        r = {
            "config": spec, "model": name, "weights": clf.meta.weights, "windows": windows,
            "windows_per_image": float(np.mean([r["windows"] for r in per_image])),
            "patch_s_median": median([r["patch_s"] for r in per_image]),
            "dense_s_median": median([r["dense_s"] for r in per_image]),
            "speedup_median": median(speedups), "speedup_min": min(speedups),
            "top1_agreement": agree / n_all,
            "top1_agreement_where_patch_confident": agree_conf / n_conf if n_conf else None,
            "confident_windows": n_conf, "windows_compared": n_all, "max_abs_prob_diff": max_diff,
            "agreement_meaningful": clf.meta.weights != "random",
            "target_met": min(speedups) >= TARGET, "per_image": per_image,
        }
        results.append(r)
        conf_txt = f"{100 * r['top1_agreement_where_patch_confident']:.0f}% of {n_conf}" if n_conf else "-"
        rows.append([name, clf.meta.weights, windows, f"{r['windows_per_image']:.0f}",
                     f"{r['patch_s_median']:.2f}", f"{r['dense_s_median']:.3f}",
                     f"{r['speedup_median']:.1f}x (min {r['speedup_min']:.1f}x)",
                     f"{100 * r['top1_agreement']:.0f}%" + ("" if r["agreement_meaningful"] else " (random weights)"),
                     conf_txt])
    title = (f"Dense vs patch mode, same windows, {len(images)} photos at 640x480 "
             f"({result.machine_line}); target: dense >= {TARGET:g}x")
    result.table(["model", "weights", "windows", "windows/image", "patch s/image", "dense s/image",
                  "dense speed-up", "top-1 agreement", "agreement where patch p >= 0.5"], rows, title=title)
    apd = ap_difference()
    if apd:
        d = apd["dense_minus_patch"]
        print(f"AP from saved `slidewin evaluate` reports ({apd['patch']['images']} images, {apd['patch']['model']['path']}): "
              f"patch AP {apd['patch']['AP']:.4f} / AP50 {apd['patch']['AP50']:.4f}, dense AP {apd['dense']['AP']:.4f} "
              f"/ AP50 {apd['dense']['AP50']:.4f}; dense - patch: AP {d['AP']:+.4f}, AP50 {d['AP50']:+.4f}")
    result.extra["ap_from_eval_reports"] = apd
    result.save()

    def draw(ax):
        x = np.arange(len(results))
        ax.bar(x - 0.2, [r["patch_s_median"] for r in results], 0.4, label="patch mode")
        ax.bar(x + 0.2, [r["dense_s_median"] for r in results], 0.4, label="dense mode")
        for i, r in enumerate(results):
            ax.annotate(f"{r['speedup_median']:.1f}x", (i + 0.2, r["dense_s_median"]), ha="center", va="bottom")
        ax.set_xticks(x, [f"{r['model']}\n{r['windows']} windows" for r in results])
        ax.set_yscale("log")
        ax.set_ylabel("seconds per 640x480 image (median)")
        ax.set_title(f"same windows, {m['cpu'][:40]} ({m['physical_cores']} cores)")
        ax.legend()

    result.chart(draw)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
