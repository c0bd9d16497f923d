"""Issue 5's ablation: each step from the tutorial recipe to slidewin's, with its COCO AP.

Every row is one full `slidewin evaluate` over coco-dev (same harness, same model), changing
one thing at a time. Run: python benchmarks/quality/ablation.py [--mode dense] [--limit N] [--only 17 18]
[--out ablation-softnms] [--data DIR].
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: _common

from _common import RESULTS, Result, add_data_option, ensure_model, machine, parse

from slidewin.apps.evaluate import evaluate, slidewin_config, tutorial_config
from slidewin.core.merge import SOFT_SIGMA, Merge
from slidewin.pipeline.config import DetectorConfig, Mode, Scoring

SQUARE = ((224, 224),)
ASPECTS = ((224, 224), (224, 336), (336, 224))
ROI, PORTRAIT, SMALL, SMALL_PORTRAIT = (150, 200), (200, 150), (75, 100), (100, 75)


def steps(mode: Mode) -> list[tuple[str, DetectorConfig]]:
    tut = tutorial_config((224, 224), mode)
    group = replace(tut, scoring=Scoring.GROUP_SUM)
    low = replace(group, min_score=0.05)
    square = replace(low, windows_hw=SQUARE, step=32.0, align=True)
    default = slidewin_config(mode)
    return [
        ("tutorial recipe (top-1 >= 0.9, ROI 200x150, NMS 0.3)", tut),
        ("+ group scoring (sum of member probabilities)", group),
        ("+ keep scores down to 0.05 (full PR curve)", low),
        ("+ square 224 windows, step 32", square),
        ("+ 3:2 and 2:3 windows", replace(square, windows_hw=ASPECTS)),
        ("+ pyramid scale 1.25", replace(square, windows_hw=ASPECTS, scale=1.25)),
        ("  merge: box voting", replace(square, windows_hw=ASPECTS, scale=1.25, merge=Merge.VOTE)),
        ("  merge: nested suppression (IoS 0.6)", replace(square, windows_hw=ASPECTS, scale=1.25, merge=Merge.NESTED)),
        ("  merge: nested + voting", replace(square, windows_hw=ASPECTS, scale=1.25, merge=Merge.NESTED_VOTE)),
        ("  NMS IoU 0.5 + nested + voting", replace(square, windows_hw=ASPECTS, scale=1.25, merge=Merge.NESTED_VOTE,
                                                    iou=0.5)),
        # Round 2, from row 2 (the best so far): the tutorial's own 200x150 window, stride 32.
        ("row 2 + NMS IoU 0.5", replace(low, iou=0.5)),
        ("row 2 + portrait 150x200 window", replace(low, windows_hw=(ROI, PORTRAIT))),
        ("row 2 + 100x75 window (2x upsampled, small objects)", replace(low, windows_hw=(ROI, SMALL))),
        ("row 2 + pyramid scale 1.25", replace(low, scale=1.25)),
        ("row 2 + keep scores down to 0.01", replace(low, min_score=0.01)),
        ("row 2 + 150x200 + 100x75 windows, NMS 0.5", replace(low, windows_hw=(ROI, PORTRAIT, SMALL), iou=0.5)),
        ("row 15 + 75x100 window", replace(low, windows_hw=(ROI, PORTRAIT, SMALL, SMALL_PORTRAIT), iou=0.5)),
        # Round 3, from the chosen defaults (150x200 + 200x150 + 75x100, NMS 0.5, scores >= 0.01).
        ("current defaults (evaluation: scores >= 0.01, NMS IoU 0.5)", default),
        (f"defaults + Gaussian soft-NMS, sigma {SOFT_SIGMA}", replace(default, merge=Merge.SOFT)),
        ("defaults + Gaussian soft-NMS, sigma 1.0", replace(default, merge=Merge.SOFT, soft_sigma=1.0)),
    ]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mode", choices=[Mode.PATCH.value, Mode.DENSE.value], default=Mode.DENSE.value)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--only", type=int, nargs="*", default=None, help="row numbers to run")
    ap.add_argument("--out", default=None, help="results name under benchmarks/results "
                                                 "(default: ablation-MODE; rows run replace its same rows)")
    add_data_option(ap)
    args = parse(ap, argv)
    mode = Mode(args.mode)
    model = ensure_model("efficientnet-lite0")
    m = machine()
    rows, out = [], []
    for i, (name, cfg) in enumerate(steps(mode)):
        if args.only is not None and i not in args.only:
            continue
        r = evaluate(args.data, model, mode=mode, config=cfg, progress=False, limit=args.limit).to_json()
        rows.append([i, name, f"{r['AP']:.4f}", f"{r['AP50']:.4f}", f"{r['AP75']:.4f}", f"{r['seconds_per_image']:.2f}"])
        out.append({"step": i, "name": name, "AP": r["AP"], "AP50": r["AP50"], "AP75": r["AP75"],
                    "seconds_per_image": r["seconds_per_image"], "config": r["config"]})
        print(f"[{i}] {name}: AP50 {r['AP50']:.4f}", flush=True)
    name = args.out or f"ablation-{mode.value}"
    result = Result(m, args, out, name=name, extra={"mode": mode.value, "data": args.data.name})
    result.table(["#", "step", "AP", "AP50", "AP75", "s/image"], rows,
                 title=f"Ablation, EfficientNet-Lite0, {args.data.name}, {mode.value} mode ({result.machine_line})")
    # Rows run now replace the same rows of an earlier run (--only runs a subset).
    path = RESULTS / f"{name}.json"
    if path.exists() and args.only is not None:
        fresh = {r["step"] for r in out}
        result.rows = sorted([r for r in json.loads(path.read_text())["rows"] if r["step"] not in fresh] + out,
                             key=lambda r: r["step"])
    result.save()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
