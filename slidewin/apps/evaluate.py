"""COCO evaluation of any slidewin detector on a COCO-format dataset.

AP is computed by ``faster-coco-eval`` (COCO's own definition: 101-point interpolated precision,
IoU 0.50:0.95, area all, 100 detections per image), over the categories the model can name.
Categories with no counterpart in the model's labels (``person`` for an ImageNet classifier) are
excluded and listed with the reason, so a reader sees what the number covers.
"""

from __future__ import annotations

import json
from dataclasses import MISSING, dataclass, field, fields, replace
from enum import StrEnum
from pathlib import Path

# The dataset and the evaluators are re-exported here: `slidewin.apps.evaluate` is the API.
from slidewin.apps.coco_data import MAX_INSTANCES_BYTES, Dataset, load_coco, load_dataset  # noqa: F401
from slidewin.apps.evaluators import (  # noqa: F401
    CandidateRecall,
    CocoAP,
    StageSeconds,
    coco_eval,
    gt_boxes,
    import_coco_eval,
    inference_on_dataset,
    per_class_ap,
)
from slidewin.core.contract import ModelKind
from slidewin.errors import SlidewinError, UntrainedModelError
from slidewin.pipeline.config import DEFAULT_STEP, DetectorConfig, Mode, Scoring

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
        ground_truth: category name -> non-crowd ground-truth boxes in the images run, for every
            category of the dataset (evaluated or not).
        boxes_evaluated, boxes_total: ground-truth boxes in the evaluated categories, and in all
            categories ("N of M boxes evaluated"). These three came after the others: a
            ``metrics.json`` written without them reads back with them empty.
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
    ground_truth: dict[str, int] = field(default_factory=dict)
    boxes_evaluated: int = 0
    boxes_total: int = 0

    def to_json(self) -> dict:
        """The JSON-ready dict ``metrics.json`` holds (the fields, in order)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_json(cls, value: dict) -> "EvalResult":
        """Read back `to_json`'s dict (a ``metrics.json``); KeyError names a missing key (one of the
        fields that have always been written; the later ones may be absent)."""
        return cls(**{f.name: value[f.name] for f in fields(cls)
                      if f.name in value or (f.default is MISSING and f.default_factory is MISSING)})


class EvaluationInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped `evaluate`; the message says what was kept (``detections``: the COCO results
    file of the images done, or None when nothing was kept)."""

    def __init__(self, done: int, total: int, detections: Path | None, report: bool = False):
        self.done, self.total, self.detections = done, total, detections
        kept = (f"the detections of those images are in {detections}" if detections is not None
                else "nothing was kept")
        when = "while the report was written" if report else f"after {done} of {total} images"
        super().__init__(f"interrupted {when}: {kept}" + (" (no report: AP needs every image)"
                                                          if detections is not None and not report else ""))


#: The COCO results file `evaluate` writes in its report folder (dataset image and category ids).
DETECTIONS_FILE = "detections.json"


def check_report_dir(out_dir: str | Path, overwrite: bool = False) -> None:
    """Refuse, before any work, a report folder that cannot be written, or that holds files
    already unless ``overwrite``.

    Raises:
        SlidewinError: naming the folder and the problem.
    """
    from slidewin.io.files import check_output_dir

    check_output_dir(out_dir, "--out-dir")
    out = Path(out_dir)
    if not overwrite and out.is_dir() and any(out.iterdir()):
        raise SlidewinError("report folder is not empty: give --overwrite to write over it, or another folder", out)


def open_dataset(data_dir: str | Path | Dataset | None = None, images: str | Path | None = None,
                 annotations: str | Path | None = None) -> Dataset:
    """The dataset of a folder (`load_dataset`), or of an images folder and an instances file
    (`load_coco`): one or the other.

    Raises:
        SlidewinError: both or neither given, or what loading says.
    """
    if isinstance(data_dir, Dataset):
        return data_dir
    if data_dir is not None and (images is not None or annotations is not None):
        raise SlidewinError("give a dataset folder (--data) or --images and --annotations, not both")
    if data_dir is not None:
        return load_dataset(data_dir)
    if images is None or annotations is None:
        raise SlidewinError("evaluate needs --data DIR, or --images DIR with --annotations FILE")
    return load_coco(images, annotations)


