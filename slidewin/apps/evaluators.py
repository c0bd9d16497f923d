"""Evaluation as one runner plus evaluators, in the manner of detectron2's `inference_on_dataset`
and `DatasetEvaluator`.

`inference_on_dataset` is the one loop: it decodes the dataset's images ahead with the folder
runs' `Prefetcher` (and the detector's `prepare` step, region proposals, in its threads), runs
the detector, and hands every image to each evaluator's ``process``. The evaluators keep their
own bookkeeping and know nothing of the loop:

- `CocoAP`: the detections as COCO results (the dataset's category ids), then AP by
  faster-coco-eval over the images run;
- `CandidateRecall`: the best IoU of each ground-truth box with the regions the detector scored
  (`slidewin.apps.recall`), before any classifier;
- `StageSeconds`: seconds per stage (decode included) and regions scored, summed over images.

An image that cannot be read is handed on too (``Sample.ok`` False, with its error), said on
stderr as folder runs say it, and listed in the report. Ctrl-C stops the loop between two images:
`InferenceRun.interrupted` says so, and ``done`` holds the images every evaluator has processed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from slidewin.core.detections import Detections
from slidewin.core.detector import Detector, RunStats
from slidewin.errors import MissingDependencyError, printable
from slidewin.io.stderr import eprint


@dataclass
class Sample:
    """What running the detector on one dataset image gave.

    Attributes:
        image: the dataset's image entry (``id``, ``file_name``, ...).
        detections: its detections; None when the image could not be read.
        stats: the detector's `RunStats` for it; None when the image could not be read.
        decode_seconds: reading and decoding the file.
        error: why the image could not be read (one line), else None.
    """

    image: dict
    detections: Detections | None
    stats: RunStats | None
    decode_seconds: float = 0.0
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class DatasetEvaluator:
    """One measurement over a dataset: ``reset``, then ``process`` per image, then ``evaluate``."""

    def reset(self) -> None:
        """Forget every image processed."""

    def process(self, sample: Sample) -> None:
        """Take one image's result (read or not) into account."""

    def evaluate(self):
        """What was measured over the images processed."""


@dataclass
class InferenceRun:
    """What the loop did (the measurements are the evaluators').

    Attributes:
        total: images the run was asked to do.
        done: image entries every evaluator processed, in order (unreadable ones included).
        errors: file name -> why it could not be read.
        seconds: wall time of the loop (decode and proposals overlap the network).
        interrupted: Ctrl-C (or SIGTERM) stopped it before the last image.
    """

    total: int
    done: list[dict] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    interrupted: bool = False


def inference_on_dataset(detector: Detector, images: list[dict], images_dir: Path,
                         evaluators: list[DatasetEvaluator], progress: bool | None = None) -> InferenceRun:
    """Run ``detector`` on each image entry (``images_dir / file_name``), in order, and hand each
    result to every evaluator (after ``reset``).

    Args:
        progress: a bar on stderr (True), none and no progress lines (False), or None: a bar on a
            terminal and a line every 30 s otherwise, as folder runs do. Unreadable images are
            said on stderr in every case.

    Returns:
        What the loop did; on Ctrl-C (or SIGTERM) ``interrupted`` is True and the images processed
        so far are in ``done`` (an image is in it only once every evaluator has processed it).
    """
    from slidewin.apps.folder.prefetch import Prefetcher
    from slidewin.apps.folder.run import Interrupts

    for ev in evaluators:
        ev.reset()
    run = InferenceRun(total=len(images))
    bar = _progress(len(images), progress)
    paths = [images_dir / im["file_name"] for im in images]
    t0 = time.perf_counter()
    try:
        with Interrupts(), Prefetcher(paths, convert=True, prepare=detector.prepare) as decoded_images:
            for im, (path, decoded) in zip(images, decoded_images):
                if decoded.image is None:
                    sample = Sample(im, None, None, decoded.seconds, decoded.error)
                else:
                    dets = detector.detect(decoded.image, decoded.prepared)
                    sample = Sample(im, dets, detector.last_stats, decoded.seconds)
                del decoded
                for ev in evaluators:
                    ev.process(sample)
                run.done.append(im)
                if not sample.ok:
                    run.errors[im["file_name"]] = sample.error
                    bar.failed(path, sample.error, len(run.errors))
                bar.advance()
    except KeyboardInterrupt:
        run.interrupted = True
    finally:
        bar.close()
        run.seconds = time.perf_counter() - t0
    return run


