"""Patch-based against region-proposal detection on one image: a table and a side-by-side picture."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from slidewin.detections import Detections
from slidewin.detector import RunStats
from slidewin.draw import draw_detections
from slidewin.model_meta import ModelMeta

# Stage names of each detector, folded into the comparison's common columns.
PREP_STAGES = ("pyramid", "letterbox")
POST_STAGES = ("scoring", "nms", "postprocess")


@dataclass(frozen=True)
class CompareResult:
    """One detector's run on the compared image."""

    name: str
    meta: ModelMeta
    detections: Detections
    stats: RunStats
    evaluated: str  # "519 windows" / "1000 proposals"

    @property
    def stage_seconds(self) -> dict[str, float]:
        s = self.stats.seconds
        return {
            "prep": sum(s.get(k, 0.0) for k in PREP_STAGES),
            "inference": s.get("inference", 0.0),
            "post": sum(s.get(k, 0.0) for k in POST_STAGES),
        }


def run_compare(image: np.ndarray, detectors: dict[str, object]) -> list[CompareResult]:
    """Run each detector (anything with ``run(image) -> (Detections, RunStats)`` and ``meta``)."""
    results = []
    for name, det in detectors.items():
        dets, stats = det.run(image)
        results.append(CompareResult(name, det.meta, dets, stats, f"{stats.windows} {stats.unit}"))
    return results


def compare_table(results: list[CompareResult], decode_seconds: float) -> tuple[list[str], list[list[str]]]:
    """Headers and rows: detections, what was evaluated, seconds per stage, total, best score."""
    headers = ["detector", "detections", "evaluated", "decode s", "pyramid/letterbox s", "inference s",
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


def _titled(panel: np.ndarray, title: str) -> np.ndarray:
    bar_h = max(28, panel.shape[0] // 22)
    bar = np.full((bar_h, panel.shape[1], 3), 30, np.uint8)
    scale = bar_h / 40
    cv2.putText(bar, title, (8, int(bar_h * 0.7)), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return np.vstack([bar, panel])


def side_by_side(image: np.ndarray, results: list[CompareResult]) -> np.ndarray:
    """The image drawn once per detector, panels next to each other with a title bar each.

    Untrained (random-weight) models are drawn without scores.
    """
    panels = []
    for r in results:
        dets = r.detections
        if r.meta.is_random:
            dets = Detections(dets.xyxy, np.zeros_like(dets.scores), dets.class_ids, dets.labels)
            title = f"{r.name}: {len(dets)} boxes (untrained weights: scores refused)"
        else:
            title = f"{r.name}: {len(dets)} detections, {r.stats.total:.2f} s"
        panels.append(_titled(draw_detections(image, dets, show_scores=not r.meta.is_random), title))
    gap = np.full((panels[0].shape[0], 12, 3), 255, np.uint8)
    out = [panels[0]]
    for p in panels[1:]:
        out += [gap, p]
    return np.hstack(out)

