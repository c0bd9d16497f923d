"""Smoke tests for the benchmark scripts: their reference code is right and their code paths run.

No timings are asserted (benchmarks measure, tests check). The Keras baseline end to end needs
TensorFlow and the seed-0 ResNet50 export, so it is marked slow.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import baseline_recipe as recipe  # noqa: E402
import bench_nms  # noqa: E402

from slidewin.core.nms import batched_nms, nms  # noqa: E402


# --- bench_nms -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", sorted(bench_nms.LAYOUTS))
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("iou", [0.3, 0.5, 0.7])
def test_numpy_nms_equals_slidewin(layout, seed, iou):
    xyxy, scores = bench_nms.LAYOUTS[layout](600, seed)
    assert np.array_equal(bench_nms.numpy_nms(xyxy, scores, iou), nms(xyxy, scores, iou))
    classes = bench_nms.class_ids_for(600, seed)
    assert np.array_equal(bench_nms.numpy_batched_nms(xyxy, scores, classes, iou),
                          batched_nms(xyxy, scores, classes, iou))


def test_numpy_nms_boundary_and_ties():
    # IoU exactly 0.5 (kept: suppression needs IoU > threshold), one above, and a score tie.
    xyxy = np.array([[0, 0, 10, 10], [0, 0, 10, 5], [0, 0, 10, 4.9], [20, 20, 30, 30], [20, 20, 30, 30]], np.float64)
    scores = np.array([0.9, 0.8, 0.7, 0.5, 0.5])
    kept = bench_nms.numpy_nms(xyxy, scores, 0.5)
    assert kept.tolist() == [0, 1, 3]  # box 2: IoU 0.49 with 0 but 0.98 with 1; box 4 ties 3, higher index
    assert np.array_equal(kept, nms(xyxy, scores, 0.5))


def test_box_layouts_are_valid_and_seeded():
    for make in bench_nms.LAYOUTS.values():
        xyxy, scores = make(1000, 0)
        assert xyxy.dtype == np.float32 and xyxy.shape == (1000, 4)
        assert (xyxy[:, 2] > xyxy[:, 0]).all() and (xyxy[:, 3] > xyxy[:, 1]).all()
        assert xyxy.min() >= 0 and xyxy.max() <= bench_nms.CANVAS
        assert len(np.unique(scores)) == 1000 and scores.min() > 0
        again, _ = make(1000, 0)
        assert np.array_equal(xyxy, again)


def test_compare_kept_explains_a_difference():
    xyxy = np.array([[0, 0, 10, 10], [0, 0, 10, 5], [50, 50, 60, 60]], np.float32)
    ref = np.array([0, 2])
    assert bench_nms.compare_kept(ref, ref, xyxy, None) == {"identical": True, "indices_differ": 0}
    got = bench_nms.compare_kept(np.array([0, 1, 2]), ref, xyxy, None)
    assert not got["identical"] and got["indices_differ"] == 1 and got["first_box"] == 1
    assert got["max_iou_at_first"] == pytest.approx(0.5) and got["near_threshold"]


def test_guarded_run_times_out():
    import time

    slow = bench_nms.Impl("sleepy", lambda *a: a, lambda *a: time.sleep(5) or [0])
    assert bench_nms.guarded_once(slow, (), timeout=0.2) is None
    fast = bench_nms.Impl("quick", lambda *a: a, lambda *a: [3, 1])
    seconds, kept = bench_nms.guarded_once(fast, (), timeout=30)
    assert seconds >= 0 and kept.tolist() == [3, 1]


def test_bench_nms_main_writes_results(tmp_path, capsys):
    assert bench_nms.main(["--sizes", "50", "200", "--repeat", "2", "--no-first-call", "--out-dir", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "nms.json").read_text())
    assert {(r["mode"], r["layout"], r["boxes"]) for r in data["results"]} == {
        (mode, layout, n) for mode in ("greedy", "class-aware") for layout in ("random", "clustered") for n in (50, 200)}
    for r in data["results"]:
        assert r["impls"]["slidewin"]["identical"] and r["impls"]["numpy"]["identical"]
        assert r["impls"]["slidewin"]["median_s"] > 0
    assert "| layout" in capsys.readouterr().out
    pytest.importorskip("matplotlib")
    assert (tmp_path / "nms.png").stat().st_size > 0


# --- baseline recipe -------------------------------------------------------------------------------------


def test_recipe_pyramid_and_windows_hand_computed():
    image = np.zeros((450, 600, 3), np.uint8)
    levels = [lvl.shape[:2] for lvl in recipe.image_pyramid(image, 1.5, (200, 150))]
    assert levels == [(450, 600), (300, 400), (199, 266)]  # next: 177 wide x 132 high < 200x150
    # range(0, W - w, 16): 400/16 -> 25 x 300/16 -> 19; 200 -> 13 x 150 -> 10; 66 -> 5 x 49 -> 4
    assert [len(list(recipe.sliding_window(lvl, 16, (200, 150)))) for lvl in
            recipe.image_pyramid(image, 1.5, (200, 150))] == [475, 130, 20]
    assert recipe.count_windows((450, 600), None) == (3, 625)
    assert recipe.count_windows((480, 640)) == (3, 625)  # resized to width 600 first
    # A level exactly the ROI's size yields no window (the tutorial's range stops short).
    assert list(recipe.sliding_window(np.zeros((150, 200, 3)), 16, (200, 150))) == []


def test_imutils_nms_hand_computed():
    boxes = np.array([[0, 0, 99, 99], [10, 10, 109, 109], [200, 200, 249, 249], [205, 205, 225, 225]])
    probs = np.array([0.6, 0.9, 0.8, 0.95])
    # Box 3 (inside box 2) is picked first; box 2's overlap is measured over box 2's own area
    # (21*21 / 50*50 = 0.18), so both stay; box 0 overlaps box 1 by 90*90/100^2 = 0.81 > 0.3.
    assert recipe.imutils_nms(boxes, probs, 0.3).tolist() == [3, 1, 2]
    assert recipe.imutils_nms(np.zeros((0, 4)), np.zeros(0)).size == 0


class _FakeModel:
    """Keras-like: predict(x, verbose) -> probabilities; class 1 scores 0.95 on bright windows."""

    def __init__(self):
        self.calls = []

    def predict(self, x, verbose="auto"):
        self.calls.append(x.shape)
        p = np.full((len(x), 3), 0.025, np.float32)
        bright = x.mean(axis=(1, 2, 3)) > 100
        p[bright, 1], p[bright, 0] = 0.95, 0.025
        p[~bright, 0] = 0.95
        return p


def test_tutorial_detect_runs_one_predict_and_maps_boxes():
    image = np.zeros((300, 400, 3), np.uint8)
    image[:, 200:] = 255
    model = _FakeModel()
    res = recipe.tutorial_detect(model, image, lambda r: r, ["dark", "bright", "other"], width=None)
    assert model.calls == [(res.windows, 224, 224, 3)] and res.windows == recipe.count_windows((300, 400), None)[1]
    assert set(res.detections) == {"dark", "bright"}
    for (x1, y1, x2, y2), p in res.detections["bright"]:
        assert 0 <= x1 < x2 <= 400 and 0 <= y1 < y2 <= 300 and p == pytest.approx(0.95)
    capped = recipe.tutorial_detect(_FakeModel(), image, lambda r: r, ["a", "b", "c"], width=None, max_windows=5)
    assert capped.windows == 5


@pytest.mark.slow
def test_bench_baseline_main_tiny(resnet50_random_onnx, tmp_path):
    """End to end on one small image (~30 s: Keras builds ResNet50; a few windows each)."""
    pytest.importorskip("keras")
    import bench_baseline

    assert bench_baseline.main(["--images", "1", "--width", "250", "--model", str(resnet50_random_onnx),
                                "--out-dir", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "baseline.json").read_text())
    assert data["weights_max_abs_diff"] < 1e-4  # the same seed-0 weights in Keras and in the ONNX file
    methods = {s["method"]: s for s in data["summary"]}
    assert {"baseline", "patch (tutorial windows)", "patch (slidewin defaults)"} <= set(methods)
    if bench_baseline.COCO_DEV.exists():  # the int8 row is quantized beside the model, calibrated on coco-dev
        int8 = methods[bench_baseline.INT8_METHOD]
        assert int8["windows"] == methods["patch (tutorial windows)"]["windows"]
        assert Path(data["int8_model"]).parent == resnet50_random_onnx.parent
    (h, w) = data["per_image"][0]["hw"]
    assert w == 250 and methods["baseline"]["windows"] == [recipe.count_windows((h, w), None)[1]]
    assert all(s["median_s"] > 0 for s in data["summary"])


# --- bench_dense, eval_coco -----------------------------------------------------------------------------


def test_bench_dense_main_tiny(effnet_onnx, tmp_path, monkeypatch, capsys):
    import _common
    import bench_dense

    monkeypatch.setattr(bench_dense, "ensure_model", lambda name: effnet_onnx)
    monkeypatch.setattr(_common, "RESULTS", tmp_path)
    monkeypatch.setattr(bench_dense, "RESULTS", tmp_path)
    assert bench_dense.main(["--images", "1", "--rounds", "1", "--configs", "efficientnet-lite0:input"]) == 0
    r = json.loads((tmp_path / "dense.json").read_text())["results"][0]
    assert r["windows_per_image"] > 1 and r["patch_s_median"] > 0 and r["dense_s_median"] > 0
    assert 0 <= r["top1_agreement"] <= 1 and r["agreement_meaningful"]
    assert "dense speed-up" in capsys.readouterr().out


def test_eval_coco_main_tiny(effnet_onnx, tmp_path, monkeypatch, capsys):
    import eval_coco

    from conftest import COCO_MINI

    monkeypatch.setattr(eval_coco, "ensure_model", lambda name: effnet_onnx)
    monkeypatch.chdir(tmp_path)  # main() changes directory to the project; restore it afterwards
    data = ["--data", str(COCO_MINI)]  # the fixture photos: a clone has no ../shared
    assert eval_coco.main([*data, "--modes", "dense", "--limit", "2", "--out-dir", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "summary-2.json").read_text())
    (row,) = summary["results"]
    assert row["mode"] == "dense" and row["images"] == 2
    for recipe in ("slidewin", "tutorial"):
        metrics = json.loads((tmp_path / f"{recipe}-dense-2" / "metrics.json").read_text())
        assert metrics["recipe"] == recipe and metrics["images"] == 2
    assert (tmp_path / "summary-2.md").read_text().count("| dense |") == 2
    # --reuse reads the reports back instead of evaluating again
    assert eval_coco.main([*data, "--modes", "dense", "--limit", "2", "--out-dir", str(tmp_path), "--reuse"]) == 0
    assert capsys.readouterr().out.count("reusing") == 2


# --- bench_engine ----------------------------------------------------------------------------------


def test_bench_engine_table_and_tree_rss():
    import subprocess

    import bench_engine

    run = {"images_per_s": 1.0, "peak_driver_rss_mb": 500, "peak_tree_rss_mb": 500}
    ray = {**run, "startup_seconds": 5.0, "images_per_s_with_startup": 0.8, "cluster_idle_rss_mb": 900}
    runs = {"local": [run, {**run, "images_per_s": 2.0}], "ray, 1 worker": [{**ray, "images_per_s": 1.5}],
            "ray, 2 workers": [{**ray, "images_per_s": 3.0}]}
    rows, best = bench_engine.table_rows(runs)
    assert [r[2] for r in rows] == ["1.00x", "0.75x", "1.50x"] and best["local"]["images_per_s"] == 2.0
    assert all(len(r) == len(bench_engine.HEADERS) for r in rows)
    with bench_engine.TreeRss(every=0.05) as rss:
        child = subprocess.Popen([sys.executable, "-c", "import time; b = bytearray(64 << 20); time.sleep(1)"])
        child.wait()
    assert rss.peak_tree >= rss.peak_self + (32 << 20)  # the child's 64 MB counted in the tree only
