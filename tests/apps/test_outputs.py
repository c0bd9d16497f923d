"""``detect --out-dir OUT --format coco|yolo|csv``: files that faster-coco-eval, YOLO tools and a
spreadsheet read without glue, made from results.jsonl after the run."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from slidewin.cli import main

COCO_MINI = Path(__file__).resolve().parents[1] / "data" / "coco-mini"


@pytest.fixture(scope="module")
def run(effnet_onnx, tmp_path_factory) -> Path:
    """Three fixture photos in COCO classes."""
    src = tmp_path_factory.mktemp("photos")
    photos = sorted((COCO_MINI / "images").glob("*.jpg"))[:3]
    for p in photos:
        shutil.copy(p, src / p.name)
    out = tmp_path_factory.mktemp("run") / "out"
    code = main(["detect", str(src), "--model", str(effnet_onnx), "--classes", "coco", "--min-score", "0.3",
                 "--max-levels", "1", "--out-dir", str(out), "--format", "coco", "--format", "yolo",
                 "--format", "csv"])
    assert code == 0
    return out


def _records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


def test_the_coco_file_is_read_by_faster_coco_eval(run):
    from faster_coco_eval import COCO

    rows = json.loads((run / "detections.coco.json").read_text())
    boxes = sum(len(r["detections"]) for r in _records(run))
    assert len(rows) == boxes > 0
    gt = COCO(str(COCO_MINI / "instances.json"))
    dt = gt.loadRes(rows)   # refuses ids the dataset does not have
    assert {r["image_id"] for r in rows} <= set(gt.getImgIds())
    assert {c["category_id"] for c in dt.dataset["annotations"]} <= set(gt.getCatIds())


def test_yolo_files_one_per_image_normalised(run):
    recs = _records(run)
    txts = sorted(p.name for p in (run / "yolo").glob("*.txt") if p.name != "classes.txt")
    assert len(txts) == len(recs) == 3
    classes = (run / "yolo" / "classes.txt").read_text().splitlines()
    assert "cat" in classes and "dog" in classes
    for t in txts:
        for line in (run / "yolo" / t).read_text().splitlines():
            cls, *xywh, score = line.split()
            assert 0 <= int(cls) < len(classes)
            assert all(0 <= float(v) <= 1 for v in xywh) and 0 < float(score) <= 1


def test_supervision_reads_the_yolo_folder_as_it_is(run, tmp_path):
    import supervision as sv

    photos = tmp_path / "photos"  # the run's three photos
    photos.mkdir()
    for p in sorted((COCO_MINI / "images").glob("*.jpg"))[:3]:
        shutil.copy(p, photos / p.name)
    ds = sv.DetectionDataset.from_yolo(str(photos), str(run / "yolo"), str(run / "yolo" / "data.yaml"))
    assert ds.classes == (run / "yolo" / "classes.txt").read_text().splitlines()
    by_name = {Path(r["image"]).name: r for r in _records(run)}
    assert len(ds) == len(by_name) == 3
    for path, _, dets in ds:
        record = by_name[Path(path).name]
        assert len(dets) == len(record["detections"])
        for box, want in zip(dets.xyxy, record["detections"]):
            assert abs(box - want["xyxy"]).max() < 0.01 * max(record["width"], record["height"])
        assert [ds.classes[c] for c in dets.class_id] == [d["label"] for d in record["detections"]]


def test_csv_one_row_per_box(run):
    rows = list(csv.DictReader((run / "detections.csv").open()))
    assert len(rows) == sum(len(r["detections"]) for r in _records(run))
    assert set(rows[0]) == {"image", "width", "height", "label", "class_id", "score", "x1", "y1", "x2", "y2"}


def test_a_format_the_model_cannot_give_is_refused_before_the_run(effnet_onnx, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["detect", str(COCO_MINI / "images"), "--model", str(effnet_onnx), "--classes", "all",
                 "--out-dir", str(out), "--format", "coco"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "not a COCO category" in err[-1] and not (out / "results.jsonl").exists()
    code = main(["detect", str(sorted((COCO_MINI / "images").glob("*.jpg"))[0]), "--model", str(effnet_onnx),
                 "--format", "csv"])
    assert code == 2 and "--format is for folder runs" in capsys.readouterr().err


def test_two_images_with_one_stem_keep_two_yolo_files():
    from slidewin.apps.outputs import _unique

    taken: set[str] = {"classes.txt"}
    assert _unique("classes.txt", taken) == "classes.2.txt"  # a photo named classes.jpg: not the names file
    assert [_unique(n, taken) for n in ("a.txt", "a.txt", "b.txt", "a.txt")] == ["a.txt", "a.2.txt", "b.txt", "a.3.txt"]
