"""Folder runs: images/s with and without decode prefetch, side by side; and peak memory.

Default: N coco-dev photos through `slidewin.apps.folder.run.run_folder` (what `slidewin detect
DIR --out-dir OUT` runs), EfficientNet-Lite0 on the CPU, each configuration with ``--prefetch 0``
(decode inline) and ``--prefetch 4`` (2 decode threads ahead), interleaved over the repeats.
Every measurement runs in a fresh process so that its peak RSS is its own. (Until 2026-11 this
also measured ONNX Runtime's spin-waiting threads against sleeping ones; that result is why
every slidewin session now sleeps, see `slidewin.runtime.sessions.session_options`.)

``--rss`` adds the memory figures: RSS every 100 images over 1,000 images (coco-dev cycled),
and the peak on one synthetic 20000 x 20000 JPEG, dense mode tiled (default) and untiled
(``--dense-tile 0``), and patch mode (twice the window, to finish in minutes). Run:

    python benchmarks/speed/bench_folder.py [--images 60] [--repeats 2] [--rss] [--data DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: _common

from _common import (
    Result,
    add_data_option,
    ensure_model,
    interleave,
    machine,
    parse,
    photos,
    run_child,
)

CONFIGS = {
    # A full pyramid: ORT's work dominates and decode is a few percent of it.
    "dense, full pyramid": {"mode": "dense"},
    # One level through a 448 px window: a fast per-image pass, where decoding is a real share.
    "dense, one level (window 448)": {"mode": "dense", "window": 448, "max_levels": 1},
}


def _mb(kb: int) -> float:
    return round(kb / 1024, 1)


def child(spec: dict) -> dict:
    """One folder run in this process; prints what it measured as one JSON line."""
    import psutil

    from slidewin.apps.folder.inputs import collect_inputs
    from slidewin.apps.folder.run import run_folder
    from slidewin.pipeline.factory import build_detector
    from slidewin.pipeline.sliding import DetectorConfig

    proc = psutil.Process()
    windows = ((spec["window"], spec["window"]),) if spec.get("window") else None
    config = DetectorConfig(mode=spec["mode"], windows_hw=windows, max_levels=spec.get("max_levels"),
                            batch_size=spec.get("batch_size", 16),
                            **({"dense_tile": spec["dense_tile"]} if spec.get("dense_tile") is not None else {}))
    detector = build_detector(spec["model"], config=config, device="cpu")
    root, inputs = collect_inputs([spec["folder"]])
    rss_loaded = proc.memory_info().rss
    samples, every = [], spec.get("sample_every", 0)

    def on_record(i, record):
        if every and (i + 1) % every == 0:
            samples.append([i + 1, round(proc.memory_info().rss / 2**20, 1)])

    t0 = time.perf_counter()
    s = run_folder(detector, inputs, spec["out"], spec["model"], root=root, prefetch=spec["prefetch"],
                   progress=False, on_record=on_record)
    seconds = time.perf_counter() - t0
    decode = 0.0
    with open(Path(spec["out"]) / "results.jsonl") as f:
        for line in f:
            decode += json.loads(line)["seconds"]["decode"]
    return {"images": s.total, "ok": s.ok, "failed": s.failed, "seconds": round(seconds, 3),
            "images_per_s": round(s.total / seconds, 3), "decode_seconds": round(decode, 3),
            "rss_after_load_mb": round(rss_loaded / 2**20, 1),
            "peak_rss_mb": _mb(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss), "rss_samples_mb": samples}


def link_folder(folder: Path, n: int, data: Path) -> Path:
    """n photos of the data set (cycled) as symlinks in a folder."""
    found = photos(data)
    if not found:
        raise SystemExit(f"bench_folder: no photos in {data}")
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        os.symlink(found[i % len(found)], folder / f"{i:05d}-{found[i % len(found)].name}")
    return folder


def make_big(path: Path, side: int, data: Path) -> None:
    """A side x side JPEG tiled from the data set's photos (in its own process: 1.2 GB while encoding)."""
    code = f"""
import cv2, numpy as np
photos = {[str(p) for p in photos(data, 16)]!r}
tile = 2000
img = np.empty(({side}, {side}, 3), np.uint8)
for k, (y, x) in enumerate((y, x) for y in range(0, {side}, tile) for x in range(0, {side}, tile)):
    p = cv2.resize(cv2.imread(photos[k % len(photos)]), (tile, tile), interpolation=cv2.INTER_LINEAR)
    img[y:y + tile, x:x + tile] = p[:{side} - y, :{side} - x]
assert cv2.imwrite({str(path)!r}, img, [cv2.IMWRITE_JPEG_QUALITY, 85])
"""
    subprocess.run([sys.executable, "-c", code], check=True)