def evaluate(data_dir: str | Path | Dataset | None, model_path: str | Path, mode: Mode | str = Mode.AUTO,
             recipe: Recipe | str = Recipe.SLIDEWIN, out_dir: str | Path | None = None,
             device: str = "auto", limit: int | None = None, config: DetectorConfig | None = None,
             progress: bool | None = True, examples: int = 4, overrides: dict | None = None,
             proposals=None, overwrite: bool = False, images: str | Path | None = None,
             annotations: str | Path | None = None) -> EvalResult:
    """COCO AP of a model on a dataset, and the recall of the regions it scored; writes the report
    and ``detections.json`` (a COCO results file) to ``out_dir`` when given.

    Args:
        data_dir: a dataset folder (`load_dataset`) or a `Dataset`; or None, with ``images`` (the
            images folder) and ``annotations`` (the instances file) given instead.
        mode: for a classifier: patch, dense, or auto (dense when the classifier can be rewritten).
        recipe: the classifier settings to start from (see `recipe_config`), unless ``config``.
        config: explicit settings instead of the recipe's (its ``mode`` is replaced by ``mode``).
        progress: a bar (True), silence (False), or None: a bar on a terminal, a line every 30 s
            otherwise. Unreadable images are said on stderr in every case.
        overrides: `DetectorConfig` fields to change in those settings (the CLI's explicit flags).
        proposals: a `ProposalConfig` to score region proposals instead of windows (its
            ``min_score`` as given: use `EVAL_MIN_SCORE` for the whole precision-recall curve).
        overwrite: write into an ``out_dir`` that holds files already (else refused, before any work).

    Raises:
        UntrainedModelError: the model's weights are random (accuracy would mean nothing).
        EvaluationInterrupted: Ctrl-C; the images done so far have their detections written to
            ``out_dir/detections.json`` when there is an ``out_dir``.
    """
    from slidewin.core.contract import LabelSet
    from slidewin.core.targets import COCO_GROUPS, load_group_notes
    from slidewin.pipeline.sliding import SlidingWindowDetector

    import_coco_eval()  # before any work: a missing extra is found in a second, not after the run
    if out_dir is not None:  # a report folder that cannot take the report is said now, not after the run
        check_report_dir(out_dir, overwrite)
    dataset = open_dataset(data_dir, images, annotations)
    detector, config = open_for_evaluation(model_path, Mode(mode), Recipe(recipe), config, overrides, device,
                                           proposals)
    meta = detector.meta
    no_counterpart = load_group_notes(COCO_GROUPS) if meta.label_set == LabelSet.IMAGENET_1K else {}
    evaluated, excluded = category_plan(dataset, detector.labels, no_counterpart)
    if not evaluated:
        raise SlidewinError("none of the dataset's categories can be named by this model", model_path)

    coco, recall, times = CocoAP(dataset.gt, evaluated), CandidateRecall(dataset.gt, evaluated), StageSeconds()
    todo = sorted(dataset.gt["images"], key=lambda im: im["id"])[:limit]
    run = inference_on_dataset(detector, todo, dataset.images_dir, [coco, recall, times], progress)
    kept = None
    try:
        if out_dir is not None and run.done:  # first: what was done is kept, whatever comes next
            from slidewin.apps.eval_report import remove_report

            remove_report(Path(out_dir))  # an earlier report's files (--overwrite) are not mixed with this one's
            write_detections(Path(out_dir) / DETECTIONS_FILE, coco.results([im["id"] for im in run.done]))
            kept = Path(out_dir) / DETECTIONS_FILE
        if run.interrupted:
            raise KeyboardInterrupt
        how = {"model": {"path": str(model_path), "architecture": meta.architecture, "weights": meta.weights,
                         "precision": meta.precision},
               "recipe": Recipe(recipe).value,
               "mode": (detector.mode if isinstance(detector, SlidingWindowDetector) else Mode(mode)).value,
               "config": _config_dict(config),
               "proposals": "windows" if proposals is None else _config_dict(proposals)}
        result, ev = _result(dataset, evaluated, excluded, run, coco, recall, times, how)
        if out_dir is not None:
            from slidewin.apps.eval_report import write_report

            names = {c["id"]: c["name"] for c in dataset.gt["categories"]}
            write_report(Path(out_dir), result, ev, dataset, coco.per_image, evaluated, names, examples)
    except KeyboardInterrupt:
        raise EvaluationInterrupted(len(run.done), run.total, kept, report=not run.interrupted) from None
    return result