class _Quiet:
    """No bar and no progress lines; an unreadable image is still said on stderr."""

    def failed(self, path, error: str, failed_now: int) -> None:
        eprint(f"slidewin: {printable(str(path))}: {error}")

    def advance(self) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, progress: bool | None):
    if progress is False:
        return _Quiet()
    from slidewin.apps.folder.progress import Progress

    return Progress(total, 0, progress)


# --- COCO AP --------------------------------------------------------------------------------

def import_coco_eval():
    """``(COCO, COCOeval_faster)``, or MissingDependencyError naming the install command."""
    try:
        from faster_coco_eval import COCO, COCOeval_faster
    except ImportError:
        raise MissingDependencyError("COCO evaluation needs faster-coco-eval: pip install 'slidewin[eval]'") from None
    return COCO, COCOeval_faster


def coco_eval(gt: dict, results: list[dict], cat_ids: list[int]):
    """faster-coco-eval's bbox evaluation of ``results`` against ``gt`` over ``cat_ids``,
    accumulated and summarised; None when there are no results."""
    COCO, COCOeval_faster = import_coco_eval()
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


def to_coco_results(image_id, dets: Detections, target_to_cat: dict[int, int]) -> list[dict]:
    """COCO results (``bbox`` as x, y, w, h) of the detections whose class maps to a dataset
    category; the others are left out."""
    out = []
    for box, score, t in zip(dets.xyxy.tolist(), dets.scores.tolist(), dets.class_ids.tolist()):
        if t in target_to_cat:
            x1, y1, x2, y2 = box
            out.append({"image_id": image_id, "category_id": target_to_cat[t],
                        "bbox": [x1, y1, x2 - x1, y2 - y1], "score": score})
    return out


@dataclass
class CocoAPResult:
    """`CocoAP.evaluate`'s answer.

    Attributes:
        ev: the accumulated faster-coco-eval evaluator (for charts), None without detections.
        stats: its 12 summary numbers (AP, AP50, AP75, ...), zeros without detections.
        per_class: category id -> ``{"AP", "AP50"}`` for the evaluated categories.
        ground_truth: category id -> non-crowd ground-truth boxes in the images processed, for
            every category of the dataset.
    """

    ev: object | None
    stats: list[float]
    per_class: dict[int, dict[str, float]]
    ground_truth: dict[int, int]


class CocoAP(DatasetEvaluator):
    """COCO AP by faster-coco-eval over the images processed (unreadable ones count: their boxes
    are missed), in the categories ``evaluated`` ({dataset category id: detector class index}).

    ``per_image`` keeps each image's `Detections` (the report draws examples from them), and
    `results` gives the COCO results file of any images processed.
    """

    def __init__(self, gt: dict, evaluated: dict[int, int]):
        self.gt, self.evaluated = gt, evaluated
        self.target_to_cat = {t: c for c, t in evaluated.items()}
        self.reset()

    def reset(self) -> None:
        self.per_image: dict = {}
        self._results: dict = {}
        self._image_ids: list = []

    def process(self, sample: Sample) -> None:
        image_id = sample.image["id"]
        if sample.ok:
            self._results[image_id] = to_coco_results(image_id, sample.detections, self.target_to_cat)
            self.per_image[image_id] = sample.detections
        self._image_ids.append(image_id)

    def results(self, image_ids=None) -> list[dict]:
        """The COCO results of the images processed (or of those of ``image_ids``), in order."""
        ids = self._image_ids if image_ids is None else image_ids
        return [r for i in ids for r in self._results.get(i, ())]

    def evaluate(self) -> CocoAPResult:
        keep = set(self._image_ids)
        gt = self.gt
        if keep != {im["id"] for im in gt["images"]}:
            gt = dict(gt, images=[im for im in gt["images"] if im["id"] in keep],
                      annotations=[a for a in gt["annotations"] if a["image_id"] in keep])
        ground_truth = {c["id"]: 0 for c in gt["categories"]}
        for a in gt["annotations"]:
            if not a.get("iscrowd", 0):
                ground_truth[a["category_id"]] += 1
        ev = coco_eval(gt, self.results(), list(self.evaluated))
        if ev is None:
            return CocoAPResult(None, [0.0] * 12, {cid: {"AP": 0.0, "AP50": 0.0} for cid in self.evaluated},
                                ground_truth)
        return CocoAPResult(ev, [float(s) for s in ev.stats], per_class_ap(ev, list(self.evaluated)), ground_truth)