def prefetch_gain(model: Path, args, tmp: Path) -> tuple[list, dict]:
    folder = link_folder(tmp / "gain", args.images, args.data)
    results = {}
    cases = [(name, pf) for name in CONFIGS for pf in (0, 4)]
    for k, (rep, (name, pf)) in enumerate(interleave(cases, args.repeats)):  # shared cores drift
        spec = {**CONFIGS[name], "model": str(model), "folder": str(folder), "prefetch": pf,
                "out": str(tmp / f"out-{k}")}
        r = run_child(__file__, spec)
        results.setdefault(name, {}).setdefault(pf, []).append(r)
        print(f"  {name}, prefetch {pf}: {r['images_per_s']:.2f} images/s, peak RSS "
              f"{r['peak_rss_mb']} MB", flush=True)
    rows, payload = [], {}
    for name, by_pf in results.items():
        best = {pf: max(by_pf[pf], key=lambda r: r["images_per_s"]) for pf in by_pf}
        ips0, ips4 = best[0]["images_per_s"], best[4]["images_per_s"]
        share = best[0]["decode_seconds"] / best[0]["seconds"]
        rows.append([name, f"{ips0:.2f}", f"{ips4:.2f}", f"{ips4 / ips0:.2f}x", f"{100 * share:.1f}%",
                     f"{best[0]['peak_rss_mb']:.0f} / {best[4]['peak_rss_mb']:.0f}"])
        payload[name] = {
            "config": CONFIGS[name], "runs": {str(k): v for k, v in by_pf.items()},
            "best_images_per_s": {"prefetch_0": ips0, "prefetch_4": ips4}, "speedup": round(ips4 / ips0, 3),
            "decode_share_without_prefetch": round(share, 4)}
    return rows, payload


