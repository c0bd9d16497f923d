"""slidewin evaluate: COCO AP by faster-coco-eval, category plan, refusal of random weights."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from dataclasses import fields
from pathlib import Path

import cv2
import numpy as np
import pytest

from slidewin.cli import main
from slidewin.apps.evaluate import EvalResult, category_plan, evaluate, load_dataset, open_dataset
from slidewin.errors import SlidewinError, UntrainedModelError
from slidewin.core.targets import Targets

COCO_MINI = Path(__file__).resolve().parents[1] / "data" / "coco-mini"


@pytest.fixture(scope="module")
def synthetic_coco(tmp_path_factory):
    """Six scenes, each with a real cat or cup photo pasted at a known box, in COCO format."""
    from skimage import data

    from slidewin_export.demo_scene import paste, synthetic_background

    root = tmp_path_factory.mktemp("coco")
    (root / "images").mkdir()
    photos = {17: data.chelsea(), 47: data.coffee()}
    images, anns = [], []
    for i in range(6):
        cat_id = 17 if i % 2 == 0 else 47
        scene = synthetic_background((480, 640), seed=i)
        x, y = 40 + 60 * i, 60 + 20 * i
        box = (x, y, x + 300, y + 200)
        paste(scene, photos[cat_id], box)
        name = f"{i:06d}.jpg"
        cv2.imwrite(str(root / "images" / name), cv2.cvtColor(scene, cv2.COLOR_RGB2BGR))
        images.append({"id": i + 1, "file_name": name, "width": 640, "height": 480})
        anns.append({"id": i + 1, "image_id": i + 1, "category_id": cat_id, "bbox": [x, y, 300, 200],
                     "area": 60000, "iscrowd": 0})
    cats = [{"id": 1, "name": "person"}, {"id": 17, "name": "cat"}, {"id": 47, "name": "cup"},
            {"id": 11, "name": "fire hydrant"}]
    (root / "instances.json").write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return root


def test_category_plan_lists_what_is_evaluated_and_why_not(synthetic_coco):
    ds = load_dataset(synthetic_coco)
    evaluated, excluded = category_plan(ds, ("cat", "cup", "fire hydrant"), {"person": "no person class"})
    assert evaluated == {17: 0, 47: 1}
    assert excluded == {"person": "no person class", "fire hydrant": "no ground-truth boxes in this dataset"}


# patch mode scores every window of six 640x480 scenes: ~140 s on the 2-core CPU
@pytest.mark.parametrize("mode", [pytest.param("patch", marks=pytest.mark.slow), "dense"])
def test_evaluate_on_synthetic_scenes_finds_the_pasted_photos(effnet_onnx, synthetic_coco, tmp_path, mode):
    model = tmp_path / "m.onnx"
    model.write_bytes(effnet_onnx.read_bytes())
    out = tmp_path / "report"
    m = evaluate(synthetic_coco, model, mode=mode, out_dir=out, progress=False)
    assert m.classes_evaluated == ["cat", "cup"] and "person" in m.classes_excluded
    assert m.images == 6 and m.recipe == "slidewin" and m.mode == mode
    # Photos pasted on plain backgrounds are found (a broken category mapping or box conversion
    # gives 0). The defaults are tuned for recall on COCO photos (small windows), so in patch
    # mode these large pasted photos score AP50 ~0.19 and in dense mode over 0.3.
    assert m.AP50 > 0.1, m
    assert 0 <= m.AP <= m.AP50 <= 1
    text = (out / "metrics.json").read_text()
    # metrics.json is the result, its keys in the order they have always had
    assert text == json.dumps(m.to_json(), indent=2) + "\n"
    assert json.dumps(EvalResult.from_json(json.loads(text)).to_json(), indent=2) + "\n" == text
    assert list(json.loads(text)) == [
        "AP", "AP50", "AP75", "per_class", "classes_evaluated", "classes_excluded", "recall50", "recall75", "AR100",
        "AR1000", "recall", "images", "image_errors", "model", "recipe", "mode", "config", "proposals", "detections",
        "candidates_per_image", "seconds", "seconds_per_image", "stage_seconds_per_image",
        "ground_truth", "boxes_evaluated", "boxes_total"]
    # six pasted photos: three cats, three cups, nobody (person has no box)
    assert m.ground_truth == {"cat": 3, "cup": 3, "fire hydrant": 0, "person": 0}
    assert (m.boxes_evaluated, m.boxes_total) == (6, 6)
    assert len(json.loads((out / "detections.json").read_text())) == m.detections
    assert (out / "report.md").read_text().startswith("# Evaluation")
    assert (out / "pr_curve.png").stat().st_size > 1000
    assert list((out / "examples").glob("*.jpg"))


def test_tutorial_recipe_is_worse_than_slidewin_on_the_same_scenes(effnet_onnx, synthetic_coco, tmp_path):
    model = tmp_path / "m.onnx"
    model.write_bytes(effnet_onnx.read_bytes())
    ours = evaluate(synthetic_coco, model, mode="dense", progress=False)
    tut = evaluate(synthetic_coco, model, mode="dense", recipe="tutorial", progress=False)
    assert tut.recipe == "tutorial" and tut.config["scoring"] == "top1"
    assert ours.AP50 >= tut.AP50


def test_random_weights_are_refused(resnet50_random_onnx, synthetic_coco, capsys):
    with pytest.raises(UntrainedModelError, match="untrained"):
        evaluate(synthetic_coco, resnet50_random_onnx, progress=False)
    code = main(["evaluate", "--data", str(synthetic_coco), "--model", str(resnet50_random_onnx)])
    err = capsys.readouterr().err
    assert code != 0 and "untrained" in err and len(err.strip().splitlines()) == 1


def test_bad_dataset_is_one_line(tmp_path, effnet_onnx, capsys):
    code = main(["evaluate", "--data", str(tmp_path), "--model", str(effnet_onnx)])
    err = capsys.readouterr().err
    assert code != 0 and "instances.json" in err and len(err.strip().splitlines()) == 1


def test_score_top1_only_counts_the_winning_label():
    t = Targets(("a", "b"), np.array([[1, 0], [1, 0], [0, 1], [0, 0], [0, 0], [0, 0]], np.float32))
    probs = np.array([[0.3, 0.3, 0.4, 0, 0, 0],     # top-1 is label 2 -> target b, 0.4
                      [0.1, 0.1, 0.1, 0.7, 0, 0]],  # top-1 label 3 is in no target
                     np.float32)
    np.testing.assert_allclose(t.score_top1(probs), [[0, 0.4], [0, 0]])
    np.testing.assert_allclose(t.score(probs), [[0.6, 0.4], [0.2, 0.1]])


def coco_layout(tmp_path: Path) -> Path:
    """A copy of coco-mini laid out as COCO ships it: annotations/instances_val2017.json, val2017/."""
    root = tmp_path / "coco"
    (root / "annotations").mkdir(parents=True)
    shutil.copytree(COCO_MINI / "images", root / "val2017")
    shutil.copy(COCO_MINI / "instances.json", root / "annotations" / "instances_val2017.json")
    return root


@pytest.mark.slow
def test_real_coco_photos_in_coco_layout_and_their_detections_file_gives_the_same_ap(effnet_onnx, tmp_path, capsys):
    """`--images DIR --annotations FILE` on COCO's own layout; detections.json read back by
    faster-coco-eval against the annotations gives the AP the report states."""
    from faster_coco_eval import COCO, COCOeval_faster

    root = coco_layout(tmp_path)
    ann = root / "annotations" / "instances_val2017.json"
    model = tmp_path / "m.onnx"
    os.link(effnet_onnx, model)
    out = tmp_path / "report"
    code = main(["evaluate", "--images", str(root / "val2017"), "--annotations", str(ann), "--model", str(model),
                 "--mode", "dense", "--out-dir", str(out)])
    stdout = capsys.readouterr().out
    assert code == 0, stdout
    m = EvalResult.from_json(json.loads((out / "metrics.json").read_text()))
    assert m.images == 12
    # coco-mini's 12 photos have cars and no cats: a category without boxes is excluded, said so
    assert "person" in m.classes_excluded and "car" in m.classes_evaluated and "cat" in m.classes_excluded

    gt = COCO(str(ann))
    ev = COCOeval_faster(gt, gt.loadRes(str(out / "detections.json")), iouType="bbox",
                         print_function=lambda *a, **k: None)
    names = {c["id"]: c["name"] for c in gt.dataset["categories"]}
    ev.params.catIds = sorted(c for c, n in names.items() if n in m.classes_evaluated)
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    assert m.AP > 0.01 and (m.AP, m.AP50, m.AP75) == tuple(float(s) for s in ev.stats[:3])
    assert f"AP {m.AP:.4f}  AP50 {m.AP50:.4f}" in stdout

    # ground-truth boxes per class and "N of M boxes evaluated", counted here from the file
    anns = json.loads(ann.read_text())["annotations"]
    per_class = {n: sum(1 for a in anns if names[a["category_id"]] == n and not a["iscrowd"]) for n in names.values()}
    evaluated = sum(per_class[n] for n in m.classes_evaluated)
    assert m.ground_truth == per_class and (m.boxes_evaluated, m.boxes_total) == (evaluated, len(anns))
    assert 0 < evaluated < len(anns)  # people are in the photos, and an ImageNet model cannot name them
    line = f"{evaluated} of {len(anns)} ground-truth boxes evaluated"
    report = (out / "report.md").read_text()
    assert line in report and line in stdout
    assert re.search(rf"^\| car +\| {per_class['car']} +\|", report, re.M), report


def test_coco_layout_is_found_from_its_root(tmp_path):
    root = coco_layout(tmp_path)
    ds = load_dataset(root)
    assert ds.images_dir == root / "val2017" and ds.annotations.name == "instances_val2017.json"
    assert len(ds.gt["images"]) == 12
    (root / "train2017").mkdir()
    shutil.copy(root / "annotations" / "instances_val2017.json", root / "annotations" / "instances_train2017.json")
    with pytest.raises(SlidewinError, match=r"several COCO splits \(train2017, val2017\): give --images"):
        load_dataset(root)
    with pytest.raises(SlidewinError, match="--images DIR --annotations FILE"):
        load_dataset(tmp_path)
    with pytest.raises(SlidewinError, match="no such images folder"):
        open_dataset(None, root / "test2017", root / "annotations" / "instances_val2017.json")
    with pytest.raises(SlidewinError, match="not both"):
        open_dataset(root, root / "val2017", root / "annotations" / "instances_val2017.json")


def test_metrics_json_written_before_the_box_counts_reads_back():
    """metrics.json files written before ground_truth, boxes_evaluated and boxes_total existed."""
    old = {f.name: None for f in fields(EvalResult)}
    for late in ("ground_truth", "boxes_evaluated", "boxes_total"):
        del old[late]
    m = EvalResult.from_json(old)
    assert (m.ground_truth, m.boxes_evaluated, m.boxes_total) == ({}, 0, 0)
    with pytest.raises(KeyError, match="AP50"):
        EvalResult.from_json({k: v for k, v in old.items() if k != "AP50"})


def test_report_folder_with_files_is_refused_before_any_work(tmp_path, capsys):
    out = tmp_path / "report"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    # the model does not exist: the folder is refused first, before anything is opened
    code = main(["evaluate", "--data", str(COCO_MINI), "--model", str(tmp_path / "absent.onnx"),
                 "--out-dir", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert str(out) in err and "--overwrite" in err
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    code = main(["evaluate", "--data", str(COCO_MINI), "--model", str(tmp_path / "absent.onnx"),
                 "--out-dir", str(out), "--overwrite"])
    assert code != 0 and "absent.onnx" in capsys.readouterr().err  # with --overwrite it went on to the model


def test_unreadable_image_is_said_on_stderr_and_in_the_report(effnet_onnx, tmp_path, capsys, monkeypatch):
    """One photo and one broken file, into a report folder that holds files (--overwrite); not a
    terminal, so progress comes as lines (every image here, instead of every 30 s)."""
    from slidewin.apps.folder import progress

    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    gt = json.loads((COCO_MINI / "instances.json").read_text())
    first = min(gt["images"], key=lambda im: im["id"])
    shutil.copy(COCO_MINI / "images" / first["file_name"], data / "images")
    (data / "images" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    broken = {"id": first["id"] + 1, "file_name": "broken.jpg", "width": 640, "height": 480}
    kept = {first["id"], broken["id"]}
    gt = dict(gt, images=[first, broken], annotations=[a for a in gt["annotations"] if a["image_id"] in kept])
    gt["annotations"].append({"id": 10**6, "image_id": broken["id"], "category_id": 3, "bbox": [10, 10, 100, 80],
                              "area": 8000, "iscrowd": 0})
    (data / "instances.json").write_text(json.dumps(gt))
    model = tmp_path / "m.onnx"
    os.link(effnet_onnx, model)
    out = tmp_path / "report"
    out.mkdir()
    (out / "old.txt").write_text("x")
    (out / "examples").mkdir()
    (out / "examples" / "miss_999.jpg").write_bytes(b"an earlier report's example")
    monkeypatch.setattr(progress, "_LOG_EVERY_SECONDS", 0.0)
    code = main(["evaluate", "--data", str(data), "--model", str(model), "--mode", "dense", "--out-dir", str(out),
                 "--overwrite"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    said = [line for line in captured.err.splitlines() if "broken.jpg" in line]
    assert len(said) == 1 and str(data / "images" / "broken.jpg") in said[0], captured.err
    assert "slidewin: 1/2 images" in captured.err  # the progress line of a log
    m = EvalResult.from_json(json.loads((out / "metrics.json").read_text()))
    assert m.images == 1 and list(m.image_errors) == ["broken.jpg"]
    report = (out / "report.md").read_text()
    assert "## Images that could not be read (1" in report and "- broken.jpg: " in report
    assert "1 image(s) could not be read" in captured.out
    assert (out / "old.txt").read_text() == "x"  # --overwrite replaced the report, and only the report
    assert not (out / "examples" / "miss_999.jpg").exists()


def _interrupt_after_first_images(tmp_path: Path, model: Path, *out_args: str,
                                  sig: int = signal.SIGINT) -> subprocess.CompletedProcess:
    """``slidewin evaluate`` in a subprocess on the 12 coco-mini photos with a broken file second
    (by id): once stderr names that file (the first photo and it are done), a real SIGINT (or
    ``sig``)."""
    data = tmp_path / "data"
    shutil.copytree(COCO_MINI / "images", data / "images")
    gt = json.loads((COCO_MINI / "instances.json").read_text())
    ids = sorted(im["id"] for im in gt["images"])
    (data / "images" / "broken.jpg").write_bytes(b"not an image")
    gt["images"].append({"id": ids[0] + 1, "file_name": "broken.jpg", "width": 640, "height": 480})
    (data / "instances.json").write_text(json.dumps(gt))
    proc = subprocess.Popen([sys.executable, "-m", "slidewin.cli", "evaluate", "--data", str(data), "--model",
                             str(model), "--mode", "dense", *out_args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    err = []
    try:
        for line in proc.stderr:
            err.append(line)
            if "broken.jpg" in line:
                proc.send_signal(sig)
                break
        # Read the rest through the same buffered file: communicate() reads the raw pipe and
        # would skip what the line iteration above has already buffered.
        timer = threading.Timer(120, proc.kill)
        timer.start()
        rest, out = proc.stderr.read(), proc.stdout.read()  # stdout holds a few lines at most
        proc.wait()
        timer.cancel()
    finally:
        proc.kill()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, "".join(err) + rest)


@pytest.mark.slow
def test_ctrl_c_keeps_the_detections_done_or_says_nothing_was_kept(effnet_onnx, tmp_path):
    model = tmp_path / "m.onnx"
    os.link(effnet_onnx, model)
    ids = sorted(im["id"] for im in json.loads((COCO_MINI / "instances.json").read_text())["images"])
    out = tmp_path / "report"
    out.mkdir()
    (out / "metrics.json").write_text("{}")  # an earlier report's: not left beside these detections
    proc = _interrupt_after_first_images(tmp_path / "a", model, "--out-dir", str(out), "--overwrite")
    last = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == 130 and "Traceback" not in proc.stderr, proc.stderr
    done = int(re.search(r"interrupted after (\d+) of 13 images", last)[1])
    assert 2 <= done < 13, last
    assert f"the detections of those images are in {out / 'detections.json'}" in last
    results = json.loads((out / "detections.json").read_text())
    done_ids = {ids[0], ids[0] + 1, *ids[1:done - 1]}  # the broken file is second by id
    assert results and {r["image_id"] for r in results} <= done_ids
    assert ids[0] in {r["image_id"] for r in results}
    assert not (out / "metrics.json").exists()

    proc = _interrupt_after_first_images(tmp_path / "b", model)  # no --out-dir: nothing to keep
    last = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == 130 and "Traceback" not in proc.stderr, proc.stderr
    assert re.search(r"interrupted after \d+ of 13 images: nothing was kept$", last), last

    # SIGTERM (a batch system's time limit) keeps what was done as Ctrl-C does
    out = tmp_path / "report-term"
    proc = _interrupt_after_first_images(tmp_path / "c", model, "--out-dir", str(out), sig=signal.SIGTERM)
    last = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == 130 and "Traceback" not in proc.stderr, proc.stderr
    assert re.search(r"interrupted after \d+ of 13 images", last) and "detections.json" in last, last
    assert json.loads((out / "detections.json").read_text())


def test_evaluate_reports_recall_of_windows_and_proposals(effnet_onnx, synthetic_coco, tmp_path):
    from slidewin.proposals.detector import ProposalConfig

    model = tmp_path / "m.onnx"
    os.link(effnet_onnx, model)
    windows = evaluate(synthetic_coco, model, limit=2, progress=False)
    single = ProposalConfig(method="selective-search-single", min_score=0.01)
    out = tmp_path / "report"
    props = evaluate(synthetic_coco, model, limit=2, progress=False, proposals=single, out_dir=out)
    for m in (windows, props):
        assert 0 <= m.AR100 <= m.AR1000 <= 1 and 0 <= m.recall75 <= m.recall50 <= 1
        assert m.recall["ground_truth_boxes"] == 2 and m.candidates_per_image > 0
    assert props.proposals["method"] == "selective-search-single" and windows.proposals == "windows"
    assert "proposals" in props.stage_seconds_per_image
    # the pasted photos are rectangles: selective search boxes them (almost) exactly, windows only roughly
    assert props.recall75 == 1.0 and props.AR1000 > windows.AR1000, (props.AR1000, windows.AR1000)
    assert (out / "recall.png").stat().st_size > 1000 and "AR@100" in (out / "report.md").read_text()


def test_cli_evaluate_with_proposals(effnet_onnx, synthetic_coco, tmp_path, capsys):
    model = tmp_path / "m.onnx"
    os.link(effnet_onnx, model)
    code = main(["evaluate", "--data", str(synthetic_coco), "--model", str(model), "--limit", "1",
                 "--proposals", "selective-search-single", "--proposal-scoring", "crops", "--max-proposals", "50"])
    out = capsys.readouterr().out
    assert code == 0 and "proposals=selective-search-single (crops)" in out and "recall@0.5" in out
