"""COCO evaluation of any slidewin detector on a COCO-format dataset.

AP is computed by ``faster-coco-eval`` (COCO's own definition: 101-point interpolated precision,
IoU 0.50:0.95, area all, 100 detections per image), over the categories the model can name.
Categories with no counterpart in the model's labels (``person`` for an ImageNet classifier) are
excluded and listed with the reason, so a reader sees what the number covers.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, fields, replace
from enum import Enum, StrEnum
from pathlib import Path

import numpy as np

from slidewin.core.contract import ModelKind
from slidewin.errors import MissingDependencyError, SlidewinError, UntrainedModelError
from slidewin.io.files import read_small_json
from slidewin.pipeline.config import DEFAULT_STEP, DetectorConfig, Mode, Scoring

#: instances.json is parsed whole, and Python's objects cost ~25 bytes per byte of JSON: COCO's
#: val2017 (5000 images, 25 MB) needs ~0.6 GB. 64 MiB leaves room for 2.5 times that and bounds
#: the parse near 1.6 GB; a bigger file (train2017, 448 MB, would need ~11 GB) is refused unread.
MAX_INSTANCES_BYTES = 64 << 20
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
    step = (16 * in_h / roi_h, 16 * in_w / roi_w) if mode is Mode.PATCH else DEFAULT_STEP  # the network stride
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
    gt = read_small_json(ann, MAX_INSTANCES_BYTES, "COCO instances file")
    try:
        gt["images"], gt["annotations"], gt["categories"]
    except (ValueError, KeyError, TypeError) as e:
        raise SlidewinError(f"not a COCO instances file ({type(e).__name__})", ann) from None
    images = gt["images"]
    if not isinstance(images, list) or not images:
        raise SlidewinError("holds no images (\"images\" is empty): nothing to evaluate", ann)
    ids = [im.get("id") if isinstance(im, dict) else None for im in images]
    seen: set = set()
    duplicates = sorted({repr(i) for i in ids if i in seen or seen.add(i)})
    if duplicates:
        raise SlidewinError(f"image ids must be unique; repeated: {', '.join(duplicates[:5])}", ann)
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


def _import_coco_eval():
    """``(COCO, COCOeval_faster)``, or MissingDependencyError naming the install command."""
    try:
        from faster_coco_eval import COCO, COCOeval_faster
    except ImportError:
        raise MissingDependencyError("COCO evaluation needs faster-coco-eval: pip install 'slidewin[eval]'") from None
    return COCO, COCOeval_faster


def _coco_eval(gt: dict, results: list[dict], cat_ids: list[int]):
    COCO, COCOeval_faster = _import_coco_eval()
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


@dataclass
class DetectionRun:
    """What running a detector over a dataset gave.

    Attributes:
        results: COCO detection results (category ids of the dataset).
        per_image: image id -> `Detections`.
        errors: file name -> why it could not be read.
        images: the dataset's image entries that were run (read or not).
        seconds: wall time of the whole run (decode and proposals overlap the network).
        stage_seconds: seconds per stage summed over the images (decode included).
        candidates: regions scored per image (windows or proposals), summed.
        best_ious: (num_gt, len(CURVE_COUNTS) + 1) best IoU of each evaluated ground-truth box
            with the regions the detector scored (`slidewin.apps.recall`); None when the
            detector does not expose its regions.
    """

    results: list[dict]
    per_image: dict
    errors: dict[str, str]
    images: list[dict]
    seconds: float
    stage_seconds: dict[str, float]
    candidates: int
    best_ious: np.ndarray | None


@dataclass
class EvalResult:
    """What `evaluate` measured; `to_json` is ``metrics.json``, with the keys in this order.

    Attributes:
        AP, AP50, AP75: COCO AP at IoU 0.50:0.95, 0.50 and 0.75, over the evaluated categories.
        per_class: category name -> ``{"AP", "AP50"}``, by name.
        classes_evaluated: the dataset's categories the model can name, sorted.
        classes_excluded: category name -> why it is not evaluated.
        recall50, recall75, AR100, AR1000: recall of the scored regions at IoU 0.5 and 0.75, and
            average recall with 100 and 1000 regions per image (None when the detector does not
            expose its regions: a region-proposal network).
        recall: the recall@0.5 curve against the number of regions (`slidewin.apps.recall`), or None.
        images: images read and run (those in ``image_errors`` not counted).
        image_errors: file name -> why it could not be read.
        model: ``{"path", "architecture", "weights", "precision"}``.
        recipe: the `Recipe` the settings started from.
        mode: patch or dense (classifiers), or the mode asked for.
        config: the detector settings run (`DetectorConfig` as JSON).
        proposals: ``"windows"``, or the `ProposalConfig` as JSON.
        detections: detections of the evaluated categories, over all images.
        candidates_per_image: regions scored per image read.
        seconds, seconds_per_image: wall time of the run, and per image.
        stage_seconds_per_image: seconds per stage per image (decode included).
    """

    AP: float
    AP50: float
    AP75: float
    per_class: dict[str, dict[str, float]]
    classes_evaluated: list[str]
    classes_excluded: dict[str, str]
    recall50: float | None
    recall75: float | None
    AR100: float | None
    AR1000: float | None
    recall: dict | None
    images: int
    image_errors: dict[str, str]
    model: dict[str, str]
    recipe: str
    mode: str
    config: dict
    proposals: str | dict
    detections: int
    candidates_per_image: float
    seconds: float
    seconds_per_image: float
    stage_seconds_per_image: dict[str, float]

    def to_json(self) -> dict:
        """The JSON-ready dict ``metrics.json`` holds (the fields, in order)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_json(cls, value: dict) -> "EvalResult":
        """Read back `to_json`'s dict (a ``metrics.json``); KeyError names a missing key."""
        return cls(**{f.name: value[f.name] for f in fields(cls)})


