"""Writing an evaluation report: metrics.json, report.md, a precision-recall chart, examples."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from slidewin.apps.tables import markdown_table
from slidewin.core.boxes import box_iou
from slidewin.errors import printable
from slidewin.io.files import atomic_write_text

if TYPE_CHECKING:
    from slidewin.apps.evaluate import EvalResult

EXAMPLE_MIN_SCORE = 0.3
#: The files a report consists of, beside ``examples/`` (its ``hit_*.jpg`` and ``miss_*.jpg``).
REPORT_FILES = ("detections.json", "metrics.json", "report.md", "pr_curve.png", "recall.png")


def remove_report(out: Path) -> None:
    """Delete the files an earlier report wrote in ``out`` (`REPORT_FILES` and its examples), and
    nothing else: ``--overwrite`` must not leave an old ``metrics.json`` beside new detections."""
    for name in REPORT_FILES:
        (out / name).unlink(missing_ok=True)
    examples = out / "examples"
    if examples.is_dir():
        for kind in ("hit", "miss"):
            for f in examples.glob(f"{kind}_*.jpg"):
                f.unlink(missing_ok=True)
        try:
            examples.rmdir()
        except OSError:  # the user's own files are in it
            pass


def write_report(out: Path, metrics: EvalResult, ev, dataset, per_image: dict, evaluated: dict[int, int],
                 names: dict[int, str], examples: int = 4) -> None:
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "metrics.json", json.dumps(metrics.to_json(), indent=2) + "\n")
    chart = _pr_curve(out / "pr_curve.png", ev, evaluated, names)
    recall_chart = _recall_curve(out / "recall.png", metrics)
    shown = _examples(out / "examples", dataset, per_image, evaluated, names, examples)
    atomic_write_text(out / "report.md", _markdown(metrics, chart, shown, recall_chart))
    # detections.json (the COCO results file) is written by `evaluate` beside these


def _pr_curve(path: Path, ev, evaluated, names) -> Path | None:
    if ev is None:
        return None
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    rec = np.asarray(ev.params.recThrs)
    prec = ev.eval["precision"]  # (T, R, K, A, M)
    cat_ids = sorted(evaluated)
    fig, ax = plt.subplots(figsize=(7, 5), dpi=110)
    for t, label in ((0, "IoU 0.50"), (5, "IoU 0.75")):
        p = prec[t, :, :, 0, -1]
        valid = (p > -1).all(axis=0)
        if valid.any():
            ax.plot(rec, p[:, valid].mean(axis=1), lw=2.5, label=f"mean over {valid.sum()} classes, {label}")
    ap50 = {k: prec[0, :, k, 0, -1].mean() for k in range(len(cat_ids)) if (prec[0, :, k, 0, -1] > -1).all()}
    for k in sorted(ap50, key=ap50.get, reverse=True)[:5]:
        ax.plot(rec, prec[0, :, k, 0, -1], lw=1, alpha=0.7, label=f"{names[cat_ids[k]]} (IoU 0.50)")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _recall_curve(path: Path, metrics: EvalResult) -> Path | None:
    """Recall at IoU 0.5 of the first N candidates against N (log scale)."""
    curve = (metrics.recall or {}).get("recall50_curve")
    if not curve:
        return None
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    counts = [int(n) for n in curve]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=110)
    ax.plot(counts, [curve[str(n)] for n in counts], marker="o", lw=2)
    ax.set_xscale("log")
    ax.set_xlabel(f"candidates per image ({metrics.candidates_per_image:.0f} scored on average)")
    ax.set_ylabel("recall at IoU 0.5")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3, which="both")
    ax.set_title("ground-truth boxes with a candidate at IoU >= 0.5")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _examples(folder: Path, dataset, per_image, evaluated, names, n: int) -> list[tuple[str, str]]:
    """Draw the images with the most hits and the most misses (GT green, detections coloured)."""
    from slidewin.io.drawing import draw_detections
    from slidewin.io.images import load_image, save_image

    if n <= 0 or not per_image:
        return []
    target_of = evaluated
    gt_by_image: dict[int, list] = {}
    for a in dataset.gt["annotations"]:
        if a["category_id"] in target_of and not a.get("iscrowd", 0):
            gt_by_image.setdefault(a["image_id"], []).append(a)
    scored = []
    for image_id, dets in per_image.items():
        gts = gt_by_image.get(image_id, [])
        if not gts:
            continue
        dets = dets[dets.scores >= EXAMPLE_MIN_SCORE]
        hits = 0
        for a in gts:
            x, y, w, h = a["bbox"]
            same = dets[dets.class_ids == target_of[a["category_id"]]]
            if len(same) and box_iou(same.xyxy, np.array([[x, y, x + w, y + h]])).max() >= 0.5:
                hits += 1
        scored.append((image_id, hits, len(gts) - hits))
    files = {im["id"]: im["file_name"] for im in dataset.gt["images"]}
    picks = [("hit", i) for i, _, _ in sorted(scored, key=lambda s: (-s[1], s[2], s[0]))[: (n + 1) // 2]]
    picks += [("miss", i) for i, _, _ in sorted(scored, key=lambda s: (-s[2], s[1], s[0]))[: n // 2]]
    folder.mkdir(parents=True, exist_ok=True)
    shown = []
    for kind, image_id in picks:
        image = load_image(dataset.images_dir / files[image_id], convert=True)
        dets = per_image[image_id]
        drawn = draw_detections(image, dets[dets.scores >= EXAMPLE_MIN_SCORE])
        for a in gt_by_image.get(image_id, []):
            x, y, w, h = (int(round(v)) for v in a["bbox"])
            cv2.rectangle(drawn, (x, y), (x + w, y + h), (40, 220, 40), 1, cv2.LINE_4)
        name = f"{kind}_{image_id}.jpg"
        save_image(folder / name, drawn)
        shown.append((kind, f"examples/{name}"))
    return shown


def boxes_line(m: EvalResult) -> str:
    """"N of M ground-truth boxes evaluated", and why the others are not."""
    rest = m.boxes_total - m.boxes_evaluated
    why = f" (the other {rest} are in categories not evaluated)" if rest else ""
    return f"{m.boxes_evaluated} of {m.boxes_total} ground-truth boxes evaluated{why}."


def _boxes(m: EvalResult, name: str) -> str:
    n = m.ground_truth.get(name)
    return "" if n is None else f" ({n} box{'es' if n != 1 else ''})"


def _markdown(m: EvalResult, chart: Path | None, shown: list[tuple[str, str]], recall_chart: Path | None = None) -> str:
    recalls = (m.recall50, m.recall75, m.AR100, m.AR1000)
    lines = [
        f"# Evaluation: {m.model['architecture']} ({m.model['weights']}, {m.model['precision']}), "
        f"recipe `{m.recipe}`, {m.mode} mode",
        "",
        f"{m.images} images, {m.detections} detections, {m.seconds_per_image:.3f} s per image. "
        "COCO AP by faster-coco-eval over the categories the model can name; the detections are in "
        "`detections.json`, a COCO results file (the dataset's image and category ids).",
        "",
        boxes_line(m),
        "",
        markdown_table(["AP", "AP50", "AP75", "recall@0.5", "recall@0.75", "AR@100", "AR@1000"],
                       [[f"{m.AP:.4f}", f"{m.AP50:.4f}", f"{m.AP75:.4f}"]
                        + [("-" if r is None else f"{r:.3f}") for r in recalls]]),
        "",
        "Recall is of the candidate regions the classifier scored (windows or proposals), before any "
        "classifier: the share of ground-truth boxes a candidate covers at IoU 0.5 / 0.75, and average "
        "recall over IoU 0.5:0.95 with the first 100 / 1,000 candidates.",
        "",
        "## Per class",
        "",
        markdown_table(["class", "ground-truth boxes", "AP", "AP50"],
                       [[name, str(m.ground_truth.get(name, "-")), f"{v['AP']:.3f}", f"{v['AP50']:.3f}"]
                        for name, v in sorted(m.per_class.items(), key=lambda kv: -np.nan_to_num(kv[1]["AP50"]))]),
    ]
    lines += ["", f"## Excluded categories ({len(m.classes_excluded)})", ""]
    lines += [f"- {name}{_boxes(m, name)}: {why}" for name, why in m.classes_excluded.items()]
    if m.image_errors:
        lines += ["", f"## Images that could not be read ({len(m.image_errors)}, their boxes count as missed)", ""]
        lines += [f"- {printable(f)}: {why}" for f, why in m.image_errors.items()]
    if chart is not None:
        lines += ["", "## Precision-recall", "", f"![precision-recall]({chart.name})"]
    if recall_chart is not None:
        lines += ["", "## Recall against the number of candidates", "", f"![recall]({recall_chart.name})"]
    if shown:
        lines += ["", "## Examples (ground truth green, detections with score >= 0.3 coloured)", ""]
        lines += [f"- {kind}: ![{kind}]({path})" for kind, path in shown]
    lines += ["", "## Settings", "", "```json", json.dumps(m.config, indent=2), "```", ""]
    return "\n".join(lines)
