"""COCO results, YOLO txt and CSV writers: read back by the tools they are for."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
from conftest import COCO_MINI

from slidewin.core.detections import Detections
from slidewin.errors import SlidewinError
from slidewin.io.result_formats import (CSV_HEADER, coco_categories, coco_category_id, coco_category_ids,
                                        coco_results, csv_rows, default_image_ids, require_coco_category_ids,
                                        yolo_classes_txt, yolo_lines, yolo_txt_name)

INSTANCES = COCO_MINI / "instances.json"


@pytest.fixture(scope="module")
def dataset() -> dict:
    return json.loads(INSTANCES.read_text())


def ground_truth_records(dataset: dict, labels: tuple[str, ...]) -> list[dict]:
    """Detection records whose boxes are the ground truth, with scores from 0.99 down."""
    names = {c["id"]: c["name"] for c in dataset["categories"]}
    by_image: dict[int, list] = {im["id"]: [] for im in dataset["images"]}
    for k, a in enumerate(dataset["annotations"]):
        x, y, w, h = a["bbox"]
        label = names[a["category_id"]]
        by_image[a["image_id"]].append({"xyxy": [x, y, x + w, y + h], "score": 0.99 - k * 1e-4,
                                        "class_id": labels.index(label), "label": label})
    return [{"image": str(COCO_MINI / "images" / im["file_name"]), "width": im["width"], "height": im["height"],
             "detections": by_image[im["id"]]} for im in dataset["images"]]


def test_the_category_table_is_cocos(dataset):
    assert coco_categories() == [{"id": c["id"], "name": c["name"], "supercategory": c["supercategory"]}
                                 for c in dataset["categories"]]
    assert len(coco_categories()) == 80 and coco_categories()[-1]["id"] == 90


def test_coco_ids_by_name():
    assert coco_category_id("person") == 1 and coco_category_id("toothbrush") == 90
    assert coco_category_id("Traffic_Light") == 10 and coco_category_id("tvmonitor") == 72
    assert coco_category_id("tabby") is None


def test_every_coco_group_target_maps_to_its_category():
    from importlib import resources

    groups = json.loads(resources.files("slidewin").joinpath("data/coco_groups.json").read_text())["groups"]
    ids = coco_category_ids(tuple(groups))
    assert ids is not None and len(ids) == len(groups)
    assert ids[list(groups).index("cat")] == 17


def test_faster_rcnn_labels_map_and_imagenet_labels_are_refused():
    frcnn = ("__background__", "person", "bicycle", "N/A", "cat")
    assert coco_category_ids(frcnn) == {1: 1, 2: 2, 4: 17}
    imagenet = ("tench", "goldfish", "cat")
    assert coco_category_ids(imagenet) is None
    with pytest.raises(SlidewinError, match=r"^model.onnx: COCO results need COCO classes, but the label 'tench'"):
        require_coco_category_ids(imagenet, "model.onnx")


def test_coco_results_load_in_faster_coco_eval_and_score_the_ground_truth_perfectly(dataset, tmp_path):
    faster_coco_eval = pytest.importorskip("faster_coco_eval")
    labels = tuple(c["name"] for c in dataset["categories"])  # class ids 0..79, not COCO's ids
    records = ground_truth_records(dataset, labels)
    image_ids = {r["image"]: im["id"] for r, im in zip(records, dataset["images"])}
    rows = coco_results(records + [{"image": "broken.jpg", "error": "corrupt", "detections": []}],
                        image_ids, labels=labels)
    assert len(rows) == len(dataset["annotations"])
    assert {r["category_id"] for r in rows} == {a["category_id"] for a in dataset["annotations"]}
    path = tmp_path / "detections.coco.json"
    path.write_text(json.dumps(rows))

    gt = faster_coco_eval.COCO(str(INSTANCES))
    dt = gt.loadRes(str(path))
    assert len(dt.getAnnIds()) == len(rows)
    ev = faster_coco_eval.COCOeval_faster(gt, dt, iouType="bbox", print_function=lambda *a, **k: None)
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    assert ev.stats[0] == pytest.approx(1.0, abs=1e-6)  # AP: the ground truth scored as itself


def test_coco_results_refuse_an_image_without_an_id(dataset):
    labels = tuple(c["name"] for c in dataset["categories"])
    records = ground_truth_records(dataset, labels)[:2]
    with pytest.raises(SlidewinError, match="no image id for this image"):
        coco_results(records, {records[0]["image"]: 1})


def test_default_image_ids():
    assert default_image_ids(["a/000000000790.jpg", "b/42.png"]) == {"a/000000000790.jpg": 790, "b/42.png": 42}
    assert default_image_ids(["x/cat.jpg", "y/7.jpg", "x/cat.jpg"]) == {"x/cat.jpg": 1, "y/7.jpg": 2}
    assert default_image_ids(["a/7.jpg", "b/007.jpg"]) == {"a/7.jpg": 1, "b/007.jpg": 2}  # same number twice


def test_yolo_lines_are_normalised_and_read_back_to_the_boxes(dataset):
    labels = tuple(c["name"] for c in dataset["categories"])
    for record in ground_truth_records(dataset, labels):
        h, w = record["height"], record["width"]
        lines = yolo_lines(record["detections"], (h, w))
        assert len(lines) == len(record["detections"])
        values = np.array([[float(v) for v in line.split()] for line in lines]).reshape(-1, 6)
        assert ((values[:, 1:5] >= 0) & (values[:, 1:5] <= 1)).all()
        cls, xc, yc, bw, bh = values[:, 0], values[:, 1] * w, values[:, 2] * h, values[:, 3] * w, values[:, 4] * h
        back = np.stack([xc - bw / 2, yc - bh / 2, xc + bw / 2, yc + bh / 2], 1)
        want = np.clip(np.array([d["xyxy"] for d in record["detections"]]).reshape(-1, 4), 0, [w, h, w, h])
        np.testing.assert_allclose(back, want, atol=1e-5 * max(w, h))
        assert cls.tolist() == [d["class_id"] for d in record["detections"]]


def test_yolo_lines_of_detections_clip_to_the_image_and_can_leave_out_scores():
    d = Detections([[-5, 0, 50, 120]], [0.5], [1], ("cat", "dog"))
    assert yolo_lines(d, (100, 200)) == ["1 0.125000 0.500000 0.250000 1.000000 0.50000"]
    assert yolo_lines(d, (100, 200), with_scores=False) == ["1 0.125000 0.500000 0.250000 1.000000"]
    assert yolo_lines(Detections.empty(("cat",)), (10, 10)) == []
    with pytest.raises(ValueError, match="image size must be positive"):
        yolo_lines(d, (0, 10))


def test_yolo_classes_txt_and_names():
    assert yolo_classes_txt(("cat", "traffic light", "two\nlines")) == "cat\ntraffic light\ntwo lines\n"
    assert yolo_txt_name("photos/000000000790.jpg") == "000000000790.txt"


def test_csv_rows_read_back_with_the_csv_module(dataset):
    labels = tuple(c["name"] for c in dataset["categories"])
    records = ground_truth_records(dataset, labels)
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(CSV_HEADER)
    writer.writerows(csv_rows(records + [{"image": "broken.jpg", "error": "corrupt", "detections": []}]))
    rows = list(csv.DictReader(io.StringIO(buf.getvalue())))
    assert len(rows) == len(dataset["annotations"])
    first = records[0]["detections"][0]
    assert rows[0]["image"] == records[0]["image"] and rows[0]["label"] == first["label"]
    assert float(rows[0]["x2"]) == pytest.approx(first["xyxy"][2]) and int(rows[0]["class_id"]) == first["class_id"]
