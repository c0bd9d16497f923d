"""Smoke tests for the benchmark scripts: their reference code is right and their code paths run.

No timings are asserted (benchmarks measure, tests check). The Keras baseline end to end needs
TensorFlow and the seed-0 ResNet50 export, so it is marked slow.
"""

from __future__ import annotations

import ast
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path[:0] = [str(BENCH), str(BENCH / "speed"), str(BENCH / "quality")]

import _common  # noqa: E402
import baseline_recipe as recipe  # noqa: E402
import bench_nms  # noqa: E402

from conftest import COCO_MINI  # noqa: E402
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
    assert {(r["mode"], r["layout"], r["boxes"]) for r in data["rows"]} == {
        (mode, layout, n) for mode in ("greedy", "class-aware") for layout in ("random", "clustered") for n in (50, 200)}
    for r in data["rows"]:
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

    # coco-mini's photos: the one timed, and 6 to calibrate the int8 row on (few: calibration keeps
    # every activation of every window in memory)
    assert bench_baseline.main(["--images", "1", "--width", "250", "--model", str(resnet50_random_onnx),
                                "--out-dir", str(tmp_path), "--data", str(COCO_MINI)]) == 0
    result = json.loads((tmp_path / "baseline.json").read_text())
    assert result["weights_max_abs_diff"] < 1e-4  # the same seed-0 weights in Keras and in the ONNX file
    methods = {s["method"]: s for s in result["rows"]}
    assert {"baseline", "patch (tutorial windows)", "patch (slidewin defaults)"} <= set(methods)
    int8 = methods[bench_baseline.INT8_METHOD]  # quantized beside the model, calibrated on the data set
    assert int8["windows"] == methods["patch (tutorial windows)"]["windows"]
    assert Path(result["int8_model"]).parent == resnet50_random_onnx.parent
    (h, w) = result["per_image"][0]["hw"]
    assert w == 250 and methods["baseline"]["windows"] == [recipe.count_windows((h, w), None)[1]]
    assert all(s["median_s"] > 0 for s in result["rows"])


# --- bench_dense, eval_coco -----------------------------------------------------------------------------


def test_bench_dense_main_tiny(effnet_onnx, tmp_path, monkeypatch, capsys):
    import _common
    import bench_dense

    monkeypatch.setattr(bench_dense, "ensure_model", lambda name: effnet_onnx)
    monkeypatch.setattr(_common, "RESULTS", tmp_path)
    monkeypatch.setattr(bench_dense, "RESULTS", tmp_path)
    monkeypatch.delenv("SLIDEWIN_DATA", raising=False)
    assert bench_dense.main(["--images", "1", "--rounds", "1", "--configs", "efficientnet-lite0:input",
                             "--data", str(COCO_MINI)]) == 0
    r = json.loads((tmp_path / "dense.json").read_text())["rows"][0]
    assert r["windows_per_image"] > 1 and r["patch_s_median"] > 0 and r["dense_s_median"] > 0
    assert 0 <= r["top1_agreement"] <= 1 and r["agreement_meaningful"]
    assert "dense speed-up" in capsys.readouterr().out


def test_eval_coco_main_tiny(effnet_onnx, tmp_path, monkeypatch, capsys):
    import eval_coco


    monkeypatch.setattr(eval_coco, "ensure_model", lambda name: effnet_onnx)
    monkeypatch.chdir(tmp_path)  # main() changes directory to the project; restore it afterwards
    data = ["--data", str(COCO_MINI)]  # the fixture photos: a clone has no ../shared
    assert eval_coco.main([*data, "--modes", "dense", "--limit", "2", "--out-dir", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "summary-2.json").read_text())
    (row,) = summary["rows"]
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