def run_detections(detector, dataset: Dataset, evaluated: dict[int, int], limit: int | None = None,
                   progress: bool = True) -> DetectionRun:
    """Detect on every image, decoding and preparing (proposals) the next ones in worker threads."""
    from tqdm import tqdm

    from slidewin.apps.folder.prefetch import Prefetcher
    from slidewin.apps.recall import best_ious
    from slidewin.core.detector import Stage, Unit

    target_to_cat = {t: c for c, t in evaluated.items()}
    images = sorted(dataset.gt["images"], key=lambda im: im["id"])[:limit]
    gt_boxes = _gt_boxes(dataset, evaluated)
    run = DetectionRun([], {}, {}, images, 0.0, {}, 0, None)
    rows, exposed = [], True
    paths = [dataset.images_dir / im["file_name"] for im in images]
    t0 = time.perf_counter()
    with Prefetcher(paths, convert=True, prepare=detector.prepare) as decoded_images:
        for im, (_, decoded) in tqdm(zip(images, decoded_images), total=len(images), desc="evaluate", unit="img",
                                     disable=not progress, dynamic_ncols=True):
            if decoded.image is None:
                run.errors[im["file_name"]] = decoded.error
                continue
            dets = detector.detect(decoded.image, decoded.prepared)
            stats = detector.last_stats
            run.per_image[im["id"]] = dets
            run.candidates += stats.windows
            for stage, sec in {Stage.DECODE.value: decoded.seconds, **stats.seconds}.items():
                run.stage_seconds[stage] = run.stage_seconds.get(stage, 0.0) + sec
            exposed &= stats.regions is not None
            if exposed:
                rows.append(best_ious(gt_boxes.get(im["id"], np.zeros((0, 4))), stats.regions,
                                      ranked=stats.unit is Unit.PROPOSALS))
            for box, score, t in zip(dets.xyxy.tolist(), dets.scores.tolist(), dets.class_ids.tolist()):
                if t in target_to_cat:
                    x1, y1, x2, y2 = box
                    run.results.append({"image_id": im["id"], "category_id": target_to_cat[t],
                                        "bbox": [x1, y1, x2 - x1, y2 - y1], "score": score})
    run.seconds = time.perf_counter() - t0
    run.best_ious = np.concatenate(rows) if exposed and rows else None
    return run


def _gt_boxes(dataset: Dataset, evaluated: dict[int, int]) -> dict[int, np.ndarray]:
    """Image id -> float64 (n, 4) xyxy of its non-crowd ground truth in the evaluated categories."""
    out: dict[int, list] = {}
    for a in dataset.gt["annotations"]:
        if a["category_id"] in evaluated and not a.get("iscrowd", 0):
            x, y, w, h = a["bbox"]
            out.setdefault(a["image_id"], []).append([x, y, x + w, y + h])
    return {k: np.array(v, np.float64) for k, v in out.items()}


