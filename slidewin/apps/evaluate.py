"""COCO evaluation of any slidewin detector on a COCO-format dataset.

AP is computed by ``faster-coco-eval`` (COCO's own definition: 101-point interpolated precision,
IoU 0.50:0.95, area all, 100 detections per image), over the categories the model can name.
Categories with no counterpart in the model's labels (``person`` for an ImageNet classifier) are
excluded and listed with the reason, so a reader sees what the number covers.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from enum import Enum, StrEnum
from pathlib import Path

from slidewin.errors import MissingDependencyError, SlidewinError, UntrainedModelError
from slidewin.pipeline.config import DetectorConfig, Mode, Scoring
from slidewin.runtime.model_meta import ModelKind

#: Evaluation keeps candidates down to this score: AP needs the whole precision-recall curve.
EVAL_MIN_SCORE = 0.01


class Recipe(StrEnum):
    SLIDEWIN = "slidewin"
    TUTORIAL = "tutorial"


def tutorial_config(input_hw: tuple[int, int], mode: Mode) -> DetectorConfig:
    """The usual tutorial recipe: pyramid 1.5, step 16 px, ROI 200x150 resized to the input,
    keep windows whose top-1 probability is >= 0.9, its label mapped to a COCO group, NMS 0.3.

    Dense mode cannot step by 16 px: it steps by the network stride on the same ROI.
    """
    in_h, in_w = input_hw
    roi_h, roi_w = 150, 200
    step = (16 * in_h / roi_h, 16 * in_w / roi_w) if mode is Mode.PATCH else 32.0
    return DetectorConfig(windows_hw=((roi_h, roi_w),), step=step, scale=1.5, min_score=0.9, iou=0.3,
                          mode=mode, align=mode is Mode.DENSE, scoring=Scoring.TOP1, reference_side=None)


def slidewin_config(mode: Mode) -> DetectorConfig:
    """slidewin's own recipe: the defaults chosen on coco-dev (README, ablation), with scores kept
    down to `EVAL_MIN_SCORE` so that AP sees the whole precision-recall curve."""
    return DetectorConfig(mode=mode, min_score=EVAL_MIN_SCORE)


def recipe_config(recipe: Recipe | str, input_hw: tuple[int, int], mode: Mode) -> DetectorConfig:
    """The settings of a recipe for a classifier of input ``input_hw``, in ``mode`` (patch or dense)."""
    if Recipe(recipe) is Recipe.TUTORIAL:
        return tutorial_config(input_hw, mode)
    return slidewin_config(mode)


@dataclass(frozen=True)
class Dataset:
    root: Path
    images_dir: Path
    annotations: Path
    gt: dict


def load_dataset(root: str | Path) -> Dataset:
    """A COCO-format dataset: ``root/images/`` and ``root/instances.json``."""
    root = Path(root)
    ann = root / "instances.json"
    if not root.is_dir():
        raise SlidewinError("no such dataset folder", root)
    if not ann.exists():
        raise SlidewinError("dataset has no instances.json (COCO format expected)", root)
    try:
        gt = json.loads(ann.read_text())
        gt["images"], gt["annotations"], gt["categories"]
    except (ValueError, KeyError, TypeError) as e:
        raise SlidewinError(f"not a COCO instances file ({type(e).__name__})", ann) from None
    images_dir = root / "images"
    if not images_dir.is_dir():
        raise SlidewinError("dataset has no images/ folder", root)
    return Dataset(root, images_dir, ann, gt)


def category_plan(dataset: Dataset, target_names: tuple[str, ...], no_counterpart: dict[str, str]):
    """Which dataset categories are evaluated, and why the others are not.

    Returns:
        (evaluated {coco_id: target_index}, excluded {name: reason}).
    """
    present = {a["category_id"] for a in dataset.gt["annotations"]}
    index = {n: i for i, n in enumerate(target_names)}
    evaluated, excluded = {}, {}
    for cat in dataset.gt["categories"]:
        name = cat["name"]
        if name not in index:
            excluded[name] = no_counterpart.get(name, "no counterpart in the model's labels")
        elif cat["id"] not in present:
            excluded[name] = "no ground-truth boxes in this dataset"
        else:
            evaluated[cat["id"]] = index[name]
    return evaluated, excluded


def _coco_eval(gt: dict, results: list[dict], cat_ids: list[int]):
    try:
        from faster_coco_eval import COCO, COCOeval_faster
    except ImportError:
        raise MissingDependencyError("COCO evaluation needs faster-coco-eval: pip install 'slidewin[eval]'") from None
    coco_gt = COCO(gt)
    coco_dt = coco_gt.loadRes(results) if results else None
    if coco_dt is None:
        return None
    ev = COCOeval_faster(coco_gt, coco_dt, iouType="bbox", print_function=lambda *a, **k: None)
    ev.params.catIds = sorted(cat_ids)
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    return ev


def per_class_ap(ev, cat_ids: list[int]) -> dict[int, dict[str, float]]:
    """AP and AP50 per category from the accumulated precision array (T, R, K, A, M)."""
    prec = ev.eval["precision"]
    out = {}
    for k, cid in enumerate(sorted(cat_ids)):
        p = prec[:, :, k, 0, -1]
        p50 = prec[0, :, k, 0, -1]
        out[cid] = {
            "AP": float(p[p > -1].mean()) if (p > -1).any() else float("nan"),
            "AP50": float(p50[p50 > -1].mean()) if (p50 > -1).any() else float("nan"),
        }
    return out


def run_detections(detector, dataset: Dataset, evaluated: dict[int, int], limit: int | None = None,
                   progress: bool = True):
    """Detect on every image; returns (COCO results, per-image Detections, seconds, errors)."""
    from tqdm import tqdm

    from slidewin.io.images import load_image

    target_to_cat = {t: c for c, t in evaluated.items()}
    images = sorted(dataset.gt["images"], key=lambda im: im["id"])[:limit]
    results, per_image, errors = [], {}, {}
    t0 = time.perf_counter()
    for im in tqdm(images, desc="evaluate", unit="img", disable=not progress, dynamic_ncols=True):
        try:
            image = load_image(dataset.images_dir / im["file_name"], convert=True)
        except SlidewinError as e:
            errors[im["file_name"]] = e.problem
            continue
        dets = detector.detect(image)
        per_image[im["id"]] = dets
        for box, score, t in zip(dets.xyxy.tolist(), dets.scores.tolist(), dets.class_ids.tolist()):
            if t in target_to_cat:
                x1, y1, x2, y2 = box
                results.append({"image_id": im["id"], "category_id": target_to_cat[t],
                                "bbox": [x1, y1, x2 - x1, y2 - y1], "score": score})
    return results, per_image, time.perf_counter() - t0, errors, images


def evaluate(data_dir: str | Path, model_path: str | Path, mode: Mode | str = Mode.AUTO,
             recipe: Recipe | str = Recipe.SLIDEWIN, out_dir: str | Path | None = None,
             device: str = "auto", limit: int | None = None, config: DetectorConfig | None = None,
             progress: bool = True, examples: int = 4, overrides: dict | None = None) -> dict:
    """COCO AP of a model on a dataset; writes the report to ``out_dir`` when given.

    Args:
        mode: for a classifier: patch, dense, or auto (dense when the classifier can be rewritten).
        recipe: the classifier settings to start from (see `recipe_config`), unless ``config``.
        config: explicit settings instead of the recipe's (its ``mode`` is replaced by ``mode``).
        overrides: `DetectorConfig` fields to change in those settings (the CLI's explicit flags).

    Raises:
        UntrainedModelError: the model's weights are random (accuracy would mean nothing).
    """
    from slidewin.core.targets import COCO_GROUPS, load_group_notes
    from slidewin.runtime.model_meta import LabelSet

    dataset = load_dataset(data_dir)
    detector, config = open_for_evaluation(model_path, Mode(mode), Recipe(recipe), config, overrides, device)
    meta = detector.meta
    no_counterpart = load_group_notes(COCO_GROUPS) if meta.label_set == LabelSet.IMAGENET_1K else {}
    evaluated, excluded = category_plan(dataset, detector.labels, no_counterpart)
    if not evaluated:
        raise SlidewinError("none of the dataset's categories can be named by this model", model_path)
    results, per_image, seconds, errors, images = run_detections(detector, dataset, evaluated, limit, progress)
    gt = dataset.gt
    if limit is not None:
        keep = {im["id"] for im in images}
        gt = dict(gt, images=images, annotations=[a for a in gt["annotations"] if a["image_id"] in keep])
    ev = _coco_eval(gt, results, list(evaluated))
    names = {c["id"]: c["name"] for c in dataset.gt["categories"]}
    if ev is None:
        stats, per_class = [0.0] * 12, {cid: {"AP": 0.0, "AP50": 0.0} for cid in evaluated}
    else:
        stats, per_class = [float(s) for s in ev.stats], per_class_ap(ev, list(evaluated))
    metrics = {
        "AP": stats[0], "AP50": stats[1], "AP75": stats[2],
        "per_class": {names[c]: v for c, v in sorted(per_class.items(), key=lambda kv: names[kv[0]])},
        "classes_evaluated": sorted(names[c] for c in evaluated),
        "classes_excluded": dict(sorted(excluded.items())),
        "images": len(images) - len(errors),
        "image_errors": errors,
        "model": {"path": str(model_path), "architecture": meta.architecture, "weights": meta.weights,
                  "precision": meta.precision},
        "recipe": Recipe(recipe).value,
        "mode": (detector.mode if meta.kind is ModelKind.CLASSIFIER else Mode(mode)).value,
        "config": _config_dict(config),
        "detections": len(results),
        "seconds": round(seconds, 2),
        "seconds_per_image": round(seconds / max(1, len(images)), 4),
    }
    if out_dir is not None:
        from slidewin.apps.eval_report import write_report

        write_report(Path(out_dir), metrics, ev, dataset, per_image, evaluated, names, examples)
    return metrics


def open_for_evaluation(model_path: str | Path, mode: Mode, recipe: Recipe, config: DetectorConfig | None,
                        overrides: dict | None, device: str):
    """The detector to evaluate, and the settings it runs with.

    A classifier gets the recipe's settings for ``mode`` (or ``config``), changed by ``overrides``,
    and looks for the COCO groups when its labels are ImageNet's; a region-proposal model keeps
    its boxes scoring 0.05 or more.

    Raises:
        UntrainedModelError: random weights. SlidewinError: settings that do not fit the model.
    """
    from slidewin.core.targets import COCO_GROUPS
    from slidewin.pipeline.factory import build_detector
    from slidewin.runtime.model_meta import LabelSet
    from slidewin.runtime.sessions import CPU, open_session, read_meta

    meta = read_meta(open_session(model_path, CPU), model_path)
    if meta.is_random:
        raise UntrainedModelError("refusing to report accuracy: the model's weights are untrained (random); "
                                  "export it with trained weights", model_path)
    classes = None
    if meta.kind is ModelKind.CLASSIFIER:
        if config is None:
            if mode is Mode.AUTO and recipe is Recipe.TUTORIAL:  # its windows depend on the mode
                mode = _auto_mode(model_path, device)
            config = recipe_config(recipe, meta.input_hw, mode)
        classes = COCO_GROUPS if meta.label_set == LabelSet.IMAGENET_1K else None
    elif recipe is Recipe.TUTORIAL:
        raise SlidewinError("--recipe tutorial applies to classifiers only", model_path)
    else:
        config = config or DetectorConfig(min_score=0.05)
    try:
        config = replace(config, mode=mode, **(overrides or {}))
    except ValueError as e:
        raise SlidewinError(str(e)) from None
    return build_detector(model_path, config=config, classes=classes, device=device), config


def _config_dict(config: DetectorConfig) -> dict:
    d = {}
    for k, v in config.__dict__.items():
        d[k] = v.value if isinstance(v, Enum) else v
    return json.loads(json.dumps(d, default=list))


def _auto_mode(model_path: str | Path, device: str) -> Mode:
    """What ``auto`` resolves to for a classifier: dense when it can be rewritten."""
    from slidewin.pipeline.sliding import dense_capable
    from slidewin.runtime.classifier import Classifier

    return Mode.DENSE if dense_capable(Classifier(model_path, device)) else Mode.PATCH