# --- benchmarks use slidewin's public names only ---------------------------------------------------


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def private_slidewin_names(source: str) -> list[str]:
    """The private slidewin names a script uses: ``from slidewin.x import _y``, a ``_module`` on the
    way, or ``_y`` read off a slidewin module or a name imported from one. Code in string constants
    (the scripts run child processes with ``python -c CODE``) is read too."""
    tree = ast.parse(source)
    found, bound = [], set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and "slidewin" in node.value:
            try:
                found += private_slidewin_names(node.value)
            except SyntaxError:
                pass  # prose, not code
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in ("slidewin", "slidewin_export"):
            found += [f"{node.module}.{a.name}" for a in node.names if _private(a.name)]
            found += [node.module] if any(_private(p) for p in node.module.split(".")) else []
            bound |= {a.asname or a.name for a in node.names}
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] in ("slidewin", "slidewin_export"):
                    found += [a.name] if any(_private(p) for p in a.name.split(".")) else []
                    bound.add(a.asname or a.name.split(".")[0])
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _private(node.attr):
            base = node.value
            while isinstance(base, ast.Attribute):
                base = base.value
            if isinstance(base, ast.Name) and base.id in bound:
                found.append(f"{ast.unparse(node)}")
    return found


def test_the_private_name_check_finds_each_kind():
    bad = ("from slidewin.apps.evaluate import _coco_eval, evaluate\n"
           "import slidewin.io._private\n"
           "import slidewin.runtime.sessions as s\n"
           "from slidewin import Classifier\n"
           "x = s._cache + Classifier._load() + slidewin.core._x\n"
           "CODE = 'from slidewin.apps.recall import _best'\n")
    assert sorted(private_slidewin_names(bad)) == sorted([
        "slidewin.apps.evaluate._coco_eval", "slidewin.io._private", "s._cache", "Classifier._load",
        "slidewin.core._x", "slidewin.apps.recall._best"])
    fine = ("from slidewin.apps.evaluate import evaluate\nimport slidewin\n"
            "x = evaluate.__doc__, slidewin.__version__, self._stop, obj._x\n")
    assert private_slidewin_names(fine) == []


def test_no_benchmark_uses_a_private_slidewin_name():
    scripts = sorted(BENCH.rglob("*.py"))
    assert len(scripts) > 10
    found = {str(p.relative_to(BENCH)): names for p in scripts if (names := private_slidewin_names(p.read_text()))}
    assert not found, f"give slidewin a public name for these: {found}"


# --- _common: interleave, --data, Result ---------------------------------------------------------------


def test_interleave_mirrors_every_other_round():
    order = list(_common.interleave(["a", "b", "c"], 4))
    assert order == [(0, "a"), (0, "b"), (0, "c"), (1, "c"), (1, "b"), (1, "a"),
                     (2, "a"), (2, "b"), (2, "c"), (3, "c"), (3, "b"), (3, "a")]
    # Over each pair of rounds every case has the same mean position: a linear drift cancels.
    positions = {c: [i % 3 for i, (_, x) in enumerate(order) if x == c] for c in "abc"}
    assert len({sum(p) for p in positions.values()}) == 1
    assert list(_common.interleave([], 3)) == [] and list(_common.interleave(["a"], 0)) == []


def _data_parser(**kw):
    import argparse

    ap = argparse.ArgumentParser(prog="bench_x")
    _common.add_data_option(ap, **kw)
    return ap


def test_data_option_reads_the_flag_then_the_environment_then_the_fallback(tmp_path, monkeypatch):
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    monkeypatch.delenv("SLIDEWIN_DATA", raising=False)
    assert _common.parse(_data_parser(), ["--data", str(one)]).data == one
    assert _common.parse(_data_parser(fallback=(two,)), []).data == two  # the folder beside the repository
    assert _common.parse(_data_parser(many=True, fallback=(one, two)), []).data == [one, two]
    monkeypatch.setenv("SLIDEWIN_DATA", f"{two}{os.pathsep}{one}")
    assert _common.parse(_data_parser(many=True), []).data == [two, one]
    assert _common.parse(_data_parser(), []).data == two
    assert _common.parse(_data_parser(), ["--data", str(one)]).data == one  # the flag wins
    args = _common.parse(_data_parser(), ["--data", str(one)])
    assert not hasattr(args, "_data_option")


