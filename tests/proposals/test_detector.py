"""The proposal detector (R-CNN without training) through the Detector interface and the CLI."""

import json

import numpy as np
import pytest

from slidewin.cli import main
from slidewin.core.detector import Detector
from slidewin.proposals.detector import ProposalConfig, ProposalDetector
from slidewin.proposals.generators import ProposalMethod


def _scene() -> np.ndarray:
    img = np.full((200, 260, 3), 60, np.uint8)
    img[30:120, 20:140] = (220, 40, 40)
    img[90:190, 150:250] = (40, 220, 60)
    return img


@pytest.mark.parametrize("scoring", ["pooled", "crops"])
def test_detector_scores_its_proposals_and_reports_them(tiny_conv, scoring):
    det = ProposalDetector(tiny_conv, config=ProposalConfig(method="selective-search-single", scoring=scoring,
                                                            min_score=0.0, min_size=8))
    assert isinstance(det, Detector) and det.labels == tiny_conv.labels
    image = _scene()
    prepared = det.prepare(image)
    dets = det.detect(image, prepared)
    stats = det.last_stats
    assert list(stats.seconds) == ["proposals", "pyramid", "inference", "scoring", "nms"]
    assert stats.unit == "proposals" and stats.windows == len(stats.regions) == len(prepared[0]) > 5
    assert 0 < len(dets) <= stats.candidates
    assert set(map(tuple, dets.xyxy.tolist())) <= set(map(tuple, stats.regions.tolist()))  # boxes are proposals
    again = det.detect(image)                                           # prepares by itself
    np.testing.assert_array_equal(again.xyxy, dets.xyxy)
    np.testing.assert_allclose(again.scores, dets.scores)


def test_min_size_and_max_proposals_bound_the_proposals(tiny_conv):
    det = ProposalDetector(tiny_conv, config=ProposalConfig(method="selective-search-single", min_size=40,
                                                            max_proposals=5))
    boxes, _ = det.prepare(_scene())
    assert len(boxes) <= 5 and ((boxes[:, 2:] - boxes[:, :2]) >= 40).all()


def test_windows_method_scores_the_sliding_grid(tiny_conv):
    from slidewin.pipeline.config import DetectorConfig

    det = ProposalDetector(tiny_conv, config=ProposalConfig(method=ProposalMethod.WINDOWS, scoring="crops"),
                           window_config=DetectorConfig(windows_hw=((96, 96),)))
    det.detect(_scene())
    assert det.last_stats.windows == len(det.regions.boxes(_scene())) > 0


def test_bad_settings_are_refused():
    with pytest.raises(ValueError):
        ProposalConfig(max_proposals=0)
    with pytest.raises(ValueError):
        ProposalConfig(method="edge-boxes")
    with pytest.raises(ValueError):
        ProposalConfig(contrast=-1)
    assert ProposalConfig().scoring.uses_ring and not ProposalConfig(contrast=0).scoring.uses_ring
    assert not ProposalConfig(scoring="crops").scoring.uses_ring      # a ring would cost a network pass per box


def test_cli_detect_with_proposals(tiny_conv, tmp_path, capsys, save_rgb):
    image = save_rgb(tmp_path / "scene.jpg", _scene())
    js = tmp_path / "d.json"
    code = main(["detect", str(image), "--model", str(tiny_conv.path), "--proposals", "selective-search-single",
                 "--min-score", "0", "--json", str(js)])
    assert code == 0
    record = json.loads(js.read_text())
    assert record["windows"] > 0 and record["detections"] and "proposals" in record["seconds"]
    assert "proposals" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:   # argparse: usage and one error line
        main(["detect", str(image), "--model", str(tiny_conv.path), "--proposals", "selective-search-single",
              "--max-proposals", "0"])
    assert e.value.code == 2 and "--max-proposals: must be at least 1" in capsys.readouterr().err
    code = main(["detect", str(image), "--model", str(tiny_conv.path), "--proposals", "selective-search-single",
                 "--context", "5"])
    assert code != 0 and "context" in capsys.readouterr().err


def test_contrast_only_lowers_scores(tiny_conv, tmp_path, save_rgb):
    """The ring contrast multiplies each score by a factor in [0, 1]: same boxes, lower or equal scores."""
    from slidewin.core.targets import Targets

    image = _scene()
    plain = ProposalDetector(tiny_conv, config=ProposalConfig(method="selective-search-single", min_score=0,
                                                              contrast=0, iou=1.0))
    ring = ProposalDetector(tiny_conv, config=ProposalConfig(method="selective-search-single", min_score=0,
                                                             contrast=3, iou=1.0))
    prepared = plain.prepare(image)
    a, b = plain.detect(image, prepared), ring.detect(image, prepared)
    assert isinstance(plain.targets, Targets) and len(a) == len(b) > 0     # iou 1: every candidate kept
    before = {(tuple(x), c): s for x, c, s in zip(a.xyxy.tolist(), a.class_ids.tolist(), a.scores.tolist())}
    after = {(tuple(x), c): s for x, c, s in zip(b.xyxy.tolist(), b.class_ids.tolist(), b.scores.tolist())}
    assert before.keys() == after.keys()
    assert all(after[k] <= before[k] + 1e-6 for k in before) and any(after[k] < before[k] - 1e-3 for k in before)
