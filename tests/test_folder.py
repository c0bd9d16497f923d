"""Folder runs (`slidewin detect DIR --out-dir OUT`): one whole line per image, whatever happens.

Also the dense-mode tiling that keeps memory bounded on huge levels: tiled maps equal the
untiled pass. The tiny models make these tests fast; the model's output does not matter here.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper
from test_cli import tiny_model

from slidewin.batch import SOME_FAILED_EXIT, collect_inputs, drawn_path, run_folder
from slidewin.cli import main
from slidewin.dense import context_margin, plan_tiles, tile_spans
from slidewin.model_meta import ModelKind, ModelMeta, write_metadata

ROOT = Path(__file__).resolve().parents[1]
TIMING = ("seconds",)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return tiny_model(tmp_path_factory.mktemp("tiny") / "tiny.onnx", ["N", 32, 32, 3])


def photo(path: Path, seed: int, hw=(120, 160)) -> Path:
    rng = np.random.default_rng(seed)
    img = cv2.GaussianBlur(rng.integers(0, 255, (*hw, 3), dtype=np.uint8), (0, 0), 3)
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), img)
    return path


def make_folder(root: Path) -> dict[str, list[Path]]:
    """Good and bad images, a nested folder, odd names, and files a walk must ignore."""
    good = [photo(root / "a.jpg", 1), photo(root / "nested" / "deeper" / "b.JPG", 2),
            photo(root / "nested" / "c.png", 3), photo(root / "one.png", 4, hw=(1, 1))]
    png_as_jpg = root / "nested" / "really-a-png.jpg"
    png_as_jpg.write_bytes(cv2.imencode(".png", np.full((40, 50, 3), 77, np.uint8))[1].tobytes())
    good.append(png_as_jpg)
    jpeg = (root / "a.jpg").read_bytes()
    bad = {
        "text.png": b"not an image at all\n" * 10,
        "empty.jpg": b"",
        "nested/cut.jpg": jpeg[: len(jpeg) // 2],
    }
    for name, data in bad.items():
        (root / name).write_bytes(data)
    cv2.imwrite(str(root / "nested" / "rgba.png"), np.zeros((20, 20, 4), np.uint8))
    (root / "notes.txt").write_text("ignored: not an image suffix")
    (root / ".hidden.jpg").write_bytes(jpeg)
    return {"good": good, "bad": [root / n for n in bad] + [root / "nested" / "rgba.png"]}


def records(out: Path) -> list[dict]:
    text = (out / "results.jsonl").read_text()
    assert text == "" or text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


def strip_timing(recs: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING} for r in recs]


def detect(*args) -> list[str]:
    return ["detect", *map(str, args), "--window", "48", "--min-score", "0.3"]


# --- folder runs -----------------------------------------------------------------------------

def test_folder_run_records_every_image_and_says_some_failed(tiny, tmp_path, capsys):
    files = make_folder(tmp_path / "in")
    out = tmp_path / "out"
    code = main(detect(tmp_path / "in", "--model", tiny, "--out-dir", out, "--draw"))
    assert code == SOME_FAILED_EXIT
    recs = records(out)
    by_image = {Path(r["image"]).resolve(): r for r in recs}
    assert len(recs) == len(by_image) == len(files["good"]) + len(files["bad"])
    for p in files["good"]:
        r = by_image[p.resolve()]
        assert "error" not in r and r["width"] >= 1 and r["windows"] >= 1, r
        assert drawn_path(out, tmp_path / "in", p).is_file()
    for p in files["bad"]:
        r = by_image[p.resolve()]
        assert r["detections"] == [] and r["error"] and "\n" not in r["error"], r
    assert "alpha" in by_image[(tmp_path / "in" / "nested" / "rgba.png").resolve()]["error"]
    # Sorted by path components, the same order on every run.
    rel = [Path(r["image"]).relative_to(tmp_path / "in").parts for r in recs]
    assert rel == sorted(rel)
    out_text, err = capsys.readouterr()
    assert f"{len(files['good'])} ok, {len(files['bad'])} failed" in out_text and "results.jsonl" in out_text
    assert "Traceback" not in err


def test_glob_of_good_images_exits_zero_and_matches_single_image_json(tiny, tmp_path, capsys):
    files = make_folder(tmp_path / "in")
    out = tmp_path / "out"
    assert main(detect(str(tmp_path / "in" / "**" / "[abc].*"), "--model", tiny, "--out-dir", out)) == 0
    recs = records(out)
    assert sorted(Path(r["image"]).name for r in recs) == ["a.jpg", "b.JPG", "c.png"]
    # A folder record is the --json record of that image (timings aside).
    single = tmp_path / "a.json"
    assert main(detect(files["good"][0], "--model", tiny, "--json", single)) == 0
    assert strip_timing([json.loads(single.read_text())]) == strip_timing([recs[0]])
    capsys.readouterr()


def test_existing_results_need_resume(tiny, tmp_path, capsys):
    photo(tmp_path / "in" / "a.jpg", 1)
    out = tmp_path / "out"
    assert main(detect(tmp_path / "in", "--model", tiny, "--out-dir", out)) == 0
    capsys.readouterr()
    code = main(detect(tmp_path / "in", "--model", tiny, "--out-dir", out))
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and len(err) == 1 and "--resume" in err[0], err
    assert len(records(out)) == 1


@pytest.mark.parametrize("argv, needle", [
    (["--out-dir", "O", "--json", "x.json"], "--out and --json are for one image"),
    ([], "need --out-dir"),
])
def test_folder_option_mistakes_are_one_line(tiny, tmp_path, capsys, argv, needle):
    photo(tmp_path / "in" / "a.jpg", 1)
    code = main(detect(tmp_path / "in", "--model", tiny, *[a.replace("O", str(tmp_path / "o")) for a in argv]))
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and len(err) == 1 and needle in err[0], err


def test_resume_truncates_a_partial_last_line_and_redoes_that_image(tiny, tmp_path, capsys):
    make_folder(tmp_path / "in")
    full, out = tmp_path / "full", tmp_path / "out"
    main(detect(tmp_path / "in", "--model", tiny, "--out-dir", full))
    lines = (full / "results.jsonl").read_bytes().splitlines(keepends=True)
    # A crash in the middle of the 4th write: three whole lines and half of the fourth.
    out.mkdir()
    (out / "results.jsonl").write_bytes(b"".join(lines[:3]) + lines[3][: len(lines[3]) // 2])
    capsys.readouterr()
    assert main(detect(tmp_path / "in", "--model", tiny, "--out-dir", out, "--resume")) == SOME_FAILED_EXIT
    err = capsys.readouterr().err
    assert "partial last line" in err
    assert strip_timing(records(out)) == strip_timing(records(full))


def test_resume_skips_recorded_images_and_picks_up_new_ones(tiny, tmp_path, capsys):
    photo(tmp_path / "in" / "a.jpg", 1)
    photo(tmp_path / "in" / "b.jpg", 2)
    out = tmp_path / "out"
    assert main(detect(tmp_path / "in", "--model", tiny, "--out-dir", out)) == 0
    first = records(out)
    (tmp_path / "in" / "a.jpg").write_bytes(b"corrupted after it was done")  # not looked at again
    photo(tmp_path / "in" / "c.jpg", 3)
    capsys.readouterr()
    assert main(detect(tmp_path / "in", "--model", tiny, "--out-dir", out, "--resume")) == 0
    assert "1 this run, 2 recorded earlier" in capsys.readouterr().out
    recs = records(out)
    assert recs[:2] == first and len(recs) == 3 and recs[2]["image"].endswith("c.jpg")


def test_ctrl_c_keeps_whole_lines_and_says_how_to_resume(tiny, tmp_path, capsys, monkeypatch):
    from slidewin.detector import SlidingWindowDetector

    for i in range(5):
        photo(tmp_path / "in" / f"{i}.jpg", i)
    out = tmp_path / "out"
    real_run, calls = SlidingWindowDetector.run, []

    def run(self, image):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_run(self, image)

    monkeypatch.setattr(SlidingWindowDetector, "run", run)
    assert main(detect(tmp_path / "in", "--model", tiny, "--out-dir", out)) == 130
    err = capsys.readouterr().err
    assert "--resume" in err and "interrupted" in err
    assert len(records(out)) == 2
    monkeypatch.setattr(SlidingWindowDetector, "run", real_run)
    assert main(detect(tmp_path / "in", "--model", tiny, "--out-dir", out, "--resume")) == 0
    assert [Path(r["image"]).name for r in records(out)] == [f"{i}.jpg" for i in range(5)]


def test_kill_9_mid_run_then_resume_gives_every_image_once(tiny, tmp_path, capsys):
    """A real process killed with SIGKILL while it writes, then resumed."""
    for i in range(16):
        photo(tmp_path / "in" / f"{i:02d}.jpg", i, hw=(240, 320))
    out, ref = tmp_path / "out", tmp_path / "ref"
    argv = detect(tmp_path / "in", "--model", tiny, "--out-dir", out) + ["--window", "32", "--stride", "8"]
    proc = subprocess.Popen([sys.executable, "-m", "slidewin.cli", *argv], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    results = out / "results.jsonl"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            if results.exists() and results.read_bytes().count(b"\n") >= 3:
                break
            time.sleep(0.005)
        killed = proc.poll() is None
        os.kill(proc.pid, signal.SIGKILL) if killed else None
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    assert killed, "the run finished before it could be killed: make it longer"
    done_before = results.read_bytes().count(b"\n")
    assert 3 <= done_before < 16
    capsys.readouterr()
    assert main(argv + ["--resume"]) == 0
    assert main(detect(tmp_path / "in", "--model", tiny, "--out-dir", ref) + ["--window", "32", "--stride", "8"]) == 0
    got, want = records(out), records(ref)
    assert len({r["image"] for r in got}) == len(got) == 16
    assert strip_timing(got) == strip_timing(want)


def test_max_pixels_refuses_big_images_in_one_line_and_in_folders(tiny, tmp_path, capsys):
    img = photo(tmp_path / "in" / "a.jpg", 1)  # 160 x 120 = 19200 pixels
    code = main(detect(img, "--model", tiny, "--max-pixels", "10000"))
    err = [line for line in capsys.readouterr().err.strip().splitlines() if not line.startswith("note:")]
    assert code != 0 and len(err) == 1 and "too large" in err[0] and "10,000" in err[0]
    photo(tmp_path / "in" / "small.jpg", 2, hw=(50, 60))
    assert main(detect(tmp_path / "in", "--model", tiny, "--out-dir", tmp_path / "o", "--max-pixels", "10000")) == 3
    errors = {Path(r["image"]).name: r.get("error") for r in records(tmp_path / "o")}
    assert "too large" in errors["a.jpg"] and errors["small.jpg"] is None


def test_prefetch_and_inline_decoding_give_the_same_records(tiny, tmp_path):
    from slidewin.loading import build_detector

    make_folder(tmp_path / "in")
    root, inputs = collect_inputs([tmp_path / "in"])
    detector = build_detector(tiny)
    got = {}
    for prefetch in (0, 3):
        out = tmp_path / f"p{prefetch}"
        s = run_folder(detector, inputs, out, tiny, root=root, prefetch=prefetch, progress=False)
        assert (s.ok, s.failed, s.total) == (5, 4, 9) and s.exit_code == SOME_FAILED_EXIT
        got[prefetch] = strip_timing(records(out))
    assert got[0] == got[3]


def test_collect_inputs_skips_the_output_folder_and_hidden_files(tmp_path):
    photo(tmp_path / "a.jpg", 1)
    photo(tmp_path / "out" / "drawn" / "a.jpg", 1)
    photo(tmp_path / ".cache" / "x.jpg", 1)
    root, files = collect_inputs([tmp_path], exclude=tmp_path / "out")
    assert root == tmp_path and files == [tmp_path / "a.jpg"]


# --- dense tiling ----------------------------------------------------------------------------

@pytest.mark.parametrize("length, count, margin, spans", [
    (544, 1, 0, [(0, 11, 0, 544)]),                                         # one pass: no margins
    (544, 3, 0, [(0, 4, 0, 320), (4, 8, 128, 448), (8, 11, 224, 544)]),     # evenly shared, one extent
    (544, 3, 40, [(0, 4, 0, 448), (4, 8, 64, 512), (8, 11, 96, 544)]),      # margin rounded up to 64
    (544, 5, 0, [(0, 3, 0, 288), (3, 6, 96, 384), (6, 9, 192, 480), (9, 11, 256, 544)]),  # 3 a tile: 4 tiles
    (320, 9, 500, [(0, 1, 0, 320), (1, 2, 0, 320), (2, 3, 0, 320), (3, 4, 0, 320)]),     # 1 cell each
])
def test_tile_spans_table(length, count, margin, spans):
    assert tile_spans(length, 224, 32, count, margin) == spans


@settings(max_examples=200, deadline=None)
@given(cells=st.integers(1, 200), window=st.sampled_from([32, 64, 224]), stride=st.sampled_from([8, 16, 32]),
       count=st.integers(1, 50), margin=st.integers(0, 600))
def test_tile_spans_compute_every_cell_once_on_the_grid(cells, window, stride, count, margin):
    length = window + (cells - 1) * stride
    spans = tile_spans(length, window, stride, count, margin)
    covered = [c for c0, c1, _, _ in spans for c in range(c0, c1)]
    assert covered == list(range(cells))                                  # each cell exactly once, in order
    assert len({p1 - p0 for _, _, p0, p1 in spans}) == 1                   # one shape for every pass
    assert len(spans) <= count
    m = stride * -(-margin // stride)
    for c0, c1, p0, p1 in spans:
        assert p0 % stride == 0 and (p1 - p0 - window) % stride == 0 and 0 <= p0 < p1 <= length
        assert p0 <= max(0, c0 * stride - m) and p1 >= min(length, (c1 - 1) * stride + window + m)  # context


@settings(max_examples=100, deadline=None)
@given(hw=st.tuples(st.integers(0, 150), st.integers(0, 150)), max_side=st.integers(64, 3000),
       margin=st.sampled_from([0, 32, 448]))
def test_plan_tiles_keeps_each_pass_within_the_pixel_budget(hw, max_side, margin):
    h, w = 224 + 32 * hw[0], 224 + 32 * hw[1]
    rows, cols = plan_tiles((h, w), (224, 224), 32, max_side ** 2, (margin, margin))
    ey, ex = rows[0][3] - rows[0][2], cols[0][3] - cols[0][2]
    if h * w <= max_side ** 2:
        assert (rows, cols) == ([(0, hw[0] + 1, 0, h)], [(0, hw[1] + 1, 0, w)])
    else:  # within the budget, or as small as a tile can be (one cell and its margins)
        m = -(-margin // 32) * 32
        smallest = min(h, 224 + 2 * m) * min(w, 224 + 2 * m)
        assert ey * ex <= max(max_side ** 2, smallest)


def test_plan_tiles_prefers_few_large_tiles():
    # EfficientNet-Lite0 (448 px margins) on a 2240 px level with 2048^2-pixel passes: three
    # 2240 x 1792 strips (12.0 Mpx computed) beat a 3 x 3 grid of 1792^2 tiles (28.9 Mpx).
    spans = plan_tiles((2240, 2240), (224, 224), 32, 2048 ** 2, (448, 448))
    assert sorted(len(s) for s in spans) == [1, 3]
    assert sorted(s[0][3] - s[0][2] for s in spans) == [1792, 2240]
    # A budget below one tile (a cell and its margins): the smallest tiles, not an error.
    rows, cols = plan_tiles((352, 1376), (224, 224), 32, 600 ** 2, (448, 448))
    assert rows == [(0, 5, 0, 352)] and len(cols) == 37


def tiny_conv_model(path: Path, size: int = 64, seed: int = 0) -> Path:
    """Uint8 NHWC -> five 3x3 stride-2 convs (stride 32, receptive field 63 px) -> global average
    pool -> dense -> softmax: the head dense mode rewrites, in a model that runs in milliseconds."""
    rng = np.random.default_rng(seed)
    inits, nodes = [], [
        helper.make_node("Cast", ["image"], ["f"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["f", "scale"], ["fs"]),
        helper.make_node("Transpose", ["fs"], ["x0"], perm=[0, 3, 1, 2]),
    ]
    inits.append(numpy_helper.from_array(np.array(1 / 64, np.float32), "scale"))
    c_in = 3
    for i in range(5):
        w = rng.normal(0, 0.6, (8, c_in, 3, 3)).astype(np.float32)
        b = rng.normal(0, 0.1, 8).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(b, f"b{i}")]
        nodes += [helper.make_node("Conv", [f"x{i}", f"w{i}", f"b{i}"], [f"c{i}"], kernel_shape=[3, 3],
                                   strides=[2, 2], pads=[1, 1, 1, 1]),
                  helper.make_node("Relu", [f"c{i}"], [f"x{i + 1}"])]
        c_in = 8
    inits += [numpy_helper.from_array(rng.normal(0, 1, (8, 4)).astype(np.float32), "wd"),
              numpy_helper.from_array(np.zeros(4, np.float32), "bd")]
    nodes += [helper.make_node("GlobalAveragePool", ["x5"], ["g"]),
              helper.make_node("Flatten", ["g"], ["flat"]),
              helper.make_node("MatMul", ["flat", "wd"], ["mm"]),
              helper.make_node("Add", ["mm", "bd"], ["logits"]),
              helper.make_node("Softmax", ["logits"], ["probabilities"], axis=-1)]
    graph = helper.make_graph(nodes, "tinyconv",
                              [helper.make_tensor_value_info("image", TensorProto.UINT8, ["N", size, size, 3])],
                              [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 4])],
                              initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    write_metadata(model, ModelMeta(kind=ModelKind.CLASSIFIER, input_hw=(size, size), labels=("a", "b", "c", "d"),
                                    label_set="custom", weights="random", architecture="tinyconv",
                                    source_framework="onnx.helper", feature_stride=32))
    onnx.save(model, str(path))
    return path


@pytest.fixture
def tiny_conv(tmp_path):
    from slidewin.classifier import Classifier

    return Classifier(tiny_conv_model(tmp_path / "tinyconv.onnx"))


def test_context_margin_covers_the_receptive_field():
    assert context_margin(63, 32, 2, 64) == 64       # tiny_conv_model: 31 px beyond, 16 a side, + 1 stride
    assert context_margin(851, 32, 7, 224) == 448    # EfficientNet-Lite0
    assert context_margin(483, 32, 7, 224) == 288    # ResNet50


def test_tiled_dense_map_equals_the_untiled_pass(tiny_conv):
    from slidewin.dense import DenseClassifier

    dense = DenseClassifier(tiny_conv)
    assert dense.context_hw == (64, 64)
    rng = np.random.default_rng(5)
    level = rng.integers(0, 256, (64 + 32 * 20, 64 + 32 * 27, 3), dtype=np.uint8)
    dense.max_tile = 0
    untiled = dense.predict_map(level)
    assert untiled.shape == (21, 28, 4)
    dense.max_tile = 256
    assert len(dense.tiles(level.shape[:2])) >= 9
    np.testing.assert_allclose(dense.predict_map(level), untiled, rtol=0, atol=1e-6)
    dense.context_hw = (0, 0)  # the margin matters: without it tile edges see zero padding
    assert np.abs(dense.predict_map(level) - untiled).max() > 1e-3


def test_tiled_dense_detections_equal_untiled(tiny_conv):
    from slidewin.detector import DetectorConfig, SlidingWindowDetector

    det = SlidingWindowDetector(tiny_conv, config=DetectorConfig(mode="dense", windows_hw=((96, 96),),
                                                                 min_score=0.3, iou=0.5))
    image = cv2.GaussianBlur(np.random.default_rng(9).integers(0, 255, (900, 700, 3), dtype=np.uint8), (0, 0), 4)
    det.dense.max_tile = 0
    want, _ = det.run(image)
    det.dense.max_tile = 300
    assert len(det.dense.tiles(det.plan(image.shape[:2])[0].size_hw)) > 4
    got, _ = det.run(image)
    assert len(want) > 10
    np.testing.assert_allclose(got.xyxy, want.xyxy, atol=1e-3)
    np.testing.assert_allclose(got.scores, want.scores, atol=1e-5)
    np.testing.assert_array_equal(got.class_ids, want.class_ids)


def test_tiled_dense_equals_untiled_for_efficientnet(effnet_onnx, tmp_path):
    """A real network: its 851 px receptive field reaches far past the 224 px window."""
    from skimage import data

    from slidewin.classifier import Classifier
    from slidewin.dense import DenseClassifier

    model = tmp_path / "m.onnx"
    os.link(effnet_onnx, model)
    dense = DenseClassifier(Classifier(model))
    level = cv2.resize(data.chelsea(), (224 + 60 * 32, 224 + 32), interpolation=cv2.INTER_AREA)
    dense.max_tile = 0
    untiled = dense.predict_map(level)
    dense.max_tile = 735  # two 256 x 2080 passes: one seam, 448 px of context on each side of it
    assert [c for _, c in dense.tiles(level.shape[:2])] == [(0, 31, 0, 2080), (31, 61, 64, 2144)]
    np.testing.assert_allclose(dense.predict_map(level), untiled, rtol=0, atol=1e-5)


def test_prefetch_never_decodes_a_huge_image_ahead(tmp_path, monkeypatch):
    """Look-ahead is bounded by declared pixels: an image over the budget is decoded only when
    it is next, never while another one is being detected in."""
    import threading

    import slidewin.batch as batch
    from slidewin.detections import Detections
    from slidewin.detector import RunStats

    names = ["0.jpg", "1.jpg", "2-big.jpg", "3.jpg", "4.jpg"]
    for i, name in enumerate(names):
        photo(tmp_path / "in" / name, i, hw=(300, 400) if "big" in name else (30, 40))
    monkeypatch.setattr(batch, "PREFETCH_PIXELS", 10_000)  # room for a few small images only
    events, lock = [], threading.Lock()
    real_decode = batch._decode

    def decode(path, convert, max_pixels):
        with lock:
            events.append(("decode", path.name))
        return real_decode(path, convert, max_pixels)

    class Detector:
        def run(self, image):
            with lock:
                events.append(("run", image.shape[1]))
            time.sleep(0.05)  # let the pool run ahead if it would
            with lock:
                events.append(("done", image.shape[1]))
            return Detections.empty(("a",)), RunStats()

    monkeypatch.setattr(batch, "_decode", decode)
    _, inputs = collect_inputs([tmp_path / "in"])
    s = run_folder(Detector(), inputs, tmp_path / "out", "m", prefetch=4, progress=False)
    assert s.ok == 5
    big = events.index(("decode", "2-big.jpg"))
    assert events[:big].count(("done", 40)) == 2 and ("run", 40) not in events[big - 1:big]
    assert events.index(("decode", "1.jpg")) < events.index(("done", 40))   # small ones do go ahead