def _result(dataset: Dataset, evaluated: dict, excluded: dict, run, coco: CocoAP, recall: CandidateRecall,
            times: StageSeconds, how: dict) -> tuple[EvalResult, object]:
    """The `EvalResult` of a finished run from its evaluators (``how``: the model, recipe, mode and
    settings), and faster-coco-eval's evaluator (None without detections)."""
    ap, stages = coco.evaluate(), times.evaluate()
    names = {c["id"]: c["name"] for c in dataset.gt["categories"]}
    results, images = coco.results(), run.done
    read = len(images) - len(run.errors)
    result = EvalResult(
        AP=ap.stats[0], AP50=ap.stats[1], AP75=ap.stats[2],
        per_class={names[c]: v for c, v in sorted(ap.per_class.items(), key=lambda kv: names[kv[0]])},
        classes_evaluated=sorted(names[c] for c in evaluated),
        classes_excluded=dict(sorted(excluded.items())),
        **recall.evaluate(),
        images=read,
        image_errors=run.errors,
        **how,
        detections=len(results),
        candidates_per_image=round(stages["candidates"] / max(1, read), 1),
        seconds=round(run.seconds, 2),
        seconds_per_image=round(run.seconds / max(1, len(images)), 4),
        stage_seconds_per_image={k: round(v / max(1, len(images)), 4) for k, v in stages["seconds"].items()},
        ground_truth={names[c]: n for c, n in sorted(ap.ground_truth.items(), key=lambda kv: names[kv[0]])},
        boxes_evaluated=sum(n for c, n in ap.ground_truth.items() if c in evaluated),
        boxes_total=sum(ap.ground_truth.values()),
    )
    return result, ap.ev


def write_detections(path: Path, results: list[dict]) -> None:
    """A COCO results file: one ``{"image_id", "category_id", "bbox" (x, y, w, h), "score"}`` per
    detection, with the dataset's image and category ids (pycocotools' and faster-coco-eval's
    ``loadRes`` read it as it is)."""
    from slidewin.io.files import atomic_write_text

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(results) + "\n")




def open_for_evaluation(model_path: str | Path, mode: Mode, recipe: Recipe, config: DetectorConfig | None,
                        overrides: dict | None, device: str, proposals=None):
    """The detector to evaluate, and the settings it runs with.

    A classifier gets the recipe's settings for ``mode`` (or ``config``), changed by ``overrides``,
    and looks for the COCO groups when its labels are ImageNet's; a region-proposal model keeps
    its boxes scoring 0.05 or more.

    Raises:
        UntrainedModelError: random weights. SlidewinError: settings that do not fit the model.
    """
    from slidewin.core.contract import LabelSet
    from slidewin.core.targets import COCO_GROUPS
    from slidewin.pipeline.factory import build_detector
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


def _config_dict(config: DetectorConfig) -> dict:
    """The settings the detector's parts use, by name (`DetectorConfig.flat`), as JSON values."""
    return json.loads(json.dumps(config.flat()))


def _auto_mode(model_path: str | Path, device: str) -> Mode:
    """What ``auto`` resolves to for a classifier: dense when it can be rewritten."""
    from slidewin.pipeline.sliding import dense_capable
    from slidewin.runtime.classifier import Classifier

    return Mode.DENSE if dense_capable(Classifier(model_path, device)) else Mode.PATCH
