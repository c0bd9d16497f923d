"""The comparison users come for: windows against region proposals, on quality and speed, on coco-dev.

Rows (EfficientNet-Lite0 with its ImageNet weights, no training anywhere):

- windows, patch mode and dense mode (slidewin's default windows);
- selective-search-fast proposals scored by crops (R-CNN) and pooled from the dense feature map
  (SPP-net / Fast R-CNN style);
- Faster R-CNN ResNet50-FPN v2: speed only without COCO weights (offline here: random weights are
  refused for accuracy); quality too when ``--frcnn PATH`` holds real weights.

Each classifier row is one ``slidewin evaluate`` process (the CLI, so any version of slidewin runs
it the same way), so its peak RSS is its own; decode and proposals run in worker threads while the
network works. Columns: AP, AP50, AP75, AR@100, the recall@0.5 ceiling, s/image, candidates per
image, the share of time spent on proposals, peak RSS. Writes benchmarks/results/compare.json
and compare.png (AP against s/image).

``--before TREE`` runs the same rows from another source tree as well (a checkout or ``git
worktree`` of an older commit: its ``slidewin`` package is imported through PYTHONPATH, with this
environment's dependencies), interleaved with this tree in mirrored rounds, and prints both side
by side with the ratio after / before: the speed of one change, measured in one run. Run:

    python benchmarks/quality/bench_compare.py [--limit N] [--rows dense pooled ...] [--frcnn models/frcnn.onnx]
        [--data DIR] [--out compare-coco-train] [--before TREE --rounds 3]
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: _common

from _common import (
    RESULTS,
    ROOT,
    Result,
    add_data_option,
    ensure_model,
    interleave,
    machine,
    median,
    parse,
)

ROWS = {
    "patch": {"label": "windows, patch mode", "mode": "patch"},
    "dense": {"label": "windows, dense mode", "mode": "dense"},
    "crops": {"label": "selective-search-fast, crops", "proposals": {"scoring": "crops"}},
    "pooled": {"label": "selective-search-fast, pooled", "proposals": {"scoring": "pooled"}},
    "frcnn": {"label": "Faster R-CNN v2 (800 px canvas)", "frcnn": True},
}

#: Faster R-CNN with random weights: `evaluate` refuses them, so this times detect() alone.
_FRCNN_CHILD = r"""
import json, sys, time
spec = json.loads(sys.argv[1])
from slidewin.apps.evaluate import load_dataset
from slidewin.io.images import load_image
from slidewin.pipeline.factory import build_detector
det = build_detector(spec["model"], device="cpu")
ds = load_dataset(spec["data"])
images = sorted(ds.gt["images"], key=lambda im: im["id"])[:spec["limit"]]
t0 = time.perf_counter()
for im in images:
    det.detect(load_image(ds.images_dir / im["file_name"], convert=True))
print("RESULT " + json.dumps({"seconds_per_image": (time.perf_counter() - t0) / len(images), "images": len(images),
                              "candidates_per_image": det.last_stats.windows, "weights": "random"}))