@pytest.mark.parametrize("argv, env, needle", [
    ([], None, "no data set: pass --data DIR or set SLIDEWIN_DATA"),
    (["--data", "{tmp}/absent"], None, "absent: no such folder"),
    ([], "{tmp}/gone", "gone: no such folder"),
])
def test_data_option_mistakes_are_one_line(tmp_path, monkeypatch, capsys, argv, env, needle):
    monkeypatch.delenv("SLIDEWIN_DATA", raising=False)
    if env:
        monkeypatch.setenv("SLIDEWIN_DATA", env.format(tmp=tmp_path))
    with pytest.raises(SystemExit) as e:
        _common.parse(_data_parser(fallback=(tmp_path / "nowhere",)), [a.format(tmp=tmp_path) for a in argv])
    message = str(e.value.code)
    assert message.startswith("bench_x: ") and needle in message and "\n" not in message
    monkeypatch.delenv("SLIDEWIN_DATA", raising=False)
    assert _common.parse(_data_parser(required=False, fallback=(tmp_path / "nowhere",)), []).data is None


def test_result_saves_prints_and_reads_back(tmp_path, capsys):
    import argparse

    args = argparse.Namespace(limit=2, data=Path("x/coco"), _private=1)
    rows = [{"name": "a", "s": 1.5}, {"name": "b", "s": 0.25}]
    result = _common.Result({"cpu": "C", "physical_cores": 2, "gpu": None, "onnxruntime": "1"}, args, rows,
                            name="r", folder=tmp_path, extra={"note": "n"})
    text = result.table(["name", "s"], title="T")
    assert "| a" in text and "0.25" in text and text in capsys.readouterr().out
    saved = json.loads(result.save().read_text())
    assert saved == {"machine": result.machine, "args": {"limit": 2, "data": "x/coco"}, "note": "n", "rows": rows}
    back = _common.Result.load(tmp_path / "r.json")
    assert (back.rows, back.extra, back.name, back.folder) == (rows, {"note": "n"}, "r", tmp_path)
    assert back.machine_line == "C (2 cores), no GPU; onnxruntime 1"
    pytest.importorskip("matplotlib")
    assert result.chart(lambda ax: ax.plot([0, 1], [1, 0])).stat().st_size > 0
    assert result.chart(lambda axes: [ax.plot([0], [0]) for ax in axes], ncols=2).name == "r.png"


# --- bench_compare --before -------------------------------------------------------------------------


def test_bench_compare_finds_slidewin_in_a_tree_or_says_it_is_not_there(tmp_path):
    import bench_compare

    assert Path(bench_compare.slidewin_of(_common.ROOT)).resolve().is_relative_to(_common.ROOT)
    with pytest.raises(SystemExit) as e:
        bench_compare.slidewin_of(tmp_path)
    assert str(e.value.code).startswith(f"bench_compare: {tmp_path}: no slidewin package there")


@pytest.mark.slow
def test_bench_compare_before_and_after_from_one_run(tmp_path, monkeypatch, capsys):
    """This tree as both 'before' and 'after' on one photo: the machinery, not a timing (~40 s)."""
    import bench_compare

    monkeypatch.delenv("SLIDEWIN_DATA", raising=False)
    assert bench_compare.main(["--data", str(COCO_MINI), "--limit", "1", "--rows", "dense", "--no-warmup",
                               "--before", str(_common.ROOT), "--out-dir", str(tmp_path)]) == 0
    saved = json.loads((tmp_path / "compare-before-after.json").read_text())
    row = saved["rows"]["dense"]
    assert row["before"]["images"] == row["after"]["images"] == 1
    assert row["same_quality"] and row["after_over_before_seconds"] > 0
    assert saved["slidewin"]["before"] == saved["slidewin"]["after"]
    assert "| windows, dense mode" in capsys.readouterr().out
