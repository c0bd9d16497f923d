"""slidewin evaluate: COCO AP by faster-coco-eval, category plan, refusal of random weights."""

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from slidewin.cli import main
from slidewin.errors import UntrainedModelError
from slidewin.apps.evaluate import EvalResult, category_plan, evaluate, load_dataset
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


@pytest.mark.parametrize("mode", ["patch", "dense"])
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
        "candidates_per_image", "seconds", "seconds_per_image", "stage_seconds_per_image"]
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


def test_real_coco_photos_run_with_real_categories(effnet_onnx, tmp_path):
    model = tmp_path / "m.onnx"
    model.write_bytes(effnet_onnx.read_bytes())
    m = evaluate(COCO_MINI, model, mode="dense", limit=8, progress=False)
    assert m.images == 8
    # coco-mini's 12 photos have cars and no cats: a category without boxes is excluded, said so
    assert "person" in m.classes_excluded and "car" in m.classes_evaluated and "cat" in m.classes_excluded
    assert 0 <= m.AP <= 1


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
