"""Region proposals: the Faster R-CNN exporter, its parity check, and `RegionProposalDetector`.

Fast tests use hand-computed letterbox cases and a hand-built ONNX "detector" that returns fixed
canvas boxes, so the mapping back to the image is checked exactly. The ``slow`` ones export
torchvision's Faster R-CNN with random weights (fixture in conftest.py). Everything is offline.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from slidewin.cli import main
from slidewin.core.detections import Detections
from slidewin.core.detector import Detector, RunStats
from slidewin.pipeline.config import DetectorConfig
from slidewin.errors import ModelError, SlidewinError
from slidewin.core.geometry import letterbox_params
from slidewin.pipeline.factory import build_detector, region_classes
from slidewin.core.contract import ModelKind, ModelMeta, write_metadata
from slidewin.runtime.region import DEFAULT_PAD_RGB, RegionProposalDetector, canvas_to_image, letterbox_image
from slidewin_export.cli import add_export_parser
from slidewin_export.frcnn import check_detection_parity, match_detections

FAKE_LABELS = ("__background__", "person", "bicycle", "car")


# ---------------------------------------------------------------- helpers

def fake_region_model(path: Path, boxes, scores, labels, canvas=(800, 800), batch=1, outputs=("boxes", "scores", "labels"),
                      kind=ModelKind.REGION_PROPOSAL, extra=None) -> Path:
    """A real ONNX file honouring the region-proposal contract that returns fixed canvas boxes."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    consts = {
        "boxes": helper.make_tensor("c_boxes", TensorProto.FLOAT, boxes.shape, boxes.ravel()),
        "scores": helper.make_tensor("c_scores", TensorProto.FLOAT, [len(boxes)], np.asarray(scores, np.float32)),
        "labels": helper.make_tensor("c_labels", TensorProto.INT64, [len(boxes)], np.asarray(labels, np.int64)),
    }
    elem = {"boxes": TensorProto.FLOAT, "scores": TensorProto.FLOAT, "labels": TensorProto.INT64}
    nodes = [helper.make_node("Constant", [], [name], value=consts[name]) for name in outputs]
    x = helper.make_tensor_value_info("image", TensorProto.UINT8, [batch, *canvas, 3])
    ys = [helper.make_tensor_value_info(n, elem[n], [len(boxes), 4] if n == "boxes" else [len(boxes)]) for n in outputs]
    model = helper.make_model(helper.make_graph(nodes, "fake_rcnn", [x], ys),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # onnx 1.23 writes IR 14, which ONNX Runtime 1.31 cannot read
    write_metadata(model, ModelMeta(kind=kind, input_hw=canvas, labels=FAKE_LABELS, label_set="custom",
                                    weights="random", architecture="fake", source_framework="onnx.helper",
                                    extra=extra or {}))
    onnx.save(model, str(path))
    return path


def image_of(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def export_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="slidewin")
    add_export_parser(parser.add_subparsers(dest="command", required=True))
    return parser


def assert_inside(dets: Detections, image_hw):
    h, w = image_hw
    x1, y1, x2, y2 = dets.xyxy.T
    assert np.all((0 <= x1) & (x1 < x2) & (x2 <= w)), dets.xyxy
    assert np.all((0 <= y1) & (y1 < y2) & (y2 <= h)), dets.xyxy


# ---------------------------------------------------------------- letterbox geometry (hand-computed)

# (image_hw, canvas_hw) -> (per-axis scale, pad_xy). 640x480 fills the width (x1.25, 100 px bars top
# and bottom); 300x900 fills the height (x8/9, 300 * 8/9 = 266.67 -> 267 px wide, 266 px left bar).
LETTERBOX_CASES = [
    ((480, 640), (800, 800), (1.25, 1.25), (0, 100)),
    ((900, 300), (800, 800), (267 / 300, 800 / 900), (266, 0)),
    ((800, 800), (800, 800), (1.0, 1.0), (0, 0)),
    ((50, 100), (320, 320), (3.2, 3.2), (0, 80)),      # smaller than the canvas: scaled up
    ((1000, 1000), (320, 320), (0.32, 0.32), (0, 0)),
]


@pytest.mark.parametrize("image_hw, canvas_hw, scale_xy, pad_xy", LETTERBOX_CASES)
def test_letterbox_image_table(image_hw, canvas_hw, scale_xy, pad_xy):
    image = image_of(*image_hw)
    canvas, got_scale, got_pad = letterbox_image(image, canvas_hw, (1, 2, 3))
    assert canvas.shape == (*canvas_hw, 3) and canvas.dtype == np.uint8
    np.testing.assert_allclose(got_scale, scale_xy, rtol=1e-12)
    assert got_pad == pad_xy
    assert letterbox_params(image_hw, canvas_hw)[1:] == pad_xy
    nw, nh = round(image_hw[1] * scale_xy[0]), round(image_hw[0] * scale_xy[1])
    px, py = pad_xy
    inside = np.zeros(canvas_hw, bool)
    inside[py:py + nh, px:px + nw] = True
    assert np.all(canvas[~inside] == (1, 2, 3))  # the bars are the pad colour, nothing else
    if (nh, nw) == image_hw:
        assert np.array_equal(canvas[inside].reshape(nh, nw, 3), image)


# canvas box -> expected box in the original image (xyxy).
MAPPING_CASES = [
    # 640x480 in 800x800: x / 1.25, (y - 100) / 1.25
    ((480, 640), [100, 200, 500, 600], [80, 80, 400, 400]),
    ((480, 640), [0, 100, 800, 700], [0, 0, 640, 480]),          # exactly the image area
    ((480, 640), [-20, 50, 900, 750], [0, 0, 640, 480]),         # overshoots the bars: clipped
    ((480, 640), [10, 0, 90, 100], [8, 0, 72, 0]),               # wholly on the top bar: empty
    # 300x900 in 800x800: (x - 266) / 0.89, y * 9/8
    ((900, 300), [355, 80, 444, 720], [100, 90, 200, 810]),
    ((900, 300), [266, 0, 533, 800], [0, 0, 300, 900]),
    ((900, 300), [0, 0, 200, 800], [0, 0, 0, 900]),              # wholly on the left bar: empty
]


@pytest.mark.parametrize("image_hw, canvas_box, expected", MAPPING_CASES)
def test_canvas_to_image_table(image_hw, canvas_box, expected):
    _, scale_xy, pad_xy = letterbox_image(image_of(*image_hw), (800, 800))
    got = canvas_to_image(np.array([canvas_box], np.float32), scale_xy, pad_xy, image_hw)
    assert got.dtype == np.float32 and got.shape == (1, 4)
    np.testing.assert_allclose(got[0], expected, atol=1e-4)


def test_canvas_to_image_inverts_the_letterbox():
    """A box drawn on the image, letterboxed, and mapped back lands where it was drawn."""
    rng = np.random.default_rng(5)
    for image_hw in [(480, 640), (900, 300), (333, 777), (1200, 90)]:
        _, scale_xy, pad_xy = letterbox_image(image_of(*image_hw), (800, 800))
        h, w = image_hw
        box = np.sort(rng.uniform(0, [w, h, w, h], size=(10, 4)).reshape(10, 2, 2), axis=1).reshape(10, 4)
        on_canvas = box * np.tile(scale_xy, 2) + np.tile(pad_xy, 2)
        np.testing.assert_allclose(canvas_to_image(on_canvas, scale_xy, pad_xy, image_hw), box, atol=1e-3)


# ---------------------------------------------------------------- the runtime on a hand-built model

CANVAS_BOXES = [
    [100, 200, 500, 600],   # -> [80, 80, 400, 400] on a 640x480 image
    [10, 0, 90, 100],       # on the top bar of a 640x480 image: dropped there
    [355, 80, 444, 720],    # -> [100, 90, 200, 810] on a 300x900 image
    [0, 0, 800, 800],       # the whole canvas: clipped to the whole image
]
CANVAS_SCORES = [0.9, 0.8, 0.7, 0.3]
CANVAS_LABELS = [1, 2, 3, 1]


@pytest.fixture(scope="module")
def fake_onnx(tmp_path_factory) -> Path:
    return fake_region_model(tmp_path_factory.mktemp("fake") / "fake.onnx", CANVAS_BOXES, CANVAS_SCORES, CANVAS_LABELS)


def test_detector_maps_boxes_back_exactly(fake_onnx):
    det = RegionProposalDetector(fake_onnx, min_score=0.0)
    dets = det.detect(image_of(480, 640))
    stats = det.last_stats
    assert isinstance(stats, RunStats) and stats.windows == 4 and stats.candidates == 4
    assert set(stats.seconds) == {"letterbox", "inference", "postprocess"}
    assert dets.xyxy.dtype == np.float32 and dets.scores.dtype == np.float32 and dets.class_ids.dtype == np.int64
    assert dets.labels == FAKE_LABELS
    # the box on the bar is gone; the rest come back by descending score
    np.testing.assert_allclose(dets.xyxy, [[80, 80, 400, 400], [284, 0, 355.2, 480], [0, 0, 640, 480]], atol=1e-4)
    np.testing.assert_allclose(dets.scores, [0.9, 0.7, 0.3])
    assert dets.label_names == ["person", "car", "person"]

    dets = det.detect(image_of(900, 300))  # now the second box lies on the left bar
    np.testing.assert_allclose(dets.xyxy, [[0, 225, 234 / 0.89, 675], [100, 90, 200, 810], [0, 0, 300, 900]], atol=1e-4)
    np.testing.assert_allclose(dets.scores, [0.9, 0.7, 0.3])
    assert_inside(dets, (900, 300))


@pytest.mark.parametrize("min_score, classes, expected_scores", [
    (0.5, None, [0.9, 0.8, 0.7]),
    (0.75, None, [0.9, 0.8]),
    (0.0, ["person"], [0.9, 0.3]),
    (0.0, ["car", "bicycle"], [0.8, 0.7]),
    (0.95, None, []),
])
def test_detector_filters_by_score_and_class(fake_onnx, min_score, classes, expected_scores):
    dets = RegionProposalDetector(fake_onnx, min_score=min_score, classes=classes).detect(image_of(800, 800))
    np.testing.assert_allclose(dets.scores, np.array(expected_scores, np.float32))
    assert dets.xyxy.shape == (len(expected_scores), 4)  # empty keeps its dtypes and shapes
    assert dets.class_ids.dtype == np.int64


def test_detector_accepts_an_open_session(fake_onnx):
    from slidewin.runtime.sessions import CPU, open_session

    det = RegionProposalDetector(fake_onnx, min_score=0, session=open_session(fake_onnx, CPU))
    assert isinstance(det, Detector) and len(det.detect(image_of(64, 64))) == 4


def test_detector_uses_the_pad_colour_from_metadata(tmp_path, monkeypatch):
    p = fake_region_model(tmp_path / "pad.onnx", CANVAS_BOXES, CANVAS_SCORES, CANVAS_LABELS,
                          extra={"letterbox_pad_rgb": "0,0,255"})
    assert RegionProposalDetector(p).pad_rgb == (0, 0, 255)
    assert RegionProposalDetector(fake_region_model(tmp_path / "d.onnx", [], [], [])).pad_rgb == DEFAULT_PAD_RGB
    bad = fake_region_model(tmp_path / "bad.onnx", [], [], [], extra={"letterbox_pad_rgb": "red"})
    with pytest.raises(ModelError, match="letterbox_pad_rgb"):
        RegionProposalDetector(bad)


def test_detector_with_no_boxes_returns_empty(tmp_path):
    det = RegionProposalDetector(fake_region_model(tmp_path / "e.onnx", [], [], []))
    dets, stats = det.detect(image_of(100, 300)), det.last_stats
    assert len(dets) == 0 and dets.xyxy.shape == (0, 4) and stats.windows == 0


@pytest.mark.parametrize("case, needle", [
    ("batch", "batch 1"),
    ("outputs", "lack labels"),
    ("classifier", "not a region-proposal model"),
    ("class", "unknown class 'unicorn'"),
])
def test_detector_rejects_what_it_cannot_run(tmp_path, case, needle):
    p = tmp_path / "m.onnx"
    kwargs = {}
    if case == "batch":
        fake_region_model(p, [], [], [], batch=2)
    elif case == "outputs":
        fake_region_model(p, [], [], [], outputs=("boxes", "scores"))
    elif case == "classifier":
        fake_region_model(p, [], [], [], kind=ModelKind.CLASSIFIER)
    else:
        fake_region_model(p, [], [], [])
        kwargs = {"classes": ["person", "unicorn"]}
    with pytest.raises(SlidewinError, match=needle):
        RegionProposalDetector(p, **kwargs)


@pytest.mark.parametrize("spec, expected", [
    (None, None), ("coco", None), ("all", None), ("ALL", None), ("", None),
    ("person", ["person"]), ("person, traffic light ,dog", ["person", "traffic light", "dog"]),
    (["car", "bus"], ["car", "bus"]),
])
def test_region_classes_table(spec, expected):
    assert region_classes(spec) == expected


def test_build_detector_dispatches_on_metadata(fake_onnx):
    det = build_detector(fake_onnx, config=DetectorConfig(min_score=0.75), classes="person,car")
    assert isinstance(det, RegionProposalDetector) and det.min_score == 0.75
    assert det.class_filter.tolist() == [1, 3]
    assert build_detector(fake_onnx, classes="coco").class_filter is None


def test_cli_detect_on_a_region_model(fake_onnx, tmp_path, capsys):
    image = tmp_path / "wide.png"
    cv2.imwrite(str(image), np.full((480, 640, 3), 90, np.uint8))
    assert main(["detect", str(image), "--model", str(fake_onnx), "--json", "-", "--min-score", "0.5"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["windows"] == 4 and set(record["seconds"]) == {"decode", "letterbox", "inference", "postprocess"}
    assert [d["xyxy"] for d in record["detections"]] == [[80.0, 80.0, 400.0, 400.0], [284.0, 0.0, 355.2, 480.0]]
    assert [d["label"] for d in record["detections"]] == ["person", "car"]


def test_runtime_imports_no_training_framework():
    code = ("import sys, slidewin.runtime.region, slidewin.pipeline.factory; "
            "print([m for m in ('tensorflow', 'torch', 'torchvision', 'keras') if m in sys.modules])")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "[]"


# ---------------------------------------------------------------- the parity check can fail

def dets_fixture(n=100, seed=0):
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 700, (n, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(10, 100, (n, 2))], axis=1).astype(np.float32)
    scores = np.sort(rng.uniform(0.05, 1, n))[::-1].astype(np.float32)
    return boxes, scores, rng.integers(1, 91, n)


def test_parity_passes_within_tolerance():
    b, s, l = dets_fixture()
    p = match_detections((b, s, l), (b + 0.004, s - 3e-6, l))
    assert (p.detections, p.unmatched) == (100, 0)
    assert p.max_box_diff_px == pytest.approx(0.004, abs=1e-4) and p.max_score_diff == pytest.approx(3e-6, abs=1e-6)
    # a different order (a tie broken the other way) is not a difference
    order = np.random.default_rng(1).permutation(100)
    assert match_detections((b, s, l), (b[order], s[order], l[order])).unmatched == 0


@pytest.mark.parametrize("change, unmatched", [
    ("shift-one-box", 2),     # 0.5 px off: neither side finds its partner
    ("relabel-one", 2),
    ("score-off", 2),
    ("drop-one", 1),
    ("extra-one", 1),
    ("all-shifted", 200),
])
def test_parity_counts_every_difference(change, unmatched):
    b, s, l = dets_fixture()
    gb, gs, gl = b.copy(), s.copy(), l.copy()
    if change == "shift-one-box":
        gb[7, 0] += 0.5
    elif change == "relabel-one":
        gl[3] = gl[3] % 90 + 1
    elif change == "score-off":
        gs[50] += 1e-3
    elif change == "drop-one":
        gb, gs, gl = gb[:-1], gs[:-1], gl[:-1]
    elif change == "extra-one":
        gb, gs, gl = np.vstack([gb, [[1, 2, 3, 4]]]), np.append(gs, 0.06), np.append(gl, 1)
    else:
        gb = gb + 1.0
    assert match_detections((b, s, l), (gb, gs, gl)).unmatched == unmatched


def test_parity_check_raises_past_the_limits(capsys):
    b, s, l = dets_fixture()
    # one flipped NMS decision (a box kept by one side only, another pushed out of its top 100) is tolerated ...
    flipped = (np.vstack([[[5, 5, 50, 50]], b[:-1]]), np.append(0.99, s[:-1]), np.append(1, l[:-1]))
    p = check_detection_parity([((b, s, l), (b, s, l)), ((b, s, l), flipped)], Path("m.onnx"))
    assert (p.detections, p.unmatched) == (200, 2)
    assert "parity: detections torch/ORT per image 100/100, 100/100" in capsys.readouterr().out
    # ... two in one image are not, nor a systematic shift, nor a check that compared nothing
    two = (np.vstack([[[5, 5, 50, 50], [6, 6, 60, 60]], b[:-2]]), np.append([0.99, 0.98], s[:-2]), np.append([1, 1], l[:-2]))
    with pytest.raises(SlidewinError, match="4 detections of torch's 100 and ORT's 100 have no partner"):
        check_detection_parity([((b, s, l), two)], Path("m.onnx"))
    with pytest.raises(SlidewinError, match="200 detections of torch's 100 and ORT's 100 have no partner"):
        check_detection_parity([((b, s, l), (b + 0.5, s, l))], Path("m.onnx"))
    with pytest.raises(SlidewinError, match="parity check failed: 400 detections"):
        check_detection_parity([((b, s, l), (b, s, l)), ((b, s, l), (b, s, l))], Path("m.onnx"), box_atol=-1)
    empty = (np.zeros((0, 4)), np.zeros(0), np.zeros(0, np.int64))
    with pytest.raises(SlidewinError, match="nothing to compare"):
        check_detection_parity([(empty, empty)], Path("m.onnx"))


# ---------------------------------------------------------------- exporter: options and weights (fast-ish)

def test_cli_parses_frcnn():
    a = export_parser().parse_args(["export", "frcnn-resnet50-fpn-v2", "--weights", "coco", "--out", "f.onnx"])
    assert (a.weights, a.canvas, a.out, a.opset) == ("coco", 800, Path("f.onnx"), 17) and callable(a.func)
    a = export_parser().parse_args(["export", "frcnn-resnet50-fpn-v2", "--weights", "none", "--canvas", "512",
                                    "--out", "f.onnx"])
    assert a.canvas == 512
    with pytest.raises(SystemExit):
        export_parser().parse_args(["export", "frcnn-resnet50-fpn-v2", "--out", "f.onnx"])  # --weights required


@pytest.mark.parametrize("canvas", [500, 96, 4096])
def test_bad_canvas_is_refused_before_any_work(tmp_path, canvas):
    from slidewin_export.frcnn import export_frcnn

    with pytest.raises(SlidewinError, match="multiple of 32"):
        export_frcnn("none", tmp_path / "f.onnx", canvas=canvas)


@pytest.fixture(scope="module")
def torchvision():
    pytest.importorskip("torch")
    return pytest.importorskip("torchvision")


def test_coco_weights_offline_is_one_clear_line(torchvision, monkeypatch, tmp_path):
    import urllib.error

    import torchvision.models._api as api

    from slidewin_export.frcnn import COCO_WEIGHTS_FILE

    def no_network(*args, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    monkeypatch.setattr(api, "load_state_dict_from_url", no_network)
    args = export_parser().parse_args(["export", "frcnn-resnet50-fpn-v2", "--weights", "coco",
                                       "--out", str(tmp_path / "f.onnx")])
    with pytest.raises(SlidewinError) as e:
        args.func(args)
    msg = str(e.value)
    assert "\n" not in msg
    for needle in (COCO_WEIGHTS_FILE, "--weights PATH", str(tmp_path / "th" / "hub" / "checkpoints"),
                   "Name or service not known"):
        assert needle in msg
    assert not (tmp_path / "f.onnx").exists()


def test_weights_from_a_state_dict_file(torchvision, tmp_path):
    import torch

    from slidewin_export.frcnn import build_frcnn

    model, origin = build_frcnn("none", canvas=320, seed=3)
    path = tmp_path / "mine.pth"
    torch.save({"model": model.detector.state_dict(), "epoch": 7}, path)  # a reference-script checkpoint
    loaded, origin = build_frcnn(str(path), canvas=320)
    assert origin.startswith("sha256:") and len(origin) == 7 + 64
    a, b = model.detector.state_dict(), loaded.detector.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)

    torch.save({"backbone.body.conv1.weight": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(SlidewinError, match="not a fasterrcnn_resnet50_fpn_v2 state_dict with 91 COCO classes"):
        build_frcnn(str(tmp_path / "other.pth"))
    with pytest.raises(SlidewinError, match="weights file not found"):
        build_frcnn(str(tmp_path / "missing.pth"))
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(SlidewinError, match="cannot read weights"):
        build_frcnn(str(tmp_path / "junk.pth"))


# ---------------------------------------------------------------- the exported network (slow)

def io_signature(path: Path):
    m = onnx.load(str(path), load_external_data=False)

    def sig(vi):
        t = vi.type.tensor_type
        return vi.name, t.elem_type, [d.dim_param or d.dim_value for d in t.shape.dim]

    return [sig(i) for i in m.graph.input], [sig(o) for o in m.graph.output], m


@pytest.mark.slow
def test_frcnn_contract_and_metadata(frcnn_random_onnx):
    from torchvision.models.detection import FasterRCNN_ResNet50_FPN_V2_Weights

    inputs, outputs, model = io_signature(frcnn_random_onnx)
    assert inputs == [("image", TensorProto.UINT8, [1, 800, 800, 3])]
    assert outputs == [("boxes", TensorProto.FLOAT, ["detections", 4]), ("scores", TensorProto.FLOAT, ["detections"]),
                       ("labels", TensorProto.INT64, ["detections"])]
    meta = ModelMeta.from_props({p.key: p.value for p in model.metadata_props})
    assert meta.kind is ModelKind.REGION_PROPOSAL and meta.is_random and meta.input_hw == (800, 800)
    assert meta.labels == tuple(FasterRCNN_ResNet50_FPN_V2_Weights.COCO_V1.meta["categories"])
    assert len(meta.labels) == 91 and meta.labels[:2] == ("__background__", "person") and meta.labels[12] == "N/A"
    assert (meta.label_set, meta.architecture) == ("coco", "fasterrcnn_resnet50_fpn_v2")
    assert meta.source_framework.startswith("torch 2.") and "torchvision 0." in meta.source_framework
    assert meta.extra["letterbox"] == "center" and meta.extra["box_score_thresh"] == "0.05"
    report = json.loads(frcnn_random_onnx.with_suffix(".report.json").read_text())
    assert report["parity_images"] >= 1 and report["max_abs_diff"] <= 1e-4


@pytest.mark.slow
@pytest.mark.parametrize("image_hw", [(300, 1000), (900, 250)], ids=["wide", "tall"])
def test_frcnn_detector_on_non_square_images(frcnn_random_onnx, image_hw):
    det = RegionProposalDetector(frcnn_random_onnx, min_score=0.0, device="cpu")
    dets, stats = det.detect(image_of(*image_hw, seed=11)), det.last_stats
    assert dets.xyxy.dtype == np.float32 and dets.scores.dtype == np.float32 and dets.class_ids.dtype == np.int64
    assert dets.labels == det.meta.labels and len(dets.labels) == 91
    assert 0 < len(dets) <= 100  # random weights still fire (up to 100 per image)
    assert stats.windows == 1000 and stats.unit == "proposals"  # the RPN's test-time top-N
    assert_inside(dets, image_hw)
    assert np.all(np.diff(dets.scores) <= 0) and np.all(dets.scores >= 0.05)


@pytest.mark.slow
def test_frcnn_parity_on_a_new_photo(frcnn_random_onnx):
    """ORT through the runtime's own letterbox vs torch rebuilt from the same seed, on an image
    the exporter's check never saw (astronaut, padded to a 4:3 shape so the bars show)."""
    skdata = pytest.importorskip("skimage.data")
    from slidewin.runtime.sessions import CPU, open_session
    from slidewin_export.frcnn import build_frcnn, torch_detections

    photo = cv2.resize(skdata.astronaut(), (640, 480), interpolation=cv2.INTER_AREA)
    canvas = letterbox_image(photo, (800, 800), DEFAULT_PAD_RGB)[0][None]
    got = open_session(frcnn_random_onnx, CPU).run(["boxes", "scores", "labels"], {"image": canvas})
    ref = torch_detections(build_frcnn("none", canvas=800, seed=0)[0], canvas)
    # Raises past the exporter's limits. Here one NMS decision flips (a pair at IoU 0.5004): 2 unmatched.
    p = check_detection_parity([(ref, tuple(got))], frcnn_random_onnx)
    assert p.detections > 0 and p.unmatched <= 2 and p.max_box_diff_px < 0.1


@pytest.mark.slow
def test_frcnn_through_slidewin_detect(frcnn_random_onnx, tmp_path, capsys, save_rgb):
    image = save_rgb(tmp_path / "tall.jpg", image_of(700, 420, seed=2))
    out = tmp_path / "drawn.jpg"
    code = main(["detect", str(image), "--model", str(frcnn_random_onnx), "--json", "-", "--min-score", "0.1",
                 "--out", str(out), "--device", "cpu"])
    assert code == 0
    record = json.loads(capsys.readouterr().out)
    assert (record["width"], record["height"]) == (420, 700) and record["windows"] == 1000  # RPN proposals
    model = onnx.load(str(frcnn_random_onnx), load_external_data=False)
    labels = ModelMeta.from_props({p.key: p.value for p in model.metadata_props}).labels
    for d in record["detections"]:
        x1, y1, x2, y2 = d["xyxy"]
        assert 0 <= x1 < x2 <= 420 and 0 <= y1 < y2 <= 700 and d["score"] >= 0.1
        assert d["label"] == labels[d["class_id"]]
    assert cv2.imread(str(out)).shape == (700, 420, 3)


@pytest.mark.slow
def test_cli_exports_frcnn_at_a_smaller_canvas(torchvision, tmp_path, capsys):
    out = tmp_path / "f.onnx"
    args = export_parser().parse_args(["export", "frcnn-resnet50-fpn-v2", "--weights", "none", "--canvas", "320",
                                       "--out", str(out)])
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert "[export] parity: detections torch/ORT" in printed and f"wrote {out}" in printed
    assert [p.name for p in tmp_path.iterdir()] == ["f.onnx"]  # no temp file left behind
    det = RegionProposalDetector(out, min_score=0.0)
    assert det.input_hw == (320, 320)
    assert_inside(det.detect(image_of(200, 500)), (200, 500))
