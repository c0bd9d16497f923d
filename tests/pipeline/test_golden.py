"""Must not change: the detections of every classifier mode on the repository's COCO photos.

The golden file (tests/data/golden/detections.json) was written by the code before the detectors
were rebuilt from parts (issue 21); every refactoring of the pipeline must reproduce it, JSON for
JSON: labels and counts exactly, boxes and scores within 1e-5. The settings keep the run short
(one or two pyramid levels, selective search's single strategy, few crops).

To rewrite the file on purpose (a deliberate change of results, said in the commit):
``SLIDEWIN_WRITE_GOLDEN=1 pytest tests/pipeline/test_golden.py``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
PHOTOS = sorted((ROOT / "tests" / "data" / "coco-mini" / "images").glob("*.jpg"))[:20]
GOLDEN = ROOT / "tests" / "data" / "golden" / "detections.json"
TOLERANCE = 1e-5

#: mode -> (DetectorConfig fields, ProposalConfig fields or None for the window grid detector).
MODES = {
    "patch": ({"mode": "patch", "windows_hw": ((150, 200),), "step": 64.0, "max_levels": 1, "min_score": 0.3}, None),
    "dense": ({"mode": "dense", "max_levels": 2, "min_score": 0.3}, None),
    "proposals-pooled": ({}, {"method": "selective-search-single", "scoring": "pooled", "max_proposals": 300,
                              "min_score": 0.3}),
    "proposals-crops": ({}, {"method": "selective-search-single", "scoring": "crops", "max_proposals": 60,
                             "min_score": 0.3}),
}


def _detections(model: Path, mode: str) -> dict[str, list[dict]]:
    from slidewin.io.images import load_image
    from slidewin.pipeline.config import DetectorConfig
    from slidewin.pipeline.factory import build_detector
    from slidewin.proposals.detector import ProposalConfig

    window_fields, proposal_fields = MODES[mode]
    proposals = None if proposal_fields is None else ProposalConfig(**proposal_fields)
    detector = build_detector(model, config=DetectorConfig(**window_fields), classes="coco", device="cpu",
                              proposals=proposals)
    return {p.name: _records(detector.detect(load_image(p)).sorted()) for p in PHOTOS}


def _records(dets) -> list[dict]:
    """Like `Detections.to_records`, unrounded (float32 values as JSON floats), so the 1e-5
    tolerance is not lost to rounding at the second decimal."""
    return [{"xyxy": [float(v) for v in box], "score": float(s), "class_id": int(c), "label": name}
            for box, s, c, name in zip(dets.xyxy, dets.scores, dets.class_ids, dets.label_names)]


def _compare(want: list[dict], got: list[dict], where: str) -> None:
    assert len(got) == len(want), f"{where}: {len(got)} detections, golden {len(want)}"
    assert [d["label"] for d in got] == [d["label"] for d in want], f"{where}: labels differ"
    assert [d["class_id"] for d in got] == [d["class_id"] for d in want], f"{where}: class ids differ"
    np.testing.assert_allclose([d["score"] for d in got], [d["score"] for d in want], atol=TOLERANCE, err_msg=where)
    np.testing.assert_allclose(np.reshape([d["xyxy"] for d in got], (-1, 4)),
                               np.reshape([d["xyxy"] for d in want], (-1, 4)), atol=TOLERANCE, err_msg=where)


@pytest.mark.slow
@pytest.mark.parametrize("mode", list(MODES))
def test_detections_equal_the_golden_file(effnet_onnx, mode):
    got = _detections(effnet_onnx, mode)
    if os.environ.get("SLIDEWIN_WRITE_GOLDEN"):
        data = json.loads(GOLDEN.read_text()) if GOLDEN.exists() else {}
        data[mode] = got
        GOLDEN.parent.mkdir(parents=True, exist_ok=True)
        GOLDEN.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    want = json.loads(GOLDEN.read_text())[mode]
    assert sorted(got) == sorted(want) == sorted(p.name for p in PHOTOS)
    assert sum(map(len, want.values())) > 0, f"{mode}: the golden file holds no detection to compare"
    for name in want:
        _compare(want[name], got[name], f"{mode} {name}")
