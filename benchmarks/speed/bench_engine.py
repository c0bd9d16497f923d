"""Folder runs: the local engine against Ray (1 and 2 workers) on the same photos.

N coco-dev photos (symlinks) through `run_folder` (``--engine local``) and through `run_ray`
(``--engine ray``) with 1 and 2 actors of 1 CPU each, EfficientNet-Lite0 on the CPU, default
detector settings with the COCO classes. Every measurement runs in a fresh process: the local
one opens its detector (ONNX Runtime threads = the physical cores) and runs; the Ray one starts a
local cluster on this machine (``ray.init``, timed: the start-up cost), then runs, its actors
opening their detectors inside the timed run (a real run pays that too). Configurations are
interleaved over the repeats; the best run of each is reported.

Memory: the peak resident set of the driver, and of the driver plus every process of the Ray
cluster it started (GCS, raylet, workers, helpers), sampled every 0.25 s. The sum counts pages
that processes share (the object store) once per process: an upper bound. Run:

    python benchmarks/speed/bench_engine.py [--images 40] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import threading
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
    run_child,
)
from bench_folder import link_folder

CONFIGS = {"local": None, "ray, 1 worker": 1, "ray, 2 workers": 2}


class TreeRss:
    """Peak RSS of this process and of it with all its descendants, sampled in a thread."""

    def __init__(self, every: float = 0.25):
        import psutil

        self.proc, self.every = psutil.Process(), every
        self.peak_self = self.peak_tree = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> int:
        import psutil

        total = own = self.proc.memory_info().rss
        for child in self.proc.children(recursive=True):
            try:
                total += child.memory_info().rss
            except psutil.Error:  # gone between listing and reading
                pass
        self.peak_self, self.peak_tree = max(self.peak_self, own), max(self.peak_tree, total)
        return total

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.sample()

    def __enter__(self) -> "TreeRss":
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()


def _mb(n: int) -> float:
    return round(n / 2**20, 1)


def _config():
    from slidewin.pipeline.config import DetectorConfig

    return DetectorConfig()


def child(spec: dict) -> dict:
    """One run in this process; returns what it measured."""
    from slidewin.apps.folder.inputs import collect_inputs
    from slidewin.apps.folder.ray_engine import RayOptions, Sources, run_ray
    from slidewin.apps.folder.run import run_folder
    from slidewin.pipeline.factory import build_detector

    root, inputs = collect_inputs([spec["folder"]])
    result = {"images": len(inputs)}
    with TreeRss() as rss:
        if spec["workers"] is None:
            detector = build_detector(spec["model"], config=_config(), classes="coco", device="cpu")
            t0 = time.perf_counter()
            s = run_folder(detector, inputs, spec["out"], spec["model"], root=root, progress=False)
        else:
            import ray

            t0 = time.perf_counter()
            ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False, logging_level="warning")
            result["startup_seconds"] = round(time.perf_counter() - t0, 3)
            time.sleep(1.0)  # let the helpers settle before reading their idle memory
            result["cluster_idle_rss_mb"] = _mb(rss.sample())
            t0 = time.perf_counter()
            s = run_ray(Sources(inputs, root), Path(spec["out"]), spec["model"], config=_config(), classes="coco",
                        device="cpu", options=RayOptions(workers=spec["workers"]), progress=False)
        seconds = time.perf_counter() - t0
    result.update(ok=s.ok, failed=s.failed, seconds=round(seconds, 3), images_per_s=round(s.total / seconds, 3),
                  peak_driver_rss_mb=_mb(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024),
                  peak_tree_rss_mb=_mb(rss.peak_tree))
    if "startup_seconds" in result:
        result["images_per_s_with_startup"] = round(s.total / (seconds + result["startup_seconds"]), 3)
    return result


def measure(model: Path, folder: Path, tmp: Path, repeats: int) -> dict[str, list[dict]]:
    runs: dict[str, list[dict]] = {name: [] for name in CONFIGS}
    for rep, name in interleave(CONFIGS, repeats):  # shared cores drift
        spec = {"model": str(model), "folder": str(folder), "workers": CONFIGS[name],
                "out": str(tmp / f"out-{rep}-{name.replace(' ', '').replace(',', '-')}")}
        r = run_child(__file__, spec)
        runs[name].append(r)
        print(f"  {name}: {r['images_per_s']:.2f} images/s, peak RSS {r['peak_tree_rss_mb']:.0f} MB"
              + (f", start-up {r['startup_seconds']:.1f} s" if "startup_seconds" in r else ""), flush=True)
    return runs


def table_rows(runs: dict[str, list[dict]]) -> tuple[list[list], dict]:
    """One row per configuration (its best run), and that run for the JSON."""
    rows, best = [], {}
    local = max(runs["local"], key=lambda r: r["images_per_s"])["images_per_s"]
    for name, rs in runs.items():
        b = best[name] = max(rs, key=lambda r: r["images_per_s"])
        startup = b.get("startup_seconds")
        rows.append([name, f"{b['images_per_s']:.2f}", f"{b['images_per_s'] / local:.2f}x",
                     "-" if startup is None else f"{startup:.1f}",
                     "-" if startup is None else f"{b['images_per_s_with_startup']:.2f}",
                     f"{b['peak_driver_rss_mb']:.0f}", f"{b['peak_tree_rss_mb']:.0f}",
                     "-" if startup is None else f"{b['cluster_idle_rss_mb']:.0f}"])
    return rows, best


HEADERS = ["engine", "images/s (run)", "vs local", "Ray start-up s", "images/s incl. start-up",
           "peak RSS driver MB", "peak RSS driver + cluster MB", "idle cluster RSS MB"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=40, help="photos of --data (cycled when there are fewer)")
    ap.add_argument("--repeats", type=int, default=2, help="runs per configuration (the best is reported)")
    ap.add_argument("--out-dir", type=Path, default=None, help="where engine.json/.png go (default benchmarks/results)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    add_data_option(ap, help="photos to run (images/ of a COCO-format set, or a folder of JPEGs)")
    if "--child" in (sys.argv[1:] if argv is None else argv):
        args = ap.parse_args(argv)  # a child needs no data set: the spec names its folder
        print(json.dumps(child(json.loads(args.child))))
        return 0
    args = parse(ap, argv)

    model = ensure_model("efficientnet-lite0")
    load = os.getloadavg()[0]
    result = Result(machine(), args, {}, name="engine", folder=args.out_dir, extra={
        "model": "efficientnet-lite0 (CPU)", "images": args.images, "load_average_at_start": load})
    m = result.machine
    print(f"machine: {result.machine_line}; load average {load:.1f}")
    with tempfile.TemporaryDirectory(prefix="bench-engine-") as tmp:
        tmp = Path(tmp)
        runs = measure(model, link_folder(tmp / "photos", args.images, args.data), tmp, args.repeats)
    rows, best = table_rows(runs)
    result.rows = {"best": best, "runs": runs}
    result.table(HEADERS, rows, title=f"Folder run engines, EfficientNet-Lite0 on the CPU, {args.images} "
                                      f"{args.data.name} photos, dense, COCO classes (best of {args.repeats}; "
                                      f"load {load:.1f})")
    result.save()

    def draw(ax):
        names = list(best)
        ips = [best[n]["images_per_s"] for n in names]
        ax.bar(names, ips, color=["tab:gray", "tab:blue", "tab:blue"])
        for i, n in enumerate(names):
            ax.annotate(f"{ips[i]:.2f}/s\npeak {best[n]['peak_tree_rss_mb']:.0f} MB", (i, ips[i]), ha="center",
                        va="bottom", fontsize=8)
        ax.set_ylabel("images/s (run, without Ray start-up)")
        ax.set_ylim(0, max(ips) * 1.3)
        ax.set_title(f"Local vs Ray engine, EfficientNet-Lite0, CPU ({m['physical_cores']} cores), "
                     f"{args.images} photos")

    result.chart(draw)
    return 0


if __name__ == "__main__":
    sys.exit(main())
