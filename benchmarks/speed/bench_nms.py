"""slidewin's numba NMS against cv2.dnn.NMSBoxes, a plain NumPy NMS and torchvision, side by side.

Greedy NMS (`slidewin.core.nms.nms`) and class-aware NMS (`slidewin.core.nms.batched_nms`) at several box
counts, on a uniform random layout and a clustered one, IoU threshold 0.5. For each competitor:
median time (numba compile time excluded; the first call is reported separately) and whether its
kept indices are identical, in order, to the NumPy reference (the textbook greedy loop in float64).
Competitors run interleaved in rounds, so load from other processes hits all of them alike, and
all on one thread (torch is pinned to one for the run). A competitor whose single run would take
long runs once, with a time limit (--timeout). Run:

    python benchmarks/speed/bench_nms.py [--sizes 100 1000 10000 100000] [--repeat N] [--out-dir DIR]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: _common

from _common import (
    RESULTS,
    ROOT,
    Result,
    interleave,
    machine,
    machine_line,
    median,
    print_table,
)

IOU = 0.5
CANVAS = 1000.0
NUM_CLASSES = 10
# Rounds per size when --repeat is not given: many at small sizes, where one call is microseconds.
AUTO_ROUNDS = {100: 51, 1_000: 31, 10_000: 9, 100_000: 3}
# A competitor whose extrapolated single run exceeds this runs once, in a child process that is
# killed after --timeout seconds (it is then reported as skipped).
GUARD_ABOVE_S = 5.0
SKIPPED = "skipped"


# --- box layouts -----------------------------------------------------------------------------------


def random_boxes(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Uniform layout: centres uniform in the 1000x1000 canvas, sides uniform in [10, 100].

    Returns:
        float32 (n, 4) xyxy clipped to the canvas, float32 (n,) distinct scores in (0, 1]
        (distinct, so that the tie-break rules of the competitors cannot make a difference).
    """
    rng = np.random.default_rng(seed)
    centres = rng.uniform(0, CANVAS, (n, 2))
    sides = rng.uniform(10, 100, (n, 2))
    return _finish(rng, centres, sides)


