"""Tune ``--preset display`` (issue 20): which threshold and merge give one box per object?

A picture to look at should show each object once, with few boxes on nothing. For the window grid
(dense mode) and for selective-search-fast proposals (pooled scoring), both with EfficientNet-Lite0
on the COCO groups, this script keeps every candidate box scoring >= 0.5 once per photo, then
applies each candidate setting (score threshold, merge, IoU, nested overlap, class-agnostic) to
the same candidates, exactly as `ClassifierDetector.detect` merges them, and measures against the
ground truth (non-crowd boxes of the categories the model can name) at IoU 0.5:

- boxes per found object: same-class boxes at IoU >= 0.5 on each ground-truth object that has one;
- share of found objects with more than one box (same class; and of any class, which a picture
  shows as well);
- precision and recall, one box per object (greedy by score, as COCO matches);
- as a picture shows it: the share of boxes lying on an object of their class (at least half of the
  box inside its ground-truth box: a loose window on a cat is on the cat), the share of objects
  with such a box, and of those the share with more than one.

Run (candidates are cached per photo, so a second run only re-merges):

    python benchmarks/quality/tune_display.py [--data DEV TRAIN] [--photos ALL 30] [--search-photos 40 20]
        [--cache ~/.cache/slidewin/tune-display]

DEV is the set the settings are chosen on (coco-dev), TRAIN the check on photos it never saw
(coco-train); ``--photos`` and ``--search-photos`` take the first photos of each, by id.

Writes benchmarks/results/tune-display.json and prints one table per set and regions (docs/quality.md,
"The display preset").
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: _common

from _common import COCO_DEV, add_data_option, ensure_model, machine, parse  # noqa: E402

from slidewin.core.boxes import box_iou  # noqa: E402
from slidewin.core.detections import Detections  # noqa: E402
from slidewin.core.merge import Merge, MergeConfig  # noqa: E402
from slidewin.io.images import load_image  # noqa: E402
from slidewin.pipeline.config import Preset, preset  # noqa: E402
from slidewin.pipeline.factory import build_detector  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"
FLOOR = 0.5  # candidates kept once; every setting's threshold is at or above it
#: regions -> the --proposals value
REGIONS = {"windows (dense)": "windows", "selective-search-fast (pooled)": "selective-search-fast"}


def settings(regions: str) -> list[dict]:
    """The settings tried: ap's merge at every threshold, then the nested merges."""
    ious = (0.5, 0.3) if regions == "windows" else (0.7, 0.5)
    out = []
    for t, kind, iou, ios, agnostic in itertools.product((0.5, 0.6, 0.7, 0.8, 0.9), (Merge.NMS, Merge.NESTED),
                                                         ious, (0.6, 0.4), (False, True)):
        if kind is Merge.NMS and ios != 0.6:
            continue
        out.append({"min_score": t, "merge": kind.value, "iou": iou, "ios": ios, "class_agnostic": agnostic})
    return out


def dataset(folder: Path, limit: int | None):
    gt = json.loads((folder / "instances.json").read_text())
    images = sorted(gt["images"], key=lambda im: im["id"])[:limit]
    names = {c["id"]: c["name"] for c in gt["categories"]}
    boxes: dict[int, list] = {}
    for a in gt["annotations"]:
        if not a.get("iscrowd", 0):
            x, y, w, h = a["bbox"]
            boxes.setdefault(a["image_id"], []).append(([x, y, x + w, y + h], names[a["category_id"]]))
    return images, boxes


def candidates(detector, folder: Path, images, cache: Path, key: str) -> dict[int, Detections]:
    """Every photo's candidates >= FLOOR (cached as npz per photo)."""
    out, t0, done = {}, time.perf_counter(), 0
    cache.mkdir(parents=True, exist_ok=True)
    for im in images:
        f = cache / f"{key}-{folder.name}-{im['id']}.npz"
        if f.exists():
            z = np.load(f)
            out[im["id"]] = Detections(z["xyxy"], z["scores"], z["class_ids"], detector.labels)
            continue
        image = load_image(folder / "images" / im["file_name"], convert=True)  # COCO has grey photos
        c = detector.candidates(image)
        np.savez(f, xyxy=c.xyxy, scores=c.scores, class_ids=c.class_ids)
        out[im["id"]] = c
        done += 1
        if done % 10 == 0:
            print(f"  {key} {folder.name}: {done} photos, {(time.perf_counter() - t0) / done:.2f} s each", flush=True)
    return out


