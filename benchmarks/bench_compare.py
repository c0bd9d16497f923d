"""The comparison users come for: windows against region proposals, on quality and speed, on coco-dev.

Rows (EfficientNet-Lite0 with its ImageNet weights, no training anywhere):

- windows, patch mode and dense mode (slidewin's default windows);
- selective-search-fast proposals scored by crops (R-CNN) and pooled from the dense feature map
  (SPP-net / Fast R-CNN style);
- Faster R-CNN ResNet50-FPN v2: speed only without COCO weights (offline here: random weights are
  refused for accuracy); quality too when ``--frcnn PATH`` holds real weights.

Each row runs in its own process (`slidewin evaluate` as a library call), so its peak RSS is its
own; decode and proposals run in worker threads while the network works, as in `slidewin
evaluate`. Columns: AP, AP50, AP75, AR@100, the recall@0.5 ceiling, s/image, candidates per
image, the share of time spent on proposals, peak RSS. Writes benchmarks/results/compare.json
and compare.png (AP against s/image). Run:

    python benchmarks/bench_compare.py [--limit N] [--rows dense pooled ...] [--frcnn models/frcnn.onnx]
        [--data ../shared/data/coco-train] [--out compare-coco-train]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import COCO_DEV, RESULTS, ROOT, ensure_model, machine, machine_line, print_table, write_chart, write_json

ROWS = {
    "patch": {"label": "windows, patch mode", "mode": "patch"},
    "dense": {"label": "windows, dense mode", "mode": "dense"},
    "crops": {"label": "selective-search-fast, crops", "proposals": {"scoring": "crops"}},
    "pooled": {"label": "selective-search-fast, pooled", "proposals": {"scoring": "pooled"}},
    "frcnn": {"label": "Faster R-CNN v2 (800 px canvas)", "frcnn": True},
}

_CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, {root!r})
spec = json.loads(sys.argv[1])
if spec.get("frcnn"):
    from slidewin.apps.evaluate import load_dataset
    from slidewin.io.images import load_image
    from slidewin.pipeline.factory import build_detector
    from slidewin.runtime.sessions import read_meta
    det = build_detector(spec["model"], device="cpu")
    ds = load_dataset(spec["data"])
    images = sorted(ds.gt["images"], key=lambda im: im["id"])[:spec["limit"]]
    if det.meta.is_random:
        t0 = time.perf_counter()
        for im in images:
            det.detect(load_image(ds.images_dir / im["file_name"], convert=True))
        m = {{"seconds_per_image": (time.perf_counter() - t0) / len(images), "images": len(images),
              "candidates_per_image": det.last_stats.windows, "weights": "random"}}
    else:
        from slidewin.apps.evaluate import evaluate
        m = evaluate(spec["data"], spec["model"], limit=spec["limit"], progress=False, out_dir=spec["out"]).to_json()
else:
    from slidewin.apps.evaluate import EVAL_MIN_SCORE, evaluate
    from slidewin.proposals.detector import ProposalConfig
    proposals = ProposalConfig(min_score=EVAL_MIN_SCORE, **spec["proposals"]) if "proposals" in spec else None
    m = evaluate(spec["data"], spec["model"], mode=spec.get("mode", "auto"), limit=spec["limit"], progress=False,
                 out_dir=spec["out"], proposals=proposals).to_json()
m["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print("RESULT " + json.dumps(m))
"""


def run_row(name: str, spec: dict, args, out: Path) -> dict:
    model = args.frcnn if spec.get("frcnn") else ensure_model("efficientnet-lite0")
    if spec.get("frcnn") and model is None:
        model = ensure_model("frcnn-random")
    child = {**spec, "model": str(model), "data": str(args.data), "limit": args.limit, "out": str(out / name)}
    code = _CHILD.format(root=str(ROOT))
    proc = subprocess.run([sys.executable, "-c", code, json.dumps(child)], capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"bench_compare: row {name} failed:\n{proc.stderr[-2000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def chart(name: str, results: dict, title: str) -> None:
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

    write_chart(name, draw)


def replot(name: str) -> None:
    """Redraw <name>.png from <name>.json (no detection run)."""
    d = json.loads((RESULTS / f"{name}.json").read_text())
    images = next(iter(d["rows"].values())).get("images")
    chart(name, d["rows"], f"{d.get('data', 'coco-dev')} ({images} photos), {machine_line(d['machine'])}")


def _fmt(v, spec: str = ".4f") -> str:
    return "-" if v is None else format(v, spec)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=COCO_DEV)
    ap.add_argument("--limit", type=int, default=None, help="first N photos (default: all 160)")
    ap.add_argument("--rows", nargs="+", choices=list(ROWS), default=list(ROWS))
    ap.add_argument("--frcnn", type=Path, default=None, help="Faster R-CNN ONNX with real weights (default: random)")
    ap.add_argument("--out", default="compare", help="name of the JSON and PNG under benchmarks/results/")
    ap.add_argument("--replot", action="store_true", help="only redraw the PNG from the JSON of --out")
    args = ap.parse_args(argv)
    if args.replot:
        replot(args.out)
        return 0
    m = machine()
    print(f"machine: {machine_line(m)}", flush=True)
    results, rows = {}, []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.rows:
            r = run_row(name, ROWS[name], args, Path(tmp))
            results[name] = r
            stages = r.get("stage_seconds_per_image", {})
            total = sum(stages.values()) or None
            share = stages.get("proposals", 0.0) / total if total else None
            rows.append([ROWS[name]["label"], _fmt(r.get("AP")), _fmt(r.get("AP50")), _fmt(r.get("AP75")),
                         _fmt(r.get("AR100"), ".3f"), _fmt(r.get("recall50"), ".3f"), f"{r['seconds_per_image']:.2f}",
                         f"{r.get('candidates_per_image', 0):.0f}", _fmt(share, ".0%"), f"{r['peak_rss_mb']:.0f}"])
            print(f"  {name}: {rows[-1]}", flush=True)
    images = next(iter(results.values())).get("images")
    print_table(["detector", "AP", "AP50", "AP75", "AR@100", "recall@0.5", "s/image", "candidates/image",
                 "proposals share", "peak RSS MB"], rows,
                title=f"{args.data.name} ({images} photos), EfficientNet-Lite0 ImageNet weights, no training ({machine_line(m)})")
    write_json(args.out, {"machine": m, "data": args.data.name, "limit": args.limit, "rows": {k: {**ROWS[k], **v} for k, v in results.items()}})

    chart(args.out, results, f"{args.data.name} ({images} photos), {machine_line(m)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