def clustered_boxes(n: int, seed: int = 0, clusters: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """Clustered layout: ``clusters`` objects, each with n / clusters jittered boxes around it
    (centre jitter sd 10% of the object's size, size jitter sd 10%), as a sliding-window
    detector produces them."""
    rng = np.random.default_rng(seed)
    obj_centre = rng.uniform(50, CANVAS - 50, (clusters, 2))
    obj_size = rng.uniform(20, 100, (clusters, 2))
    which = rng.integers(0, clusters, n)
    sides = np.maximum(obj_size[which] * rng.normal(1.0, 0.1, (n, 2)), 2.0)
    centres = obj_centre[which] + rng.normal(0.0, 0.1, (n, 2)) * obj_size[which]
    return _finish(rng, centres, sides)


def _finish(rng, centres, sides):
    n = len(centres)
    xyxy = np.concatenate([centres - sides / 2, centres + sides / 2], axis=1)
    xyxy = np.clip(xyxy, 0, CANVAS).astype(np.float32)
    scores = ((rng.permutation(n) + 1) / n).astype(np.float32)
    return xyxy, scores


LAYOUTS: dict[str, Callable[[int, int], tuple[np.ndarray, np.ndarray]]] = {
    "random": random_boxes,
    "clustered": clustered_boxes,
}


def class_ids_for(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed + 1).integers(0, NUM_CLASSES, n).astype(np.int64)


# --- the plain NumPy NMS (the tutorial implementation, and the reference) -------------------------


def numpy_nms(xyxy: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy NMS as tutorials write it: take the best box, drop every remaining box that overlaps
    it above the threshold (one vectorised step), repeat.

    Computed in float64 with the same IoU expression as slidewin's kernel,
    ``inter / (area_a + area_b - inter)``, so the two agree bit for bit at the threshold.
    Ties in score: the lower index first (as slidewin and cv2 do). No ``+ 1`` pixel convention.

    Args:
        xyxy: (N, 4) boxes. scores: (N,). iou_threshold: suppress when IoU > this.

    Returns:
        int64 (K,) kept indices by descending score.
    """
    boxes = np.asarray(xyxy, np.float64)
    x1, y1, x2, y2 = boxes.T
    areas = (x2 - x1) * (y2 - y1)
    order = np.lexsort((np.arange(len(boxes)), -np.asarray(scores, np.float64)))
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        iw = np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest])
        ih = np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest])
        inter = iw * ih
        overlap = (iw > 0) & (ih > 0) & (inter > 0)
        iou = np.where(overlap, inter / np.where(overlap, areas[i] + areas[rest] - inter, 1.0), 0.0)
        order = rest[iou <= iou_threshold]
    return np.array(keep, np.int64)


def numpy_batched_nms(xyxy, scores, class_ids, iou_threshold: float) -> np.ndarray:
    """`numpy_nms` per class, merged by descending score (lower index first on ties)."""
    kept = []
    for c in np.unique(class_ids):
        members = np.flatnonzero(class_ids == c)
        kept.append(members[numpy_nms(xyxy[members], scores[members], iou_threshold)])
    kept = np.concatenate(kept) if kept else np.zeros(0, np.int64)
    return kept[np.lexsort((kept, -np.asarray(scores, np.float64)[kept]))].astype(np.int64)


# --- competitors -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Impl:
    name: str
    prepare: Callable  # (xyxy, scores, class_ids) -> args, done once outside the timing
    call: Callable  # (*args) -> kept indices (anything np.asarray turns into ints)
    subject: bool = False  # slidewin itself: never guarded, always timed in-process
    # Whether a guarded run may fork: torch's OpenMP pool does not survive fork (the child can
    # hang), so torchvision's single slow runs happen in-process, without the timeout.
    forkable: bool = True


def _slidewin_impls(batched: bool) -> Impl:
    from slidewin.core.nms import batched_nms, nms

    if batched:
        return Impl("slidewin", lambda b, s, c: (b, s, c, IOU), batched_nms, subject=True)
    return Impl("slidewin", lambda b, s, c: (b, s, IOU), nms, subject=True)


def _cv2_impl(batched: bool) -> Impl | None:
    try:
        import cv2
    except ImportError:
        return None

    def xywh(b):
        b = b.astype(np.float64)  # Rect2d: cv2 then works in double, rounding the IoU to float
        return np.concatenate([b[:, :2], b[:, 2:] - b[:, :2]], axis=1)

    if batched:
        if not hasattr(cv2.dnn, "NMSBoxesBatched"):
            return None
        return Impl("cv2", lambda b, s, c: (xywh(b), s, c.astype(np.int32), 0.0, IOU), cv2.dnn.NMSBoxesBatched)
    # score_threshold 0 keeps every box: the scores are all > 0.
    return Impl("cv2", lambda b, s, c: (xywh(b), s, 0.0, IOU), cv2.dnn.NMSBoxes)


def _numpy_impl(batched: bool) -> Impl:
    if batched:
        return Impl("numpy", lambda b, s, c: (b, s, c, IOU), numpy_batched_nms)
    return Impl("numpy", lambda b, s, c: (b, s, IOU), numpy_nms)


def _torch_impl(batched: bool) -> Impl | None:
    try:
        import torch
        import torchvision
    except ImportError:
        return None

    def call(*args):
        with torch.inference_mode():
            fn = torchvision.ops.batched_nms if batched else torchvision.ops.nms
            return fn(*args).numpy()

    def prep(b, s, c):  # float32, as detectors hand boxes to torchvision
        args = (torch.from_numpy(np.ascontiguousarray(b)), torch.from_numpy(np.ascontiguousarray(s)))
        return (*args, torch.from_numpy(c), IOU) if batched else (*args, IOU)

    return Impl("torchvision", prep, call, forkable=False)


def implementations(batched: bool) -> list[Impl]:
    impls = [_slidewin_impls(batched), _cv2_impl(batched), _numpy_impl(batched), _torch_impl(batched)]
    return [i for i in impls if i is not None]


# --- timing --------------------------------------------------------------------------------------------


def _once(impl: Impl, args) -> tuple[float, np.ndarray]:
    t0 = time.perf_counter()
    kept = impl.call(*args)
    dt = time.perf_counter() - t0
    return dt, np.asarray(kept, np.int64).ravel()


def _child(conn, impl, args):  # runs in a forked process
    try:
        conn.send(_once(impl, args))
    except BaseException as e:  # report, never hang the parent
        conn.send(e)
    finally:
        conn.close()


def guarded_once(impl: Impl, args, timeout: float) -> tuple[float, np.ndarray] | None:
    """One call in a forked child, killed after ``timeout`` s (None then). Fork, so nothing is
    pickled on the way in and the child starts with the parent's imports and arrays."""
    if not impl.forkable or "fork" not in multiprocessing.get_all_start_methods():
        return _once(impl, args)
    ctx = multiprocessing.get_context("fork")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(child, impl, args), daemon=True)
    proc.start()
    child.close()
    try:
        if not parent.poll(timeout):
            return None
        result = parent.recv()
    finally:
        if proc.is_alive():
            proc.kill()
        proc.join()
        parent.close()
    if isinstance(result, BaseException):
        raise result
    return result


@dataclass
class Measurement:
    impl: str
    times: list[float] = field(default_factory=list)  # seconds per call
    calls_per_sample: int = 1
    kept: np.ndarray | None = None
    skipped: str | None = None
    guarded: bool = False

    @property
    def median_s(self) -> float | None:
        return median(self.times) if self.times else None


def measure_case(impls: list[Impl], data, rounds: int, timeout: float, previous: dict[str, tuple[int, float]]):
    """Time every implementation on one data set, interleaved in rounds.

    ``previous`` maps impl -> (n, median seconds) at the last size, to extrapolate
    (quadratically: the textbook loops are O(N * kept)) whether a single run may be slow.
    """
    n = len(data[0])
    out: dict[str, Measurement] = {}
    prepared = {}
    for impl in impls:
        m = out[impl.name] = Measurement(impl.name)
        prepared[impl.name] = impl.prepare(*data)
        prev = previous.get(impl.name)
        estimate = prev[1] * (n / prev[0]) ** 2 if prev else 0.0
        if prev is None and impl.name in previous.get("_skipped", set()):
            m.skipped = f"{SKIPPED} (> {timeout:.0f} s at a smaller size)"
            continue
        if not impl.subject and estimate > GUARD_ABOVE_S:
            m.guarded = True
            res = guarded_once(impl, prepared[impl.name], timeout)
            if res is None:
                m.skipped = f"{SKIPPED} (> {timeout:.0f} s)"
            else:
                m.times.append(res[0])
                m.kept = res[1]
            continue
        # Warm-up at this size: gives the kept indices and calibrates calls per sample so that
        # a sample lasts >= 2 ms (perf_counter noise at 100 boxes is a large part of a call).
        dt, m.kept = _once(impl, prepared[impl.name])
        m.calls_per_sample = int(min(200, max(1, 2e-3 // max(dt, 1e-7))))
    active = [i for i in impls if not out[i.name].guarded and out[i.name].skipped is None]
    for _, impl in interleave(active, rounds):
        m = out[impl.name]
        args = prepared[impl.name]
        t0 = time.perf_counter()
        for _ in range(m.calls_per_sample):
            impl.call(*args)
        m.times.append((time.perf_counter() - t0) / m.calls_per_sample)
    return out


# --- identity -------------------------------------------------------------------------------------------


def _iou64(box, others) -> np.ndarray:
    box = np.asarray(box, np.float64)
    others = np.asarray(others, np.float64).reshape(-1, 4)
    iw = np.minimum(box[2], others[:, 2]) - np.maximum(box[0], others[:, 0])
    ih = np.minimum(box[3], others[:, 3]) - np.maximum(box[1], others[:, 1])
    inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
    union = (box[2] - box[0]) * (box[3] - box[1]) + (others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1]) - inter
    return np.where(inter > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def compare_kept(kept: np.ndarray, ref: np.ndarray, xyxy: np.ndarray, class_ids: np.ndarray | None) -> dict:
    """Whether ``kept`` equals ``ref`` (same indices, same order) and, if not, why.

    The explanation looks at the first index where the two sequences part: the box one kept and
    the other dropped, and its largest float64 IoU (same class) with the boxes both kept before it.
    An IoU within 1e-6 of the threshold means the two decided a near-threshold pair differently
    (float32 rounding of the IoU); later differences follow from that one (a box dropped by one
    side can no longer suppress others).
    """
    kept = np.asarray(kept, np.int64)
    if kept.shape == ref.shape and np.array_equal(kept, ref):
        return {"identical": True, "indices_differ": 0}
    differ = int(len(np.setxor1d(kept, ref)))
    if differ == 0:
        return {"identical": False, "indices_differ": 0, "why": "same indices in a different order"}
    k = 0
    while k < min(len(kept), len(ref)) and kept[k] == ref[k]:
        k += 1
    extra = kept[k] if k < len(kept) and kept[k] not in set(ref.tolist()) else None
    missing = ref[k] if k < len(ref) and ref[k] not in set(kept.tolist()) else None
    box = extra if extra is not None else missing
    before = ref[:k]
    if class_ids is not None and box is not None:
        before = before[class_ids[before] == class_ids[box]]
    max_iou = float(_iou64(xyxy[box], xyxy[before]).max()) if box is not None and len(before) else float("nan")
    side = "kept" if extra is not None else "dropped"
    near = abs(max_iou - IOU) < 1e-6
    why = (f"first difference: box {box} {side} against the reference; its max float64 IoU with "
           f"earlier kept boxes is {max_iou:.9f}"
           + (" - a near-threshold pair decided differently (IoU rounded to float32)" if near else "")
           + f"; {differ} indices differ in all (later ones follow from it)")
    return {"identical": False, "indices_differ": differ, "first_box": None if box is None else int(box),
            "max_iou_at_first": max_iou, "near_threshold": near, "why": why}


# --- first call -----------------------------------------------------------------------------------------


_FIRST_CALL = """
import json, time
t0 = time.perf_counter()
import numpy as np
from slidewin.core.nms import nms, batched_nms
t1 = time.perf_counter()
b = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], np.float32)
s = np.array([0.9, 0.8, 0.7], np.float32)
nms(b, s, 0.5)
t2 = time.perf_counter()
batched_nms(b, s, np.array([0, 0, 1]), 0.5)
t3 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "nms_first_call_s": t2 - t1, "batched_first_call_s": t3 - t2}))
"""


def first_call_times() -> dict:
    """numba start-up cost in fresh processes: compiling into an empty cache, then loading it.

    Uses a private NUMBA_CACHE_DIR, so the repository's own cache is neither used nor touched.
    """
    out = {}
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache, PYTHONPATH=str(ROOT))
        for label in ("cold_compile", "cache_load"):
            try:
                proc = subprocess.run([sys.executable, "-c", _FIRST_CALL], env=env, capture_output=True,
                                      text=True, timeout=300, cwd=ROOT)
                out[label] = json.loads(proc.stdout.strip().splitlines()[-1])
            except Exception as e:  # a benchmark side figure: report, do not fail the run
                out[label] = {"error": f"{type(e).__name__}: {e}"}
    return out


# --- output ---------------------------------------------------------------------------------------------


def fmt_time(s: float | None) -> str:
    if s is None:
        return "-"
    if s < 1e-3:
        return f"{s * 1e6:.0f} µs"
    if s < 1:
        return f"{s * 1e3:.1f} ms"
    return f"{s:.2f} s"


def cell(m: dict) -> str:
    if m.get("skipped"):
        return m["skipped"]
    mark = "=" if m["identical"] else f"≠ {m['indices_differ']}"
    once = " (1 run)" if m["runs"] == 1 else ""
    return f"{fmt_time(m['median_s'])}{once} {mark}"


def draw_chart(axes, results: list[dict], m: dict) -> None:
    """Median time per call against boxes, one panel per NMS kind, log-log."""
    modes = [mode for mode in ("greedy", "class-aware") if any(r["mode"] == mode for r in results)]
    colours = {"slidewin": "C0", "cv2": "C1", "numpy": "C2", "torchvision": "C3"}
    styles = {"random": ("-", "o"), "clustered": ("--", "s")}
    for ax, mode in zip(axes, modes):
        for layout, (ls, marker) in styles.items():
            rows = sorted((r for r in results if r["mode"] == mode and r["layout"] == layout), key=lambda r: r["boxes"])
            for impl, colour in colours.items():
                pts = [(r["boxes"], r["impls"][impl]["median_s"]) for r in rows
                       if impl in r["impls"] and r["impls"][impl].get("median_s")]
                if pts:
                    xs, ys = zip(*pts)
                    ax.plot(xs, ys, ls, marker=marker, color=colour, label=f"{impl} ({layout})")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("boxes")
        ax.set_ylabel("median seconds per call")
        ax.set_title(f"{mode} NMS, IoU {IOU}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    axes[0].figure.suptitle(f"{m['cpu'][:50]} ({m['physical_cores']} cores), {m['date']}", fontsize=9)


# --- main -------------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100, 1_000, 10_000, 100_000])
    ap.add_argument("--repeat", type=int, default=None,
                    help="timed rounds per size (default: 51 at 100 boxes down to 3 at 100k)")
    ap.add_argument("--layouts", nargs="+", choices=sorted(LAYOUTS), default=["random", "clustered"])
    ap.add_argument("--timeout", type=float, default=30.0,
                    help="a competitor's single run longer than this is skipped (seconds)")
    ap.add_argument("--no-first-call", action="store_true", help="skip the numba compile/load measurement")
    ap.add_argument("--out-dir", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    if any(n < 1 for n in args.sizes) or (args.repeat is not None and args.repeat < 1):
        ap.error("sizes and --repeat must be >= 1")
    sizes = sorted(set(args.sizes))

    # Every competitor runs on one thread (torchvision's NMS kernel is single-threaded anyway;
    # its batched_nms helpers would otherwise use torch's intra-op pool). Restored on return.
    torch_threads = _pin_torch_threads(1)
    try:
        return _run(args, sizes)
    finally:
        if torch_threads:
            _pin_torch_threads(torch_threads)


def _pin_torch_threads(n: int) -> int | None:
    """Set torch's intra-op threads to n; return the previous count (None without torch)."""
    try:
        import torch
    except ImportError:
        return None
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    return before


def _run(args, sizes) -> int:
    m = machine()
    print(f"machine: {machine_line(m)}")
    print("caveat: other processes share this machine's CPU; competitors run interleaved in rounds, "
          "so contention hits all alike, but absolute times carry that noise. All run single-threaded.",
          flush=True)

    first_call = None if args.no_first_call else first_call_times()
    # In this process: the first calls (slidewin: numba cache load or compile) are the warm-up.
    warm = {}
    tiny = random_boxes(50, seed=123)
    for batched in (False, True):
        for impl in implementations(batched):
            dt, _ = _once(impl, impl.prepare(*tiny, class_ids_for(50)))
            warm[f"{'class-aware' if batched else 'greedy'}/{impl.name}"] = dt

    results = []
    for batched in (False, True):
        mode = "class-aware" if batched else "greedy"
        impls = implementations(batched)
        for layout in args.layouts:
            previous: dict = {}
            for n in sizes:
                xyxy, scores = LAYOUTS[layout](n, 0)
                classes = class_ids_for(n) if batched else None
                data = (xyxy, scores, classes if batched else np.zeros(n, np.int64))
                rounds = args.repeat or AUTO_ROUNDS.get(n, 3 if n > 10_000 else 11)
                t0 = time.perf_counter()
                got = measure_case(impls, data, rounds, args.timeout, previous)
                # The NumPy competitor is the reference; when it was skipped (too slow) the others
                # can only be compared with slidewin, and the row says so.
                ref, ref_name = got["numpy"].kept, "numpy"
                if ref is None:
                    ref, ref_name = got["slidewin"].kept, "slidewin (numpy skipped)"
                row = {"mode": mode, "layout": layout, "boxes": n, "kept": int(len(ref)), "rounds": rounds,
                       "reference": ref_name, "impls": {}}
                skipped = set(previous.get("_skipped", set()))
                previous = {"_skipped": skipped}
                for name, meas in got.items():
                    entry = {"median_s": meas.median_s, "runs": len(meas.times) * meas.calls_per_sample,
                             "samples": len(meas.times), "calls_per_sample": meas.calls_per_sample,
                             "skipped": meas.skipped}
                    if meas.kept is not None:
                        entry.update(compare_kept(meas.kept, ref, xyxy, classes))
                    row["impls"][name] = entry
                    if meas.median_s is not None:
                        previous[name] = (n, meas.median_s)
                    else:
                        skipped.add(name)
                row["load_avg_1min"] = round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None
                results.append(row)
                print(f"  {mode:11s} {layout:9s} {n:>7d} boxes, {len(ref):>6d} kept: "
                      + ", ".join(f"{k} {cell(v)}" for k, v in row["impls"].items())
                      + f"  [{time.perf_counter() - t0:.1f} s, load avg {row['load_avg_1min']}]", flush=True)

    names = ["slidewin", "cv2", "numpy", "torchvision"]
    tables = []
    for mode in ("greedy", "class-aware"):
        rows = []
        for r in (r for r in results if r["mode"] == mode):
            sw, cv = r["impls"]["slidewin"]["median_s"], r["impls"].get("cv2", {}).get("median_s")
            ref_mark = "" if r["reference"] == "numpy" else " (vs slidewin)"
            rows.append([r["layout"] + ref_mark, r["boxes"], r["kept"]]
                        + [cell(r["impls"][k]) if k in r["impls"] else "n/a" for k in names]
                        + [f"{cv / sw:.1f}x" if cv and sw else "-"])
        label = ("cv2.dnn.NMSBoxes, torchvision.ops.nms" if mode == "greedy"
                 else f"{NUM_CLASSES} classes; cv2.dnn.NMSBoxesBatched, torchvision.ops.batched_nms")
        tables.append(print_table(
            ["layout", "boxes", "kept", *names, "cv2 / slidewin"], rows,
            title=f"{mode} NMS, IoU {IOU} ({label}): median time per call; '=' kept indices identical "
                  f"(same order) to the NumPy float64 reference, '≠ k' k indices differ ({machine_line(m)})"))

    notes = []
    for r in results:
        for name, v in r["impls"].items():
            if v.get("why"):
                notes.append(f"{r['mode']} {r['layout']} {r['boxes']} {name}: {v['why']}")
    if notes:
        print("\nWhy kept indices differ:")
        for line in notes:
            print(f"- {line}")

    # Targets: slidewin <= cv2 at 10k, < 1 s at 100k, identical to the reference.
    def find(mode, layout, n):
        return next((r for r in results if r["mode"] == mode and r["layout"] == layout and r["boxes"] == n), None)

    targets = []
    for layout in args.layouts:
        r = find("greedy", layout, 10_000)
        if r and r["impls"].get("cv2", {}).get("median_s"):
            sw, cv = r["impls"]["slidewin"]["median_s"], r["impls"]["cv2"]["median_s"]
            targets.append({"target": f"slidewin <= cv2 at 10k boxes ({layout})", "met": sw <= cv,
                            "value": f"{fmt_time(sw)} vs {fmt_time(cv)}"})
        for mode in ("greedy", "class-aware"):
            r = find(mode, layout, 100_000)
            if r:
                sw = r["impls"]["slidewin"]["median_s"]
                targets.append({"target": f"slidewin {mode} < 1 s at 100k boxes ({layout})", "met": sw < 1.0,
                                "value": fmt_time(sw)})
    checked = [r for r in results if r["reference"] == "numpy"]
    same = sum(bool(r["impls"]["slidewin"].get("identical")) for r in checked)
    unchecked = len(results) - len(checked)
    targets.append({"target": "slidewin's kept indices identical to the NumPy reference",
                    "met": same == len(checked) > 0,
                    "value": f"{same}/{len(checked)} cases" + (f" ({unchecked} without a reference: numpy skipped)"
                                                              if unchecked else "")})
    print_table(["target", "value", "met"], [[t["target"], t["value"], "met" if t["met"] else "NOT met"]
                                              for t in targets], title="Targets")
    fc = first_call or {}
    if fc:
        lines = []
        for label, d in fc.items():
            if "error" in d:
                lines.append(f"{label}: {d['error']}")
            else:
                lines.append(f"{label.replace('_', ' ')}: import {d['import_s']:.2f} s, first nms "
                             f"{d['nms_first_call_s']:.2f} s, first batched_nms {d['batched_first_call_s']:.2f} s")
        print("numba start-up in a fresh process (excluded from the timings above): " + "; ".join(lines))
    print("first call in this process (warm-up, excluded): "
          + ", ".join(f"{k} {fmt_time(v)}" for k, v in warm.items()))

    result = Result(m, args, results, name="nms", folder=args.out_dir, extra={
        "iou": IOU, "num_classes": NUM_CLASSES, "first_call_fresh_process": first_call,
        "first_call_this_process_s": warm, "targets": targets,
        "caveat": "CPU shared with other processes; competitors interleaved in mirrored rounds"})
    result.save()
    modes = sum(any(r["mode"] == mode for r in results) for mode in ("greedy", "class-aware"))
    result.chart(lambda axes: draw_chart(axes if modes > 1 else [axes], results, m), figsize=(6.5 * modes, 4.8),
                 ncols=modes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