def rss_figures(model: Path, args, tmp: Path) -> tuple[list, dict]:
    rows, payload = [], {}
    folder = link_folder(tmp / "thousand", args.rss_images, args.data)
    spec = {"mode": "dense", "max_levels": 2, "model": str(model), "folder": str(folder), "prefetch": 4,
            "out": str(tmp / "out-thousand"), "sample_every": 100}
    print(f"  {args.rss_images} images, dense mode (2 levels), prefetch 4 ...", flush=True)
    r = run_child(__file__, spec)
    samples = r["rss_samples_mb"]
    rows.append([f"{args.rss_images} {args.data.name} photos (cycled), dense, 2 levels", f"{r['rss_after_load_mb']:.0f}",
                 " / ".join(f"{v:.0f}" for _, v in samples), f"{r['peak_rss_mb']:.0f}", f"{r['seconds']:.0f}"])
    payload["thousand_images"] = {"spec": spec, **r}

    big = tmp / "big" / f"big-{args.big_side}.jpg"
    big.parent.mkdir()
    t0 = time.perf_counter()
    make_big(big, args.big_side, args.data)
    print(f"  made {big.name} ({big.stat().st_size / 2**20:.0f} MB) in {time.perf_counter() - t0:.0f} s", flush=True)
    side = args.big_side
    big_cases = {
        f"dense, window {args.big_window}, tiled (default 3072)": {"mode": "dense", "window": args.big_window},
        f"dense, window {args.big_window}, untiled": {"mode": "dense", "window": args.big_window, "dense_tile": 0},
        f"patch, window {2 * args.big_window}": {"mode": "patch", "window": 2 * args.big_window},
    }
    payload["big_image"] = {"side": side, "file_mb": round(big.stat().st_size / 2**20, 1),
                            "decoded_mb": round(side * side * 3 / 2**20, 1), "runs": {}}
    for name, cfg in big_cases.items():
        print(f"  {side}x{side}, {name} ...", flush=True)
        spec = {**cfg, "model": str(model), "folder": str(big.parent), "prefetch": 4, "out": str(tmp / f"out-big-{len(payload['big_image']['runs'])}")}
        r = run_child(__file__, spec)
        payload["big_image"]["runs"][name] = {"spec": spec, **r}
        rows.append([f"one {side}x{side} JPEG, {name}", f"{r['rss_after_load_mb']:.0f}", "-", f"{r['peak_rss_mb']:.0f}",
                     f"{r['seconds']:.0f}"])
    return rows, payload


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=60, help="photos of --data for the prefetch comparison")
    ap.add_argument("--repeats", type=int, default=2, help="runs per configuration (the best is reported)")
    ap.add_argument("--rss", action="store_true", help="also measure memory: 1,000 images and one huge image")
    ap.add_argument("--rss-images", type=int, default=1000)
    ap.add_argument("--big-side", type=int, default=20000)
    ap.add_argument("--big-window", type=int, default=1000, help="dense window on the huge image (level 0 = "
                    "side * 224 / window pixels: 4480 at 1000, tiled)")
    ap.add_argument("--skip-gain", action="store_true", help="only the memory figures")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    add_data_option(ap, help="photos to run (images/ of a COCO-format set, or a folder of JPEGs)")
    if "--child" in (sys.argv[1:] if argv is None else argv):
        args = ap.parse_args(argv)  # a child needs no data set: the spec names its folder
        print(json.dumps(child(json.loads(args.child))))
        return 0
    args = parse(ap, argv)

    model = ensure_model("efficientnet-lite0")
    name = "folder" if not args.skip_gain else "folder_rss"
    result = Result(machine(), args, {}, name=name, extra={
        "model": "efficientnet-lite0 (CPU)", "load_average_at_start": os.getloadavg()[0]})
    m = result.machine
    print(f"machine: {result.machine_line}; load average {os.getloadavg()[0]:.1f}")
    payload = result.rows
    with tempfile.TemporaryDirectory(prefix="bench-folder-") as tmp:
        tmp = Path(tmp)
        if not args.skip_gain:
            print(f"prefetch: {args.images} {args.data.name} photos, {args.repeats} runs per configuration")
            rows, payload["prefetch"] = prefetch_gain(model, args, tmp)
            result.table(["configuration", "images/s, decode inline", "images/s, prefetch 4",
                         "speed-up", "decode share (inline)", "peak RSS MB (inline / prefetch)"], rows,
                        title=f"Folder run, EfficientNet-Lite0 on the CPU, {args.images} {args.data.name} photos "
                              f"(best of {args.repeats})")
        if args.rss:
            print("memory:")
            rows, payload["memory"] = rss_figures(model, args, tmp)
            result.table(["run", "RSS after model load MB", "RSS every 100 images MB", "peak RSS MB", "seconds"],
                        rows, title="Peak memory of folder runs (one fresh process each)")
    result.save()
    if "prefetch" in payload:
        def draw(ax):
            names = list(payload["prefetch"])
            x = range(len(names))
            v0 = [payload["prefetch"][n]["best_images_per_s"]["prefetch_0"] for n in names]
            v4 = [payload["prefetch"][n]["best_images_per_s"]["prefetch_4"] for n in names]
            ax.bar([i - 0.2 for i in x], v0, 0.4, label="decode inline")
            ax.bar([i + 0.2 for i in x], v4, 0.4, label="prefetch 4 (2 threads)")
            ax.set_xticks(list(x), [n.replace("; ", "\n") for n in names], fontsize=8)
            ax.set_ylabel("images/s")
            ax.set_title(f"Folder run throughput, EfficientNet-Lite0, CPU ({m['physical_cores']} cores)")
            ax.legend()

        result.chart(draw)
    return 0


if __name__ == "__main__":
    sys.exit(main())
