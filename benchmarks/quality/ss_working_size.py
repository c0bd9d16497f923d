"""Selective search on a bounded working copy (issue 22): what it costs in candidate recall and
what it saves in time, against the search on the photo itself.

For each photo of a COCO-format data set, at its own size and upscaled 2x and 4x (so that the
bound matters: COCO photos are at most 640 px a side), selective search runs with each working
budget (``--budgets``: pixels as WxH, or ``full`` for the photo itself, the behaviour before the
bound), and the cleaned proposals (minimum side 16, first 2,000: what the scorer gets) are matched
against the ground-truth boxes (every non-crowd annotation, scaled with the photo):

- ``recall50`` / ``recall70``: the share of ground-truth boxes with a proposal at IoU >= 0.5 / 0.7;
- ``seconds``: mean time of the search per photo (working copy, tiles and mapping back included);
- ``boxes``: mean proposals per photo after cleaning.

Budgets that give the same working size for a photo share one run. Run:

    python benchmarks/quality/ss_working_size.py [--data DIR] [--limit 160] [--limit2 20] [--limit4 4]

Writes benchmarks/results/ss-working-size.json after each scale (a partial run keeps what it has)
and prints the table (docs/quality.md, "Selective search working size").
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: _common

from _common import COCO_DEV, RESULTS, machine

from slidewin.apps.recall import best_ious, recall_at
from slidewin.io.images import load_image
from slidewin.proposals.generators import SelectiveSearch, clean_proposals, working_plan

DEFAULT_BUDGETS = ("320x240", "480x360", "640x480", "800x600", "full")


def budget_pixels(name: str) -> int | None:
    if name == "full":
        return None
    w, h = (int(v) for v in name.split("x"))
    return w * h


def ground_truth(data: Path) -> tuple[list[dict], dict[int, np.ndarray]]:
    gt = json.loads((data / "instances.json").read_text())
    boxes: dict[int, list] = {}
    for a in gt["annotations"]:
        if not a.get("iscrowd"):
            x, y, w, h = a["bbox"]
            boxes.setdefault(a["image_id"], []).append([x, y, x + w, y + h])
    images = sorted(gt["images"], key=lambda im: im["id"])
    return images, {k: np.array(v, np.float64) for k, v in boxes.items()}


def run_scale(data: Path, images: list[dict], gt: dict[int, np.ndarray], factor: int, budgets: list[str],
              method: str) -> dict:
    rows = {b: [] for b in budgets}
    seconds = {b: [] for b in budgets}
    counts = {b: [] for b in budgets}
    work_sizes = {b: [] for b in budgets}
    for n, im in enumerate(images, 1):
        photo = load_image(data / "images" / im["file_name"], convert=True)
        if factor != 1:
            photo = cv2.resize(photo, None, fx=factor, fy=factor, interpolation=cv2.INTER_CUBIC)
        boxes_gt = gt.get(im["id"], np.zeros((0, 4))) * factor
        done: dict[tuple, tuple] = {}
        for b in budgets:
            pixels = budget_pixels(b)
            plan = working_plan(photo.shape[:2], pixels)
            key = (plan[0], len(plan[1]))
            if key not in done:
                t0 = time.perf_counter()
                raw = SelectiveSearch(method, work_pixels=pixels)(photo)
                dt = time.perf_counter() - t0
                done[key] = (clean_proposals(raw, photo.shape[:2], 16.0, 2000), dt)
            boxes, dt = done[key]
            rows[b].append(best_ious(boxes_gt, boxes, counts=(), ranked=True)[:, -1])
            seconds[b].append(dt)
            counts[b].append(len(boxes))
            work_sizes[b].append(plan[0])
        print(f"  {factor}x {n}/{len(images)} {im['file_name']} "
              + " ".join(f"{b}:{seconds[b][-1]:.1f}s" for b in budgets), flush=True)
    out = {}
    for b in budgets:
        best = np.concatenate(rows[b]) if rows[b] else np.zeros(0)
        out[b] = {"recall50": recall_at(best, 0.5), "recall70": recall_at(best, 0.7),
                  "seconds_mean": float(np.mean(seconds[b])), "seconds_median": float(np.median(seconds[b])),
                  "boxes_mean": float(np.mean(counts[b])),
                  "working_pixels_mean": float(np.mean([h * w for h, w in work_sizes[b]])),
                  "photos": len(images), "ground_truth_boxes": int(best.size)}
    return out


def table(results: dict) -> str:
    lines = ["| scale | working budget | recall@0.5 | recall@0.7 | s / photo | proposals |",
             "|---|---|---|---|---|---|"]
    for scale, per in results.items():
        for b, r in per.items():
            lines.append(f"| {scale} ({r['photos']} photos) | {b} | {r['recall50']:.3f} | {r['recall70']:.3f} | "
                         f"{r['seconds_mean']:.2f} | {r['boxes_mean']:.0f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=COCO_DEV, help="a COCO-format folder (images/, instances.json)")
    ap.add_argument("--limit", type=int, default=160, help="photos at their own size (first N by id)")
    ap.add_argument("--limit2", type=int, default=20, help="photos upscaled 2x")
    ap.add_argument("--limit4", type=int, default=4, help="photos upscaled 4x")
    ap.add_argument("--budgets", nargs="+", default=list(DEFAULT_BUDGETS))
    ap.add_argument("--method", default="selective-search-fast")
    ap.add_argument("--out", default="ss-working-size")
    args = ap.parse_args(argv)
    images, gt = ground_truth(args.data)
    payload = {"machine": machine(), "method": args.method, "data": args.data.name, "results": {}}
    out = RESULTS / f"{args.out}.json"
    for factor, limit in ((1, args.limit), (2, args.limit2), (4, args.limit4)):
        if limit <= 0:
            continue
        payload["results"][f"{factor}x"] = run_scale(args.data, images[:limit], gt, factor, args.budgets, args.method)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(payload, indent=2) + "\n")
        print(table(payload["results"]), flush=True)
    print(f"wrote {out.relative_to(RESULTS.parents[1]) if out.is_relative_to(RESULTS.parents[1]) else out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
