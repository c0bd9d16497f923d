"""Windows against region proposals on one image: a table, a picture, a JSON payload.

`open_comparison` opens the contenders as detectors: the classifier slid over the image
(windows), the same classifier scoring region proposals (R-CNN without training), and a
region-proposal network (Faster R-CNN) when one is given, which looks only for the categories
the classifier can name, so that the race is fair. `run_compare` runs each on the image,
`compare_table` and `side_by_side` show the results, `compare_payload` records them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from slidewin.core.detections import Detections
from slidewin.core.detector import Detector, RunStats, Stage
from slidewin.errors import SlidewinError
from slidewin.io.drawing import draw_detections, title_bar
from slidewin.core.contract import ModelKind, ModelMeta

# Stages of each detector, folded into the comparison's common columns.
PREP_STAGES = (Stage.PROPOSALS, Stage.PYRAMID, Stage.LETTERBOX)
POST_STAGES = (Stage.SCORING, Stage.NMS, Stage.POSTPROCESS)


@dataclass(frozen=True)
class Contender:
    """One detector in a comparison, with the model file it was opened from."""

    name: str
    detector: Detector
    model: Path


@dataclass(frozen=True)
class Comparison:
    """The detectors to race, and the categories they share."""

    contenders: list[Contender]
    shared_labels: list[str]


def open_comparison(classifier: Path, region: Path | None, config, classes, device, proposals=None) -> Comparison:
    """The classifier slid over the image, the classifier scoring ``proposals`` (a `DetectorConfig`
    whose regions are selective search, or None for no such panel), and the region-proposal model
    ``region`` (or None), on the same categories.

    Raises:
        SlidewinError: a model of the wrong kind.
    """
    from slidewin.pipeline.factory import build_detector

    windows = build_detector(classifier, config=config, classes=classes, device=device)
    if windows.meta.kind is not ModelKind.CLASSIFIER:
        raise SlidewinError("--classifier must be a classifier model", classifier)
    contenders = [Contender(f"{windows.mode.value} windows ({windows.meta.architecture})", windows, Path(classifier))]
    if proposals is not None:
        scored = build_detector(classifier, config=config, classes=classes, device=device, proposals=proposals)
        contenders.append(Contender(f"{proposals.regions.method.value}, {proposals.scorer.value} ({scored.meta.architecture})",
                                    scored, Path(classifier)))
    shared = list(windows.labels)
    if region is not None:
        rpn = build_detector(region, config=config, device=device)
        if rpn.meta.kind is not ModelKind.REGION_PROPOSAL:
            raise SlidewinError("--frcnn must be a region-proposal model", region)
        shared = [n for n in windows.labels if n in rpn.labels]
        if shared and len(shared) < len(rpn.labels):
            rpn = build_detector(region, config=config, classes=shared, device=device)
        contenders.append(Contender(f"region proposal network ({rpn.meta.architecture})", rpn, Path(region)))
    return Comparison(contenders, shared)


@dataclass(frozen=True)
class CompareResult:
    """One detector's run on the compared image."""

    name: str
    meta: ModelMeta
    detections: Detections
    stats: RunStats
    model: Path

    @property
    def evaluated(self) -> str:
        """What the detector scored: "519 windows" / "1000 proposals"."""
        return f"{self.stats.windows} {self.stats.unit.value}"

    @property
    def stage_seconds(self) -> dict[str, float]:
        s = self.stats.seconds
        return {
            "prep": sum(s.get(k, 0.0) for k in PREP_STAGES),
            "inference": s.get(Stage.INFERENCE, 0.0),
            "post": sum(s.get(k, 0.0) for k in POST_STAGES),
        }


def run_compare(image: np.ndarray, comparison: Comparison) -> list[CompareResult]:
    """Run each contender on the image."""
    results = []
    for c in comparison.contenders:
        dets = c.detector.detect(image)
        results.append(CompareResult(c.name, c.detector.meta, dets, c.detector.last_stats, c.model))
    return results


def compare_table(results: list[CompareResult], decode_seconds: float) -> tuple[list[str], list[list[str]]]:
    """Headers and rows: detections, what was evaluated, seconds per stage, total, best score."""
    headers = ["detector", "detections", "evaluated", "decode s", "proposals/pyramid/letterbox s", "inference s",
               "scoring+NMS s", "total s", "top score"]
    rows = []
    for r in results:
        st = r.stage_seconds
        total = decode_seconds + sum(st.values())
        if r.meta.is_random:
            top = "refused: untrained"
        elif len(r.detections):
            i = int(np.argmax(r.detections.scores))
            top = f"{r.detections.label_names[i]} {r.detections.scores[i]:.2f}"
        else:
            top = "-"
        rows.append([r.name, str(len(r.detections)), r.evaluated, f"{decode_seconds:.3f}", f"{st['prep']:.3f}",
                     f"{st['inference']:.3f}", f"{st['post']:.3f}", f"{total:.3f}", top])
    return headers, rows


def compare_payload(image_path: str | Path, image_hw: tuple[int, int], decode_seconds: float,
                    results: list[CompareResult]) -> dict:
    """The JSON record of a comparison; an untrained model's detections are left out."""
    h, w = image_hw
    return {
        "image": str(image_path), "width": w, "height": h, "decode_seconds": round(decode_seconds, 4),
        "detectors": [
            {"name": r.name, "model": str(r.model), "weights": r.meta.weights, "evaluated": r.evaluated,
             "seconds": {k: round(v, 4) for k, v in r.stats.seconds.items()},
             "detections": [] if r.meta.is_random else r.detections.to_records(),
             "num_detections": len(r.detections)}
            for r in results
        ],
    }


def _titled(panels: list[np.ndarray], titles: list[str]) -> list[np.ndarray]:
    """Each panel under a title bar whose text fits the panel (the font shrinks, then the text
    wraps, `title_bar`); all bars get the tallest one's height so that the panels line up."""
    bar_h = max(28, panels[0].shape[0] // 22)
    tallest = max(title_bar(p.shape[1], t, bar_h).shape[0] for p, t in zip(panels, titles))
    return [np.vstack([title_bar(p.shape[1], t, bar_h, tallest), p]) for p, t in zip(panels, titles)]


def side_by_side(image: np.ndarray, results: list[CompareResult]) -> np.ndarray:
    """The image drawn once per detector, panels next to each other with a title bar each.

    Untrained (random-weight) models are drawn without scores.
    """
    panels, titles = [], []
    for r in results:
        dets = r.detections
        if r.meta.is_random:
            dets = Detections(dets.xyxy, np.zeros_like(dets.scores), dets.class_ids, dets.labels)
            title = f"{r.name}: {len(dets)} boxes (untrained weights: scores refused)"
        else:
            title = f"{r.name}: {len(dets)} detections, {r.stats.total:.2f} s"
        panels.append(draw_detections(image, dets, show_scores=not r.meta.is_random))
        titles.append(title)
    panels = _titled(panels, titles)
    gap = np.full((panels[0].shape[0], 12, 3), 255, np.uint8)
    out = [panels[0]]
    for p in panels[1:]:
        out += [gap, p]
    return np.hstack(out)
