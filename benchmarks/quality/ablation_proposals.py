"""Issue 11's ablation: region proposals scored by the classifier, one change per row, on coco-dev
and coco-train (340 COCO photos the held-out check never sees), with COCO AP and recall.

Every row is the proposal detector of `slidewin.proposals` run the way `slidewin evaluate
--proposals ...` runs it (same generator, scorer, label groups, NMS, faster-coco-eval), but the
expensive parts are cached on disk so that dozens of settings fit in an afternoon on 2 cores:
selective-search boxes per photo, and the classifier's probabilities of every box per scoring
setting. Settings that only pick boxes or thresholds (minimum size, how many proposals, score
threshold, NMS) reuse them. Run:

    python benchmarks/quality/ablation_proposals.py [--data DEV TRAIN] [--limit N] [--only 3 4]
        [--cache ~/.cache/slidewin/ablation]

Writes benchmarks/results/ablation-proposals.json and prints the table (README, "Region proposals").
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: _common

from _common import (
    COCO_DEV,
    COCO_TRAIN,
    RESULTS,
    Result,
    add_data_option,
    ensure_model,
    machine,
    parse,
)

from slidewin.apps.evaluate import (
    EVAL_MIN_SCORE,
    category_plan,
    coco_eval,
    gt_boxes,
    load_dataset,
)
from slidewin.apps.recall import best_ious, recall_summary
from slidewin.core.detections import Detections
from slidewin.core.detector import RunStats
from slidewin.core.merge import Merge, merge_detections
from slidewin.core.targets import COCO_GROUPS, Targets, load_group_notes
from slidewin.io.images import load_image
from slidewin.pipeline.config import DetectorConfig, ProposalConfig, Scorer
from slidewin.proposals.generators import (
    ProposalMethod,
    SelectiveSearch,
    clean_proposals,
    rank_proposals,
)
from slidewin.proposals.scoring import (
    CropScorer,
    PooledScorer,
    contrast_scores,
)
from slidewin.runtime.classifier import Classifier
from slidewin.runtime.dense import DenseClassifier

BASE = ProposalConfig(min_score=EVAL_MIN_SCORE)


def changed(c: DetectorConfig, regions: dict | None = None, scoring: dict | None = None,
            merge: dict | None = None) -> DetectorConfig:
    """``c`` with some settings of its parts changed, the others kept."""
    return replace(c, regions=replace(c.regions, **(regions or {})), scoring=replace(c.scoring, **(scoring or {})),
                   merge=replace(c.merge, **(merge or {})))


def steps() -> list[tuple[str, DetectorConfig]]:
    """The rows: each changes one thing from row 0; row 14 is the default (`ProposalConfig`)."""
    fast = changed(BASE, merge={"iou": 0.5})

    def score(**kw):
        return changed(fast, scoring=kw)

    def regions(**kw):
        return changed(fast, regions=kw)

    def merge(**kw):
        return changed(fast, merge=kw)

    return [
        ("selective-search-fast, pooled at fit 0.7, ring contrast 3, min side 16, NMS 0.5 (start)", fast),
        ("no ring contrast (contrast 0)", score(contrast=0.0)),
        ("contrast 1", score(contrast=1.0)),
        ("contrast 6", score(contrast=6.0)),
        ("ring 1.0 instead of 0.5", score(ring=1.0)),
        ("fit 1.0 (boxes pooled at the network's input size)", score(fit=1.0)),
        ("fit 1.0, no contrast (the plain SPP-net scoring)", score(fit=1.0, contrast=0.0)),
        ("selective-search-single instead", regions(method=ProposalMethod.SELECTIVE_SEARCH_SINGLE)),
        ("crops scoring instead of pooled (context 0.1, no ring)", score(scorer=Scorer.CROPS, context=0.1)),
        ("min side 8", regions(min_size=8)),
        ("min side 32", regions(min_size=32)),
        ("first 1,000 proposals", regions(max_proposals=1000)),
        ("first 500 proposals", regions(max_proposals=500)),
        ("NMS IoU 0.3", merge(iou=0.3)),
        ("NMS IoU 0.7 (chosen: the default)", merge(iou=0.7)),
        ("nested-vote merging", merge(kind=Merge.NESTED_VOTE)),
    ]


def _key(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


class Runner:
    """Caches proposals and probabilities per photo; evaluates a config over the chosen sets."""

    def __init__(self, model: Path, sets: list[Path], limit: int | None, cache: Path):
        self.clf = Classifier(model)
        self.model_key = _key(model.stat().st_size, model.stat().st_mtime_ns, str(model))
        self.targets = Targets.parse(COCO_GROUPS, self.clf.labels, self.clf.meta.label_set)
        self.dense = DenseClassifier(self.clf)
        self.cache, self.sets = cache, {}
        for path in sets:
            name = path.name
            ds = load_dataset(path)
            evaluated, _ = category_plan(ds, self.targets.names, load_group_notes(COCO_GROUPS))
            images = sorted(ds.gt["images"], key=lambda im: im["id"])[:limit]
            keep = {im["id"] for im in images}
            gt = dict(ds.gt, images=images, annotations=[a for a in ds.gt["annotations"] if a["image_id"] in keep])
            self.sets[name] = (ds, evaluated, images, gt, gt_boxes(ds.gt, evaluated))
        self.seconds: dict[str, list[float]] = {"proposals": [], "scoring": []}

    def proposals(self, name: str, ds, im, method) -> np.ndarray:
        f = self.cache / name / str(method) / (Path(im["file_name"]).stem + ".npy")
        if not f.exists():
            f.parent.mkdir(parents=True, exist_ok=True)
            t0 = time.perf_counter()
            boxes = SelectiveSearch(method)(load_image(ds.images_dir / im["file_name"], convert=True))
            self.seconds["proposals"].append(time.perf_counter() - t0)
            np.save(f, boxes)
        return rank_proposals(np.load(f))

    def scores(self, name: str, ds, im, c: DetectorConfig, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Target scores of every box, and of the ring around it when ``c`` uses one (float16 on
        disk), for the scoring settings of ``c``; the contrast power is applied by the caller."""
        s = c.scoring
        pooled = s.scorer is Scorer.POOLED   # the ring is scored even for contrast 0: rows share it
        scoring = (s.scorer, s.context, s.max_scale, s.level_factor, s.fit, s.ring) if pooled else (s.scorer, s.context)
        f = self.cache / name / str(c.regions.method) / _key(self.model_key, scoring) / (Path(im["file_name"]).stem + ".npz")
        if not f.exists():
            image = load_image(ds.images_dir / im["file_name"], convert=True)
            t0 = time.perf_counter()
            if pooled:
                scorer = PooledScorer(self.dense, s.context, s.max_scale, s.level_factor, s.fit, scoring[-1])
                probs, ring = scorer.probabilities_and_ring(image, boxes, RunStats()) if s.ring > 0 \
                    else (scorer.probabilities(image, boxes, RunStats()), None)
            else:
                probs, ring = CropScorer(self.clf, s.context, s.batch_size).probabilities(image, boxes, RunStats()), None
            self.seconds["scoring"].append(time.perf_counter() - t0)
            f.parent.mkdir(parents=True, exist_ok=True)
            arrays = {"box": self.targets.score(probs).astype(np.float16)}
            if ring is not None:
                arrays["ring"] = self.targets.score(ring).astype(np.float16)
            np.savez(f, **arrays)
        z = np.load(f)
        return z["box"].astype(np.float32), z["ring"].astype(np.float32) if "ring" in z else None

    def evaluate(self, c: DetectorConfig) -> dict:
        reg, sc, mg = c.regions, c.scoring, c.merge
        out = {}
        for name, (ds, evaluated, images, gt, boxes_of) in self.sets.items():
            t2c = {t: cat for cat, t in evaluated.items()}
            results, rows, counts = [], [], []
            for im in images:
                h, w = im["height"], im["width"]
                everything = clean_proposals(self.proposals(name, ds, im, reg.method), (h, w))
                box_scores, ring_scores = self.scores(name, ds, im, c, everything)
                size_ok = np.flatnonzero(((everything[:, 2:] - everything[:, :2]) >= reg.min_size).all(axis=1))
                pick = size_ok[:reg.max_proposals]
                boxes, scores = everything[pick], box_scores[pick]
                if ring_scores is not None and sc.uses_ring:
                    scores = contrast_scores(scores, ring_scores[pick], sc.contrast)
                counts.append(len(boxes))
                rows.append(best_ious(boxes_of.get(im["id"], np.zeros((0, 4))), boxes, ranked=True))
                win, cls = np.nonzero(scores >= sc.min_score)
                dets = merge_detections(Detections(boxes[win], scores[win, cls], cls, self.targets.names),
                                        mg.kind, mg.iou, min_score=sc.min_score)
                for b, s, t in zip(dets.xyxy.tolist(), dets.scores.tolist(), dets.class_ids.tolist()):
                    if t in t2c:  # categories with no ground truth in this set are not evaluated
                        results.append({"image_id": im["id"], "category_id": t2c[t],
                                        "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]], "score": s})
            ev = coco_eval(gt, results, list(evaluated))
            r = recall_summary(np.concatenate(rows))
            out[name] = {"AP": float(ev.stats[0]), "AP50": float(ev.stats[1]), "AP75": float(ev.stats[2]),
                         "recall50": r["recall50"], "recall75": r["recall75"], "AR100": r["AR100"],
                         "AR1000": r["AR1000"], "proposals_per_image": float(np.mean(counts)), "images": len(images)}
        return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_option(ap, many=True, fallback=(COCO_DEV, COCO_TRAIN),
                    help="COCO-format data sets (images/ + instances.json), each a column of the table")
    ap.add_argument("--limit", type=int, default=None, help="first N photos of each set")
    ap.add_argument("--only", type=int, nargs="*", default=None, help="row numbers to run")
    ap.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "slidewin" / "ablation")
    ap.add_argument("--out", default="ablation-proposals")
    args = parse(ap, argv)
    sets = [p.name for p in args.data]
    runner = Runner(ensure_model("efficientnet-lite0"), args.data, args.limit, args.cache)
    m = machine()
    rows, out = [], []
    for i, (name, cfg) in enumerate(steps()):
        if args.only is not None and i not in args.only:
            continue
        r = runner.evaluate(cfg)
        both = {k: float(np.mean([r[s][k] for s in r])) for k in ("AP", "AP50", "AP75", "recall50", "AR100")}
        rows.append([i, name, *(f"{both[k]:.4f}" for k in ("AP", "AP50", "AP75")), f"{both['recall50']:.3f}",
                     f"{both['AR100']:.3f}", " / ".join(f"{r[s]['AP']:.4f}" for s in r)])
        out.append({"step": i, "name": name, "config": json.loads(json.dumps(asdict(cfg), default=str)),
                    "mean_over_sets": both, "per_set": r})
        print(f"[{i}] {name}: AP {both['AP']:.4f} AP75 {both['AP75']:.4f} recall50 {both['recall50']:.3f}",
              flush=True)
    result = Result(m, args, out, name=args.out, extra={
        "sets": sets, "limit": args.limit,
        "seconds_measured": {k: float(np.median(v)) if v else None for k, v in runner.seconds.items()}})
    result.table(["#", "step", "AP", "AP50", "AP75", "recall@0.5", "AR@100", "AP per set (" + ", ".join(sets) + ")"],
                 rows, title=f"Proposal ablation, EfficientNet-Lite0, {' + '.join(sets)} ({result.machine_line})")
    path = RESULTS / f"{args.out}.json"
    if path.exists() and args.only is not None:  # a partial run updates its rows of the last whole one
        fresh = {r["step"] for r in out}
        result.rows = sorted([r for r in json.loads(path.read_text())["rows"] if r["step"] not in fresh] + out,
                             key=lambda r: r["step"])
    result.save()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
