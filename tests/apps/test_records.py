"""`DetectionRecord`: one typed record of an image, written as the JSON slidewin has always written."""

import json

import numpy as np
import pytest

from slidewin.apps.folder.records import DetectionRecord
from slidewin.core.detections import Detections
from slidewin.core.detector import RunStats

#: A results.jsonl line as slidewin wrote it before the record was typed: keys in this order.
OLD_LINE = ('{"image": "in/a.jpg", "width": 640, "height": 480, "model": "m.onnx", "detections": '
            '[{"xyxy": [1.5, 2.0, 30.25, 40.0], "score": 0.875, "class_id": 3, "label": "cat"}], "windows": 12, '
            '"seconds": {"decode": 0.0123, "classify": 0.5}}')


def _dets() -> Detections:
    return Detections(np.array([[1.5, 2.0, 30.25, 40.0]], np.float32), np.array([0.875], np.float32),
                      np.array([3], np.int64), ("a", "b", "c", "cat"))


def test_a_record_writes_the_same_json_line_as_before():
    stats = RunStats(windows=12, seconds={"classify": 0.5})
    record = DetectionRecord.of("in/a.jpg", np.zeros((480, 640, 3), np.uint8), "m.onnx", _dets(), stats, 0.01234)
    assert json.dumps(record.to_json()) == OLD_LINE
    assert record.ok and DetectionRecord.from_json(json.loads(OLD_LINE)) == record


def test_a_failed_image_has_an_error_and_no_detections_and_round_trips():
    record = DetectionRecord.of("b.png", None, "m.onnx", error="not an image", warnings=["Corrupt JPEG data"])
    value = record.to_json()
    assert list(value) == ["image", "width", "height", "model", "detections", "windows", "seconds", "error",
                           "warnings"]
    assert value["width"] is None and value["detections"] == [] and not record.ok
    assert DetectionRecord.from_json(json.loads(json.dumps(value))) == record
    assert json.dumps(DetectionRecord.from_json(json.loads(json.dumps(value))).to_json()) == json.dumps(value)


def test_an_older_or_hand_written_line_still_names_its_image():
    old = DetectionRecord.from_json({"image": "x.jpg", "error": None})
    assert old.image == "x.jpg" and not old.ok     # an "error" key, whatever its value, marks a failure
    assert DetectionRecord.from_json({"image": "y.jpg"}).ok


@pytest.mark.parametrize("value", [[], "x.jpg", {"width": 3}, {"image": 7}])
def test_what_is_not_a_record_is_refused(value):
    with pytest.raises(ValueError):
        DetectionRecord.from_json(value)