def measure(cands: dict[int, Detections], gt: dict[int, list], labels, s: dict) -> dict:
    """The figures of one setting over the photos."""
    cfg = MergeConfig(s["merge"], s["iou"], class_agnostic=s["class_agnostic"], ios=s["ios"])
    known = set(labels)
    n_pred = n_gt = tp = found = dup = dup_any = per_found = on_found = on_dup = on_boxes = 0
    for image_id, c in cands.items():
        dets = c[c.scores >= s["min_score"]].merged(cfg, min_score=s["min_score"])
        objs = [(b, n) for b, n in gt.get(image_id, []) if n in known]
        n_pred += len(dets)
        n_gt += len(objs)
        if not objs or not len(dets):
            continue
        g = np.array([b for b, _ in objs], np.float32)
        gname = np.array([n for _, n in objs])
        pname = np.array(dets.label_names)
        iou = box_iou(dets.xyxy, g)                      # (P, G)
        same = (iou >= 0.5) & (pname[:, None] == gname[None, :])
        hits = same.sum(axis=0)
        found += int((hits > 0).sum())
        per_found += int(hits[hits > 0].sum())
        dup += int((hits > 1).sum())
        dup_any += int((((iou >= 0.5).sum(axis=0) > 1) & (hits > 0)).sum())
        # a box "on" an object: most of it (>= half its area) inside a ground-truth box of its class,
        # as a picture shows it (a loose window on a cat is on the cat; a second one is a duplicate)
        lt = np.maximum(dets.xyxy[:, None, :2], g[None, :, :2])
        rb = np.minimum(dets.xyxy[:, None, 2:], g[None, :, 2:])
        inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
        area = np.prod(dets.xyxy[:, 2:] - dets.xyxy[:, :2], axis=1)[:, None]
        on = (inter >= 0.5 * area) & (pname[:, None] == gname[None, :])
        on_hits = on.sum(axis=0)
        on_found += int((on_hits > 0).sum())
        on_dup += int((on_hits > 1).sum())
        on_boxes += int(on.any(axis=1).sum())
        taken = np.zeros(len(objs), bool)               # one-to-one, by descending score
        for p in np.argsort(-dets.scores, kind="stable"):
            free = np.where(same[p] & ~taken)[0]
            if len(free):
                taken[free[np.argmax(iou[p, free])]] = True
                tp += 1
    return {**s, "boxes": n_pred, "objects": n_gt, "found": found,
            "boxes_per_found": round(per_found / max(found, 1), 3),
            "share_more_than_one": round(dup / max(found, 1), 3),
            "share_more_than_one_any_class": round(dup_any / max(found, 1), 3),
            "precision": round(tp / max(n_pred, 1), 3), "recall": round(tp / max(n_gt, 1), 3),
            "on_object": round(on_boxes / max(n_pred, 1), 3), "objects_with_a_box": round(on_found / max(n_gt, 1), 3),
            "share_more_than_one_on": round(on_dup / max(on_found, 1), 3),
            "boxes_per_photo": round(n_pred / max(len(cands), 1), 2)}


def named(s: dict) -> str:
    return (f">= {s['min_score']:.1f} {s['merge']} iou {s['iou']:g}"
            + (f" ios {s['ios']:g}" if s["merge"] != "nms" else "") + (" any-class" if s["class_agnostic"] else ""))


def table(rows: list[dict], title: str) -> None:
    print(f"\n{title}")
    print(f"{'setting':<44} {'boxes/img':>9} {'boxes/found':>11} {'>1 box':>7} {'>1 any':>7} {'prec':>6} {'recall':>6}"
          f" {'on obj':>6} {'>1 on':>6} {'obj w/ box':>10}")
    for r in rows:
        print(f"{r['setting']:<44} {r['boxes_per_photo']:>9.2f} {r['boxes_per_found']:>11.3f} "
              f"{r['share_more_than_one']:>7.3f} {r['share_more_than_one_any_class']:>7.3f} "
              f"{r['precision']:>6.3f} {r['recall']:>6.3f} {r['on_object']:>6.3f} {r['share_more_than_one_on']:>6.3f} "
              f"{r['objects_with_a_box']:>10.3f}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_data_option(ap, many=True, help="the set to tune on, then the held-out check (COCO format)",
                    fallback=(COCO_DEV, COCO_DEV.parent / "coco-train"))
    ap.add_argument("--photos", type=int, nargs=2, default=(0, 30), metavar=("DEV", "TRAIN"),
                    help="windows: the first photos of each set by id (0: all; default all of DEV, 30 of TRAIN)")
    ap.add_argument("--search-photos", type=int, nargs=2, default=(40, 20), metavar=("DEV", "TRAIN"),
                    help="selective search takes ~2.5 s a photo on a quiet CPU: the first photos of each set "
                         "(default 40 and 20)")
    ap.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "slidewin" / "tune-display")
    ap.add_argument("--regions", nargs="+", default=list(REGIONS), choices=list(REGIONS))
    args = parse(ap, argv)
    model = ensure_model("efficientnet-lite0")
    payload = {"machine": machine(), "model": "efficientnet-lite0", "floor": FLOOR, "sets": {}}
    for k, folder in enumerate(args.data[:2]):
        set_name = folder.name
        payload["sets"][set_name] = {"role": "tuned on" if k == 0 else "held-out check", "regions": {}}
        for title, method in ((t, REGIONS[t]) for t in args.regions):
            n = (args.photos if method == "windows" else args.search_photos)[k]
            images, gt = dataset(folder, n or None)
            config = preset(Preset.AP, method).updated(min_score=FLOOR)
            detector = build_detector(model, config, classes="coco", device="cpu")
            cands = candidates(detector, folder, images, args.cache, method)
            rows = [{"setting": named(s), **measure(cands, gt, detector.labels, s)} for s in settings(method)]
            shipped = {p.value: preset(p, method).flat() for p in Preset}
            payload["sets"][set_name]["regions"][title] = {"photos": len(images), "rows": rows, "presets": shipped}
            table(rows, f"{set_name} ({len(images)} photos), {title}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "tune-display.json"
    out.write_text(json.dumps(payload, indent=1, default=str) + "\n")
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