"""


_SHIMS: dict[Path, Path] = {}


def tree_env(tree: Path) -> dict:
    """The environment that makes a child import ``slidewin`` and ``slidewin_export`` from ``tree``
    (this environment's packages otherwise). The export package is the folder ``export/``, so a
    link named ``slidewin_export`` to it goes on the path too: an editable install's finder comes
    after PYTHONPATH."""
    if tree not in _SHIMS:
        _SHIMS[tree] = Path(tempfile.mkdtemp(prefix="bench-compare-path-"))
        atexit.register(shutil.rmtree, _SHIMS[tree], True)
        if (tree / "export").is_dir():
            (_SHIMS[tree] / "slidewin_export").symlink_to(tree / "export", target_is_directory=True)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(tree), str(_SHIMS[tree]), *filter(None, [os.environ.get("PYTHONPATH")])])
    return env


def slidewin_of(tree: Path) -> str:
    """Where a child with ``tree_env(tree)`` finds slidewin (checked before anything is timed)."""
    code = "import slidewin, slidewin_export; print(slidewin.__file__); print(slidewin_export.__file__)"
    out = subprocess.run([sys.executable, "-c", code], env=tree_env(tree), cwd=tempfile.gettempdir(),
                         capture_output=True, text=True, check=False)
    found = out.stdout.split()
    if out.returncode != 0 or not all(Path(f).resolve().is_relative_to(tree.resolve()) for f in found):
        raise SystemExit(f"bench_compare: {tree}: no slidewin package there "
                         f"(found {' and '.join(found) or out.stderr.strip()[-300:]})")
    return found[0]


def evaluate_argv(name: str, spec: dict, model: Path, args, out: Path) -> list[str]:
    argv = ["-m", "slidewin", "evaluate", "--data", str(args.data), "--model", str(model), "--out-dir", str(out)]
    if args.limit:
        argv += ["--limit", str(args.limit)]
    if "mode" in spec:
        argv += ["--mode", spec["mode"]]
    if "proposals" in spec:
        argv += ["--proposals", "selective-search-fast", "--proposal-scoring", spec["proposals"]["scoring"]]
    return argv


def run_row(name: str, spec: dict, args, tree: Path, out: Path, classifier: Path) -> dict:
    """One row in a fresh process with ``tree``'s slidewin: the metrics, and its peak RSS."""
    model = args.frcnn if spec.get("frcnn") else classifier
    if spec.get("frcnn"):
        model = model or ensure_model("frcnn-random")
    random_frcnn = spec.get("frcnn") and args.frcnn is None
    if random_frcnn:
        child = {"model": str(model), "data": str(args.data), "limit": args.limit}
        argv = ["-c", _FRCNN_CHILD, json.dumps(child)]
    else:
        argv = evaluate_argv(name, spec, model, args, out)
    # cwd outside both trees: `-m` puts the working directory first on sys.path.
    with open(out.parent / f"{out.name}.stdout", "w+") as so, open(out.parent / f"{out.name}.stderr", "w+") as se:
        proc = subprocess.Popen([sys.executable, *argv], env=tree_env(tree), cwd=tempfile.gettempdir(),
                                stdout=so, stderr=se, text=True)
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own resource use, peak RSS included
        proc.returncode = os.waitstatus_to_exitcode(status)
        so.seek(0)
        se.seek(0)
        stdout, stderr = so.read(), se.read()
    if proc.returncode != 0:
        raise SystemExit(f"bench_compare: row {name} ({tree}) failed: {stderr.strip()[-2000:]}")
    if random_frcnn:
        m = json.loads(next(ln for ln in stdout.splitlines() if ln.startswith("RESULT "))[len("RESULT "):])
    else:
        m = json.loads((out / "metrics.json").read_text())
    m["peak_rss_mb"] = usage.ru_maxrss / 1024  # kilobytes on Linux
    return m


def chart(result: Result, results: dict, title: str) -> None:
    """AP against s/image (log), one point per row; a row without AP is a dotted line (speed only)."""

    def draw(ax):
        ax.set_xscale("log")
        for row, r in results.items():
            label = ROWS[row]["label"]
            if r.get("AP") is None:
                ax.axvline(r["seconds_per_image"], ls=":", color="grey")
                ax.text(r["seconds_per_image"], 0.03, " " + label + " (speed only)", rotation=90, fontsize=7,
                        va="bottom", transform=ax.get_xaxis_transform())
                continue
            ax.scatter(r["seconds_per_image"], r["AP"], s=40)
            ax.annotate(label, (r["seconds_per_image"], r["AP"]), fontsize=8, xytext=(4, 4), textcoords="offset points")
        ax.set_ylim(bottom=0, top=max([r["AP"] for r in results.values() if r.get("AP") is not None] + [0.01]) * 1.25)
        ax.set_xlabel("seconds per image (log)")
        ax.set_ylabel("COCO AP (62 categories)")
        ax.set_title(f"AP against speed, {title}", fontsize=9)
        ax.grid(alpha=0.3, which="both")

    result.chart(draw)


def replot(path: Path) -> None:
    """Redraw <name>.png from <name>.json (no detection run)."""
    if not path.is_file():
        raise SystemExit(f"bench_compare: {path}: no such file to redraw (run without --replot first)")
    result = Result.load(path)
    rows = {k: v.get("after", v) for k, v in result.rows.items()}
    images = next(iter(rows.values())).get("images")
    chart(result, rows, f"{result.extra.get('data', 'coco-dev')} ({images} photos), {result.machine_line}")


def _fmt(v, spec: str = ".4f") -> str:
    return "-" if v is None else format(v, spec)


def summarise(runs: list[dict]) -> dict:
    """One row from its rounds: the last run's metrics (the same in every round: the detections do
    not depend on timing), s/image as the median over rounds, every round's s/image kept."""
    r = dict(runs[-1])
    r["seconds_per_image"] = median([x["seconds_per_image"] for x in runs])
    r["seconds_per_image_rounds"] = [x["seconds_per_image"] for x in runs]
    peaks = [x["peak_rss_mb"] for x in runs if x.get("peak_rss_mb") is not None]
    r["peak_rss_mb"] = max(peaks) if peaks else None
    return r


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_option(ap)
    ap.add_argument("--limit", type=int, default=None, help="first N photos (default: all)")
    ap.add_argument("--rows", nargs="+", choices=list(ROWS), default=list(ROWS))
    ap.add_argument("--frcnn", type=Path, default=None, help="Faster R-CNN ONNX with real weights (default: random)")
    ap.add_argument("--before", type=Path, default=None, metavar="TREE",
                    help="another source tree (e.g. a git worktree of an older commit): run every row from it "
                         "too, interleaved with this tree, and report both with the ratio after / before")
    ap.add_argument("--rounds", type=int, default=1, help="runs of every row (and tree), mirrored order; median kept")
    ap.add_argument("--no-warmup", dest="warmup", action="store_false",
                    help="skip the unmeasured one-photo run of every row (and tree) before the timed ones")
    ap.add_argument("--out", default=None,
                    help="name of the JSON and PNG (default: compare, or compare-before-after with --before)")
    ap.add_argument("--out-dir", type=Path, default=RESULTS)
    ap.add_argument("--replot", action="store_true", help="only redraw the PNG from the JSON of --out")
    if "--replot" in (sys.argv[1:] if argv is None else argv):
        args = ap.parse_args(argv)  # no data needed
        replot(args.out_dir / f"{args.out or 'compare'}.json")
        return 0
    args = parse(ap, argv)
    if args.rounds < 1:
        ap.error("--rounds must be >= 1")
    trees = {"after": ROOT}
    if args.before is not None:
        trees = {"before": args.before.resolve(), "after": ROOT}
    where = {label: slidewin_of(tree) for label, tree in trees.items()}
    name = args.out or ("compare-before-after" if args.before else "compare")
    m = machine()
    runs: dict[str, dict[str, list[dict]]] = {row: {label: [] for label in trees} for row in args.rows}
    with tempfile.TemporaryDirectory() as tmp:
        # Each tree gets its own copy of the model: versions that disagree on the dense form's
        # cache beside it would otherwise rebuild it in turn on every run.
        models = {}
        for label in trees:
            (Path(tmp) / label).mkdir()
            models[label] = Path(tmp) / label / "efficientnet-lite0.onnx"
            shutil.copy(ensure_model("efficientnet-lite0"), models[label])
        cases = [(row, label) for row in args.rows for label in trees]
        if args.warmup:  # unmeasured: numba's cache, the dense form, disk caches, for each tree
            warm = argparse.Namespace(**{**vars(args), "limit": 1})
            for row, label in cases:
                run_row(row, ROWS[row], warm, trees[label], Path(tmp) / f"warm-{label}-{row}", models[label])
        for k, (r, (row, label)) in enumerate(interleave(cases, args.rounds)):
            res = run_row(row, ROWS[row], args, trees[label], Path(tmp) / f"{k}-{label}-{row}", models[label])
            runs[row][label].append(res)
            print(f"  round {r + 1}, {row}, {label}: {res['seconds_per_image']:.3f} s/image"
                  + (f", AP {res['AP']:.4f}" if res.get("AP") is not None else ""), flush=True)
    rows = {row: {label: summarise(rr) for label, rr in by_label.items()} for row, by_label in runs.items()}
    after = {row: r["after"] for row, r in rows.items()}
    images = next(iter(after.values())).get("images")
    title = f"{args.data.name} ({images} photos), EfficientNet-Lite0 ImageNet weights, no training"
    result = Result(m, args, {}, name=name, folder=args.out_dir,
                    extra={"data": args.data.name, "limit": args.limit, "slidewin": where})
    if args.before is None:
        result.rows = {k: {**ROWS[k], **v} for k, v in after.items()}
        cells = []
        for row, r in after.items():
            stages = r.get("stage_seconds_per_image", {})
            total = sum(stages.values()) or None
            share = stages.get("proposals", 0.0) / total if total else None
            cells.append([ROWS[row]["label"], _fmt(r.get("AP")), _fmt(r.get("AP50")), _fmt(r.get("AP75")),
                          _fmt(r.get("AR100"), ".3f"), _fmt(r.get("recall50"), ".3f"),
                          f"{r['seconds_per_image']:.2f}", f"{r.get('candidates_per_image', 0):.0f}",
                          _fmt(share, ".0%"), _fmt(r.get("peak_rss_mb"), ".0f")])
        result.table(["detector", "AP", "AP50", "AP75", "AR@100", "recall@0.5", "s/image", "candidates/image",
                      "proposals share", "peak RSS MB"], cells, title=f"{title} ({result.machine_line})")
        result.save()
        chart(result, after, f"{args.data.name} ({images} photos), {result.machine_line}")
        return 0
    cells = []
    for row, r in rows.items():
        b, a = r["before"], r["after"]
        ratio = a["seconds_per_image"] / b["seconds_per_image"] if b["seconds_per_image"] else None
        r["after_over_before_seconds"] = ratio
        same = all(a.get(k) == b.get(k) for k in ("AP", "AP50", "AP75", "detections", "candidates_per_image"))
        r["same_quality"] = same
        cells.append([ROWS[row]["label"], f"{b['seconds_per_image']:.3f}", f"{a['seconds_per_image']:.3f}",
                      _fmt(ratio, ".3f"), " ".join(f"{x:.2f}" for x in b["seconds_per_image_rounds"]),
                      " ".join(f"{x:.2f}" for x in a["seconds_per_image_rounds"]),
                      _fmt(b.get("AP")), _fmt(a.get("AP")), "yes" if same else "NO"])
    result.rows = {k: {**ROWS[k], **v} for k, v in rows.items()}
    result.table(["detector", "before s/image", "after s/image", "after / before", "before, each round",
                  "after, each round", "AP before", "AP after", "same AP, detections, candidates"], cells,
                 title=f"{title}; before: {args.before}, after: this tree; {args.rounds} round(s) in mirrored order, "
                       f"median s/image ({result.machine_line})")
    result.save()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
