"""The classifier detector from parts: every regions x scorer pair that makes sense runs on a
photo, every pair that does not is refused by name; the CLI refuses, in one line, a flag that
the chosen parts would not use; run.json records only the parts that were used."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from slidewin.cli import main
from slidewin.core.detector import Detector
from slidewin.core.merge import Merge, MergeConfig
from slidewin.errors import SlidewinError
from slidewin.io.images import load_image
from slidewin.pipeline.detector import ClassifierDetector
from slidewin.pipeline.regions import SelectiveSearch, WindowGrid
from slidewin.pipeline.scorers import CropScorer, DenseScorer, PatchScorer, PooledScorer
from slidewin.runtime.dense import DenseClassifier

PHOTO = sorted((Path(__file__).parent / "data" / "coco-mini" / "images").glob("*.jpg"))[0]


def _regions(name: str, clf):
    if name == "grid":
        return WindowGrid(clf.input_hw, windows_hw=((96, 128), (128, 96)), step=32, max_levels=2)
    return SelectiveSearch("selective-search-single", min_size=16, max_proposals=150)


def _scorer(name: str, clf):
    return {"patch": lambda: PatchScorer(clf, batch_size=32),
            "dense": lambda: DenseScorer(DenseClassifier(clf)),
            "crops": lambda: CropScorer(clf, context=0.0, batch_size=32),
            "pooled": lambda: PooledScorer(DenseClassifier(clf), ring=0.5, contrast=3.0)}[name]()


#: regions x scorer -> None (runs), or the words its refusal must hold.
TABLE = {
    ("grid", "patch"): None,
    ("grid", "dense"): None,
    ("grid", "crops"): None,
    ("grid", "pooled"): None,
    ("search", "crops"): None,
    ("search", "pooled"): None,
    ("search", "patch"): ("PatchScorer", "SelectiveSearch", "plan"),
    ("search", "dense"): ("DenseScorer", "SelectiveSearch", "plan"),
}


@pytest.mark.parametrize("regions, scorer", list(TABLE))
def test_every_pair_of_parts_runs_or_is_refused_by_name(tiny_conv, regions, scorer):
    refusal = TABLE[regions, scorer]
    parts = _regions(regions, tiny_conv), _scorer(scorer, tiny_conv)
    if refusal is not None:
        with pytest.raises(SlidewinError) as e:
            ClassifierDetector(*parts)
        assert all(word in str(e.value) for word in refusal), str(e.value)
        assert "\n" not in str(e.value)
        return
    det = ClassifierDetector(*parts, merge=MergeConfig(Merge.NMS, 0.5), min_score=0.0)
    assert isinstance(det, Detector) and det.labels == tiny_conv.labels
    image = load_image(PHOTO)
    dets = det.detect(image, det.prepare(image))
    stats = det.last_stats
    assert stats.windows == len(stats.regions) > 0 and 0 < len(dets) <= stats.candidates
    assert list(stats.seconds)[-4:] == ["pyramid", "inference", "scoring", "nms"]
    assert ("proposals" in stats.seconds) == (regions == "search")
    h, w = image.shape[:2]
    assert (dets.xyxy >= 0).all() and (dets.xyxy[:, 2] <= w).all() and (dets.xyxy[:, 3] <= h).all()


def test_grid_boxes_are_the_plan_a_plan_scorer_scores(tiny_conv):
    """One planner: the boxes the grid gives a box scorer are the windows a plan scorer scores."""
    image = load_image(PHOTO)
    grid = _regions("grid", tiny_conv)
    det = ClassifierDetector(grid, PatchScorer(tiny_conv), min_score=1.0)
    det.detect(image)
    np.testing.assert_array_equal(grid.boxes(image), det.last_stats.regions)


def test_a_dense_scorer_needs_the_network_stride(tiny_conv):
    grid = WindowGrid(tiny_conv.input_hw, windows_hw=((96, 96),), step=16)
    with pytest.raises(SlidewinError, match="DenseScorer steps by the network stride"):
        ClassifierDetector(grid, DenseScorer(DenseClassifier(tiny_conv)))


def test_class_agnostic_merge_keeps_one_box_per_place():
    from slidewin.core.detections import Detections

    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [20, 20, 30, 30]], np.float32)
    dets = Detections(boxes, np.array([0.9, 0.8, 0.7], np.float32), np.array([0, 1, 1]), ("a", "b"))
    assert len(dets.merged(MergeConfig(iou=0.5))) == 3
    merged = dets.merged(MergeConfig(iou=0.5, class_agnostic=True))
    assert merged.class_ids.tolist() == [0, 1] and merged.scores.tolist() == pytest.approx([0.9, 0.7])


@pytest.mark.parametrize("flags, refused, chosen", [
    (["--proposals", "selective-search-fast", "--stride", "16"], "--stride", "--proposals selective-search-fast"),
    (["--proposals", "selective-search-single", "--window", "96", "--scale", "2", "--mode", "patch"],
     "--window, --scale, --mode", "--proposals selective-search-single"),
    (["--proposals", "selective-search-single", "--dense-tile", "0"], "--dense-tile", "selective-search"),
    (["--proposal-scoring", "crops"], "--proposal-scoring", "--proposals windows"),
    (["--proposals", "windows", "--max-proposals", "5", "--context", "0.1"], "--max-proposals, --context",
     "--proposals windows"),
    (["--contrast", "2"], "--contrast", "--proposals windows"),
    (["--proposals", "selective-search-single", "--proposal-scoring", "crops", "--contrast", "2"], "--contrast",
     "--proposal-scoring crops"),
    (["--proposals", "selective-search-single", "--batch-size", "8"], "--batch-size", "--proposal-scoring pooled"),
])
def test_cli_refuses_a_flag_the_chosen_parts_do_not_use(tiny_conv, tmp_path, capsys, one_line_error, save_rgb,
                                                         flags, refused, chosen):
    image = save_rgb(tmp_path / "scene.jpg", np.full((120, 160, 3), 90, np.uint8))
    code = main(["detect", str(image), "--model", str(tiny_conv.path), *flags])
    assert code == 2
    line = one_line_error(capsys, code, refused, chosen, "not apply")
    assert "Traceback" not in line


def test_cli_takes_the_flags_of_the_parts_in_use(tiny_conv, tmp_path, capsys, save_rgb):
    image = save_rgb(tmp_path / "scene.jpg", np.full((120, 160, 3), 90, np.uint8))
    for flags in (["--stride", "32", "--mode", "patch", "--batch-size", "4", "--iou", "0.4"],
                  ["--proposals", "selective-search-single", "--proposal-scoring", "crops", "--batch-size", "4",
                   "--context", "0.1", "--max-proposals", "20", "--merge", "vote"]):
        assert main(["detect", str(image), "--model", str(tiny_conv.path), "--min-score", "0", *flags]) == 0, flags
        capsys.readouterr()


def test_run_json_records_only_the_parts_in_use(tiny_conv, tmp_path, capsys, save_rgb):
    folder = tmp_path / "in"
    folder.mkdir()
    save_rgb(folder / "a.jpg", np.full((120, 160, 3), 90, np.uint8))
    out = tmp_path / "out"
    assert main(["detect", str(folder), "--model", str(tiny_conv.path), "--out-dir", str(out),
                 "--proposals", "selective-search-single", "--proposal-scoring", "crops", "--preset", "ap"]) == 0
    settings = json.loads((out / "run.json").read_text())["settings"]
    assert set(settings) >= {"regions", "scoring", "merge"} and "config" not in settings
    assert settings["regions"] == {"method": "selective-search-single", "min_size": 16.0, "max_proposals": 2000}
    assert "contrast" not in settings["scoring"] and "mode" not in settings["scoring"]   # pooled's, the grid's
    assert settings["scoring"]["scoring"] == "crops" and set(settings["merge"]) == {"merge", "iou"}
    out2 = tmp_path / "out2"
    assert main(["detect", str(folder), "--model", str(tiny_conv.path), "--out-dir", str(out2)]) == 0
    grid = json.loads((out2 / "run.json").read_text())["settings"]
    assert "windows_hw" in grid["regions"] and "method" not in grid["regions"] and "mode" in grid["scoring"]
    assert grid["merge"]["merge"] == "nested" and set(grid["merge"]) == {"merge", "iou", "ios"}  # display: no soft_sigma
    capsys.readouterr()