# --- recall of the candidate regions --------------------------------------------------------

def gt_boxes(gt: dict, evaluated: dict[int, int]) -> dict[int, np.ndarray]:
    """Image id -> float64 (n, 4) xyxy of its non-crowd ground truth in the evaluated categories."""
    out: dict[int, list] = {}
    for a in gt["annotations"]:
        if a["category_id"] in evaluated and not a.get("iscrowd", 0):
            x, y, w, h = a["bbox"]
            out.setdefault(a["image_id"], []).append([x, y, x + w, y + h])
    return {k: np.array(v, np.float64) for k, v in out.items()}


class CandidateRecall(DatasetEvaluator):
    """Recall of the regions the detector scored (windows or proposals) against the ground truth
    of the evaluated categories, before any classifier (`slidewin.apps.recall`). A detector that
    does not expose its regions (a region-proposal network) gives None."""

    def __init__(self, gt: dict, evaluated: dict[int, int]):
        self.boxes = gt_boxes(gt, evaluated)
        self.reset()

    def reset(self) -> None:
        self.rows: list[np.ndarray] = []
        self.exposed = True

    def process(self, sample: Sample) -> None:
        from slidewin.apps.recall import best_ious
        from slidewin.core.detector import Unit

        if not sample.ok:
            return
        self.exposed &= sample.stats.regions is not None
        if self.exposed:
            self.rows.append(best_ious(self.boxes.get(sample.image["id"], np.zeros((0, 4))), sample.stats.regions,
                                       ranked=sample.stats.unit is Unit.PROPOSALS))

    def evaluate(self) -> dict:
        """``recall50``, ``recall75``, ``AR100``, ``AR1000`` (None when the regions are not
        exposed) and ``recall``: the recall@0.5 curve against the number of candidates."""
        from slidewin.apps.recall import recall_summary

        if not (self.exposed and self.rows):
            return {"recall50": None, "recall75": None, "AR100": None, "AR1000": None, "recall": None}
        summary = recall_summary(np.concatenate(self.rows))
        return {k: summary.pop(k) for k in ("recall50", "recall75", "AR100", "AR1000")} | {"recall": summary}


# --- where the time went ----------------------------------------------------------------------

class StageSeconds(DatasetEvaluator):
    """Seconds per stage (decode first) and regions scored, summed over the images read."""

    def reset(self) -> None:
        self.seconds: dict[str, float] = {}
        self.candidates = 0
        self.images = 0

    def process(self, sample: Sample) -> None:
        from slidewin.core.detector import Stage

        if not sample.ok:
            return
        self.images += 1
        self.candidates += sample.stats.windows
        for stage, sec in {Stage.DECODE.value: sample.decode_seconds, **sample.stats.seconds}.items():
            self.seconds[stage] = self.seconds.get(stage, 0.0) + sec

    def evaluate(self) -> dict:
        """``{"seconds": {stage: summed seconds}, "candidates": summed, "images": read}``."""
        return {"seconds": dict(self.seconds), "candidates": self.candidates, "images": self.images}