def evaluate(data_dir: str | Path, model_path: str | Path, mode: Mode | str = Mode.AUTO,
             recipe: Recipe | str = Recipe.SLIDEWIN, out_dir: str | Path | None = None,
             device: str = "auto", limit: int | None = None, config: DetectorConfig | None = None,
             progress: bool = True, examples: int = 4, overrides: dict | None = None,
             proposals=None) -> EvalResult:
    """COCO AP of a model on a dataset, and the recall of the regions it scored; writes the report
    to ``out_dir`` when given.

    Args:
        mode: for a classifier: patch, dense, or auto (dense when the classifier can be rewritten).
        recipe: the classifier settings to start from (see `recipe_config`), unless ``config``.
        config: explicit settings instead of the recipe's (its ``mode`` is replaced by ``mode``).
        overrides: `DetectorConfig` fields to change in those settings (the CLI's explicit flags).
        proposals: a `ProposalConfig` to score region proposals instead of windows (its
            ``min_score`` as given: use `EVAL_MIN_SCORE` for the whole precision-recall curve).

    Raises:
        UntrainedModelError: the model's weights are random (accuracy would mean nothing).
    """
    from slidewin.core.targets import COCO_GROUPS, load_group_notes
    from slidewin.pipeline.sliding import SlidingWindowDetector
    from slidewin.core.contract import LabelSet

    _import_coco_eval()  # before any work: a missing extra is found in a second, not after the run
    if out_dir is not None:  # an unwritable report folder is said now, not after the evaluation
        from slidewin.io.files import check_output_dir

        check_output_dir(out_dir, "--out-dir")
    dataset = load_dataset(data_dir)
    detector, config = open_for_evaluation(model_path, Mode(mode), Recipe(recipe), config, overrides, device,
                                           proposals)
    meta = detector.meta
    no_counterpart = load_group_notes(COCO_GROUPS) if meta.label_set == LabelSet.IMAGENET_1K else {}
    evaluated, excluded = category_plan(dataset, detector.labels, no_counterpart)
    if not evaluated:
        raise SlidewinError("none of the dataset's categories can be named by this model", model_path)
    run = run_detections(detector, dataset, evaluated, limit, progress)
    images = run.images
    ev, stats, per_class = _ap(dataset, run, evaluated, limit)
    names = {c["id"]: c["name"] for c in dataset.gt["categories"]}
    result = EvalResult(
        AP=stats[0], AP50=stats[1], AP75=stats[2],
        per_class={names[c]: v for c, v in sorted(per_class.items(), key=lambda kv: names[kv[0]])},
        classes_evaluated=sorted(names[c] for c in evaluated),
        classes_excluded=dict(sorted(excluded.items())),
        **_recall_metrics(run),
        images=len(images) - len(run.errors),
        image_errors=run.errors,
        model={"path": str(model_path), "architecture": meta.architecture, "weights": meta.weights,
               "precision": meta.precision},
        recipe=Recipe(recipe).value,
        mode=(detector.mode if isinstance(detector, SlidingWindowDetector) else Mode(mode)).value,
        config=_config_dict(config),
        proposals="windows" if proposals is None else _config_dict(proposals),
        detections=len(run.results),
        candidates_per_image=round(run.candidates / max(1, len(images) - len(run.errors)), 1),
        seconds=round(run.seconds, 2),
        seconds_per_image=round(run.seconds / max(1, len(images)), 4),
        stage_seconds_per_image={k: round(v / max(1, len(images)), 4) for k, v in run.stage_seconds.items()},
    )
    if out_dir is not None:
        from slidewin.apps.eval_report import write_report

        write_report(Path(out_dir), result, ev, dataset, run.per_image, evaluated, names, examples)
    return result


def _ap(dataset, run, evaluated: dict, limit: int | None):
    """faster-coco-eval over the images run (the first ``limit``): (the evaluator or None when
    nothing was detected, its 12 summary numbers, AP and AP50 per category)."""
    gt = dataset.gt
    if limit is not None:
        keep = {im["id"] for im in run.images}
        gt = dict(gt, images=run.images, annotations=[a for a in gt["annotations"] if a["image_id"] in keep])
    ev = _coco_eval(gt, run.results, list(evaluated))
    if ev is None:
        return None, [0.0] * 12, {cid: {"AP": 0.0, "AP50": 0.0} for cid in evaluated}
    return ev, [float(s) for s in ev.stats], per_class_ap(ev, list(evaluated))


def open_for_evaluation(model_path: str | Path, mode: Mode, recipe: Recipe, config: DetectorConfig | None,
                        overrides: dict | None, device: str, proposals=None):
    """The detector to evaluate, and the settings it runs with.

    A classifier gets the recipe's settings for ``mode`` (or ``config``), changed by ``overrides``,
    and looks for the COCO groups when its labels are ImageNet's; a region-proposal model keeps
    its boxes scoring 0.05 or more.

    Raises:
        UntrainedModelError: random weights. SlidewinError: settings that do not fit the model.
    """
    from slidewin.core.targets import COCO_GROUPS
    from slidewin.pipeline.factory import build_detector
    from slidewin.core.contract import LabelSet
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
    detector = build_detector(model_path, config=config, classes=classes, device=device, proposals=proposals)
    return detector, config


def _recall_metrics(run: DetectionRun) -> dict:
    """``recall50``, ``recall75``, ``AR100``, ``AR1000`` (None when the regions are not exposed) and
    the recall@0.5 curve against the number of candidates."""
    from slidewin.apps.recall import recall_summary

    if run.best_ious is None:
        return {"recall50": None, "recall75": None, "AR100": None, "AR1000": None, "recall": None}
    summary = recall_summary(run.best_ious)
    return {k: summary.pop(k) for k in ("recall50", "recall75", "AR100", "AR1000")} | {"recall": summary}


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
