"""The Python API around `Detections` and `Detector`: single boxes, repr, xywh, COCO rows,
supervision, and detectors that take what people pass (paths, PIL images, BGR arrays)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import COCO_MINI, tiny_conv_model

from slidewin.core.detections import Box, Detections
from slidewin.core.detector import Detector, RunStats
from slidewin.errors import ImageError, SlidewinError

PHOTO = COCO_MINI / "images" / "000000000790.jpg"


def make() -> Detections:
    return Detections(np.array([[10, 20, 50, 60], [0, 0, 20, 30], [5, 5, 30, 30]], np.float32),
                      np.array([0.97, 0.52, 0.8], np.float32), np.array([0, 1, 0]), ("cat", "cup"))


def test_an_int_index_gives_one_box_and_everything_else_detections():
    d = make()
    assert d[0] == Box((10.0, 20.0, 50.0, 60.0), pytest.approx(0.97), 0, "cat")
    assert d[np.int64(1)].label == "cup" and d[-1].xyxy == (5.0, 5.0, 30.0, 30.0)
    assert isinstance(d[1:], Detections) and isinstance(d[[0]], Detections) and len(d[[0]]) == 1
    assert isinstance(d[d.scores > 0.6], Detections) and isinstance(d[np.array([2, 0])], Detections)
    with pytest.raises(IndexError, match="box index 3 out of range for 3"):
        d[3]


def test_iteration_gives_boxes_in_order():
    boxes = list(make())
    assert [b.label for b in boxes] == ["cat", "cup", "cat"]
    assert [b.class_id for b in boxes] == [0, 1, 0] and all(isinstance(b.score, float) for b in boxes)
    assert boxes[0].xywh == (10.0, 20.0, 40.0, 40.0)
    assert list(Detections.empty(("cat",))) == []
    with pytest.raises(AttributeError):
        boxes[0].score = 1.0  # frozen


def test_box_repr_shows_float32_values_as_written():
    assert repr(make()[0]) == "Box(xyxy=(10, 20, 50, 60), score=0.97, class_id=0, label='cat')"


@pytest.mark.parametrize("dets, text", [
    (make(), "Detections(3 boxes: cat 2, cup 1; scores 0.52-0.97)"),
    (make()[[1]], "Detections(1 box: cup 1; score 0.52)"),
    (Detections.empty(("cat",)), "Detections(0 boxes)"),
    (Detections(np.tile([[0, 0, 1, 1]], (8, 1)), np.linspace(0.1, 0.8, 8), np.arange(8), tuple("abcdefgh")),
     "Detections(8 boxes: a 1, b 1, c 1, d 1, e 1, f 1, +2 more classes; scores 0.10-0.80)"),
])
def test_repr_is_short(dets, text):
    assert repr(dets) == text


def test_xywh():
    np.testing.assert_array_equal(make().xywh, [[10, 20, 40, 40], [0, 0, 20, 30], [5, 5, 25, 25]])
    assert make().xywh.dtype == np.float32 and Detections.empty().xywh.shape == (0, 4)


def test_to_coco_uses_coco_category_ids_by_name():
    rows = make().to_coco(790)
    assert rows[0] == {"image_id": 790, "category_id": 17, "bbox": [10.0, 20.0, 40.0, 40.0], "score": 0.97}
    assert [r["category_id"] for r in rows] == [17, 47, 17]  # cat, cup
    # the caller's own ids, by name or by class id
    assert [r["category_id"] for r in make().to_coco(1, {"cat": 3, 1: 9})] == [3, 9, 3]


def test_to_coco_refuses_labels_that_are_not_coco_in_one_line():
    imagenet_like = Detections(make().xyxy, make().scores, make().class_ids, ("tabby", "cup"))
    with pytest.raises(SlidewinError, match="'tabby' is not a COCO category") as e:
        imagenet_like.to_coco(1)
    assert "\n" not in str(e.value)
    with pytest.raises(SlidewinError, match="class 'cup' \\(id 1\\) has no category id in the category ids given"):
        make().to_coco(1, {"cat": 3})


def test_supervision_round_trip():
    sv = pytest.importorskip("supervision")
    d = make()
    s = d.to_supervision()
    assert isinstance(s, sv.Detections) and len(s) == 3
    np.testing.assert_array_equal(s.xyxy, d.xyxy)
    np.testing.assert_array_equal(s.confidence, d.scores)
    np.testing.assert_array_equal(s.class_id, d.class_ids)
    assert list(s.data["class_name"]) == ["cat", "cup", "cat"]
    back = Detections.from_supervision(s)
    assert back.labels == ("cat", "cup") and repr(back) == repr(d)
    np.testing.assert_array_equal(back.xyxy, d.xyxy)
    # supervision's own operations keep working on the converted result
    assert len(s[s.confidence > 0.6]) == 2
    # a label list given wins; missing scores (ground truth) read as 1; no names: numbers
    gt = sv.Detections(xyxy=np.array([[0, 0, 5, 5]], np.float32), class_id=np.array([2]))
    got = Detections.from_supervision(gt)
    assert got.labels == () and got.label_names == ["2"] and got.scores.tolist() == [1.0]
    assert Detections.from_supervision(gt, labels=("a", "b", "c")).label_names == ["c"]
    with pytest.raises(ValueError, match="without class_id"):
        Detections.from_supervision(sv.Detections(xyxy=np.zeros((1, 4), np.float32)))
    assert len(Detections.from_supervision(Detections.empty(("cat",)).to_supervision())) == 0


def test_supervision_annotators_draw_a_converted_result():
    sv = pytest.importorskip("supervision")
    image = np.zeros((80, 100, 3), np.uint8)
    out = sv.BoxAnnotator().annotate(image.copy(), make().to_supervision())
    assert out.any()


# --- detectors and the classifier take what people pass -----------------------------------------


class WholeImageDetector(Detector):
    """A real (tiny) classifier as a detector: one box over the whole image with its top class.
    It subclasses `Detector` and declares nothing about inputs: the interface does that."""

    def __init__(self, classifier):
        self.classifier = classifier
        self.labels = classifier.labels
        self.meta = classifier.meta
        self.providers = ["CPUExecutionProvider"]
        self.last_stats = None
        self.seen: list[np.ndarray] = []

    def detect(self, image: np.ndarray, prepared=None) -> Detections:
        assert isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.shape[2] == 3
        self.seen.append(image)
        best = self.classifier.classify(image, top_k=1)[0]
        h, w = image.shape[:2]
        self.last_stats = RunStats(windows=1)
        return Detections([[0, 0, w, h]], [best.probability], [best.class_id], self.labels)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from slidewin.runtime.classifier import Classifier

    return Classifier(tiny_conv_model(tmp_path_factory.mktemp("tiny") / "tiny.onnx"))


def test_detect_takes_a_path_a_pathlib_path_a_pil_image_and_a_bgr_array(tiny):
    from PIL import Image

    from slidewin.io.images import load_image

    det = WholeImageDetector(tiny)
    rgb = load_image(PHOTO)
    bgr = cv2.imread(str(PHOTO))
    expected = det.detect(rgb)
    for given, kwargs in [(str(PHOTO), {}), (PHOTO, {}), (Image.open(PHOTO), {}), (bgr, {"bgr": True}),
                          (bgr, {"channels": "bgr"}), (PHOTO.read_bytes(), {})]:
        got = det.detect(given, **kwargs)
        np.testing.assert_array_equal(det.seen[-1], rgb)
        assert got.to_records() == expected.to_records()
    assert det.seen[0] is rgb  # an RGB array goes through untouched, without a copy
    assert isinstance(det, Detector)


def test_a_bare_array_stays_rgb(tiny):
    det = WholeImageDetector(tiny)
    bgr = cv2.imread(str(PHOTO))
    det.detect(bgr)
    assert det.seen[-1] is bgr  # not guessed: a bare array is RGB, as documented


def test_a_path_that_is_not_an_image_is_the_clis_one_line_error(tiny, tmp_path):
    det = WholeImageDetector(tiny)
    text = tmp_path / "notes.jpg"
    text.write_text("not a photo")
    with pytest.raises(ImageError) as e:
        det.detect(text)
    assert str(e.value).startswith(str(text) + ": ") and "\n" not in str(e.value)
    with pytest.raises(ImageError, match="no such file"):
        det.detect(tmp_path / "missing.jpg")


@pytest.mark.parametrize("given, kwargs, error, message", [
    (np.zeros((4, 4, 3), np.float32), {}, ImageError, r"expected a uint8 \(H, W, 3\) RGB array, got float32 \(4, 4, 3\)"),
    (np.zeros((4, 4), np.uint8), {}, ImageError, "grayscale .*convert=True"),
    (np.zeros((4, 4, 4), np.uint8), {}, ImageError, "alpha channel"),
    ([[1, 2, 3]], {}, ImageError, "cannot read an image from a list"),
    (np.zeros((4, 4, 3), np.uint8), {"channels": "hsv"}, ValueError, "channels must be one of rgb, bgr"),
    (np.zeros((4, 4, 3), np.uint8), {"bgr": False, "channels": "bgr"}, ValueError, "contradicts"),
    (str(PHOTO), {"bgr": True}, ValueError, "describe arrays"),
])
def test_what_detect_refuses(tiny, given, kwargs, error, message):
    with pytest.raises(error, match=message):
        WholeImageDetector(tiny).detect(given, **kwargs)


def test_convert_turns_gray_and_alpha_arrays_into_rgb():
    from slidewin.io.images import as_rgb

    gray = np.arange(12, dtype=np.uint8).reshape(3, 4)
    assert as_rgb(gray, convert=True).shape == (3, 4, 3)
    bgra = np.zeros((2, 2, 4), np.uint8)
    bgra[..., 0] = 200
    assert as_rgb(bgra, bgr=True, convert=True)[0, 0].tolist() == [0, 0, 200]


def test_pil_images_of_other_modes_are_converted():
    from PIL import Image

    from slidewin.io.images import as_rgb

    rgba = Image.new("RGBA", (5, 4), (10, 20, 30, 0))
    assert as_rgb(rgba)[0, 0].tolist() == [10, 20, 30] and as_rgb(Image.new("L", (5, 4), 7)).shape == (4, 5, 3)


def test_a_pil_image_is_turned_by_its_exif_orientation_as_the_same_file_is(tmp_path):
    """``Image.open`` keeps a JPEG's pixels as stored; the file path is loaded turned. Both give
    the picture a viewer shows, so one photo gives the same boxes whichever way it is passed."""
    from PIL import Image

    from slidewin.io.images import as_rgb

    stored = np.zeros((10, 20, 3), np.uint8)
    stored[:, :5] = (250, 10, 10)  # a red band on the stored left edge
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to view
    path = tmp_path / "turned.jpg"
    Image.fromarray(stored).save(path, quality=95, exif=exif)
    with Image.open(path) as im:
        assert im.size == (20, 10)  # PIL: as stored
        from_pil = as_rgb(im)
    from_file = as_rgb(path)
    assert from_pil.shape == from_file.shape == (20, 10, 3)
    assert from_pil[:5, :, 0].mean() > 200 and from_pil[-5:, :, 0].mean() < 60  # the band is now on top
    assert np.abs(from_pil.astype(int) - from_file).max() <= 2
    assert as_rgb(Image.fromarray(stored)).shape == (10, 20, 3)  # no EXIF: as it is


@pytest.mark.parametrize("module, name", [("slidewin.runtime.region", "FasterRCNNDetector"),
                                          ("slidewin.pipeline.detector", "ClassifierDetector"),
                                          ("slidewin.pipeline.sliding", "SlidingWindowDetector"),
                                          ("slidewin.pipeline.proposal", "ProposalDetector")])
def test_every_detector_takes_them_through_the_interface(module, name):
    from importlib import import_module

    cls = getattr(import_module(module), name)
    assert Detector in cls.__mro__
    assert getattr(cls.detect, "_accepts_images", False) and getattr(cls.prepare, "_accepts_images", False)


def test_a_sliding_window_detector_detects_in_a_path_and_a_bgr_array_alike(tiny):
    from slidewin.io.images import load_image
    from slidewin.pipeline.config import DetectorConfig
    from slidewin.pipeline.sliding import SlidingWindowDetector

    det = SlidingWindowDetector(tiny, config=DetectorConfig(min_score=0.3))
    expected = det.detect(load_image(PHOTO)).to_records()
    assert expected
    assert det.detect(PHOTO).to_records() == expected
    assert det.detect(cv2.imread(str(PHOTO)), bgr=True).to_records() == expected


def test_classify_takes_the_same_inputs(tiny):
    from PIL import Image

    from slidewin.io.images import load_image

    expected = tiny.classify(load_image(PHOTO), top_k=2)
    assert tiny.classify(PHOTO, top_k=2) == expected
    assert tiny.classify(Image.open(PHOTO), top_k=2) == expected
    assert tiny.classify(cv2.imread(str(PHOTO)), top_k=2, bgr=True) == expected
    with pytest.raises(ImageError):
        tiny.classify(Path(__file__))
