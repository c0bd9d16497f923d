"""detect --heatmap: the classifier's dense probability map of the top classes, over a real photo
with a real model (EfficientNet-Lite0, ImageNet weights), and its refusals."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from conftest import COCO_MINI

from slidewin.cli import main
from slidewin.io.drawing import color_for
from slidewin.io.images import load_image

DOG_PHOTO = 69468  # a spaniel lying on a kitchen floor, a man and a fridge above it


def gt_mask(image_id: int, category: str, hw: tuple[int, int]) -> np.ndarray:
    """True inside the ground-truth boxes of one category on a coco-mini photo."""
    data = json.loads((COCO_MINI / "instances.json").read_text())
    cat = next(c["id"] for c in data["categories"] if c["name"] == category)
    mask = np.zeros(hw, bool)
    for a in data["annotations"]:
        if a["image_id"] == image_id and a["category_id"] == cat:
            x, y, w, h = (int(round(v)) for v in a["bbox"])
            mask[y:y + h, x:x + w] = True
    assert mask.any()
    return mask


def photo_path(image_id: int):
    return COCO_MINI / "images" / f"{image_id:012d}.jpg"


def test_the_heatmap_is_warm_on_the_dog_and_cool_around_it(effnet_onnx, tmp_path, capsys):
    from slidewin.apps.heatmap import target_heat
    from slidewin.pipeline.factory import build_detector

    photo = photo_path(DOG_PHOTO)
    out = tmp_path / "heat.png"
    code = main(["detect", str(photo), "--model", str(effnet_onnx), "--classes", "dog", "--heatmap", str(out)])
    assert code == 0
    assert f"wrote heatmap: {out}" in capsys.readouterr().out
    image = load_image(photo)
    picture = cv2.cvtColor(cv2.imread(str(out)), cv2.COLOR_BGR2RGB)
    assert picture.shape == image.shape
    dog = gt_mask(DOG_PHOTO, "dog", image.shape[:2])
    # the heat itself: the classifier sees the dog in its box, far less around it
    heat = target_heat(build_detector(effnet_onnx, classes="dog"), image)
    assert heat.names == ("dog",) and heat.peaks[0] > 0.9
    hot = heat.rows(0, image.shape[0])[..., 0]
    assert hot[dog].mean() > 0.7 and hot[dog].mean() > 2.5 * hot[~dog].mean()
    # the picture: painted in the dog's box colour inside its box, the photo shows through outside
    to_colour = np.linalg.norm(picture.astype(float) - color_for(0), axis=-1)
    assert to_colour[dog].mean() < 0.6 * to_colour[~dog].mean()
    changed = np.abs(picture.astype(float) - image).mean(-1)
    assert changed[dog].mean() > changed[~dog].mean()


def test_many_targets_show_the_three_with_the_highest_peak_in_one_pass_or_two(effnet_onnx):
    """An ImageNet model with every label a target: the 3 labels whose best window scores most,
    the same peaks as the dense detector's own window probabilities, and the same heat whether
    every target's maps fit in memory or a first pass finds the peaks."""
    from slidewin.apps.heatmap import target_heat
    from slidewin.pipeline.config import DetectorConfig
    from slidewin.pipeline.factory import build_detector

    image = load_image(photo_path(DOG_PHOTO))
    image = cv2.resize(image, (image.shape[1] // 2, image.shape[0] // 2), interpolation=cv2.INTER_AREA)
    detector = build_detector(effnet_onnx, config=DetectorConfig(mode="dense"))
    heat = target_heat(detector, image)
    probs, _ = detector.window_probabilities(image)
    best = probs.max(axis=0)
    want = np.argsort(-best, kind="stable")[:3]
    assert heat.class_ids == tuple(want.tolist()) and len(heat.names) == 3
    np.testing.assert_allclose(heat.peaks, best[want], atol=1e-5)
    assert "spaniel" in heat.names[0] or "retriever" in heat.names[0] or "dog" in heat.names[0].lower()
    two_pass = target_heat(detector, image, held_bytes=0)
    assert two_pass.class_ids == heat.class_ids
    for a, b in zip(heat.levels, two_pass.levels):
        np.testing.assert_array_equal(a.scores, b.scores)


def test_a_model_without_a_dense_form_is_refused_in_one_line(tiny_model, tmp_path, capsys, one_line_error):
    from slidewin.core.contract import ModelKind

    photo, out = str(photo_path(DOG_PHOTO)), tmp_path / "heat.png"
    tiny = tiny_model(tmp_path / "tiny.onnx", [1, 32, 32, 3])  # averages its input: no feature grid
    code = main(["detect", photo, "--model", str(tiny), "--heatmap", str(out)])
    one_line_error(capsys, code, tiny, "--heatmap needs the classifier's dense form", "tiny")
    rpn = tiny_model(tmp_path / "rpn.onnx", [1, 32, 32, 3], kind=ModelKind.REGION_PROPOSAL)
    code = main(["detect", photo, "--model", str(rpn), "--heatmap", str(out)])
    one_line_error(capsys, code, rpn, "--heatmap", "region-proposal model")
    assert not out.exists()


def test_a_vision_transformer_is_refused_naming_the_model(torch_classifier, tmp_path, capsys, one_line_error):
    pytest.importorskip("timm")
    vit, _, _ = torch_classifier("timm", "test_vit", 7, (160, 160))
    capsys.readouterr()
    out = tmp_path / "heat.png"
    code = main(["detect", str(photo_path(DOG_PHOTO)), "--model", str(vit), "--heatmap", str(out)])
    # one line: not also auto mode's note that it runs patch mode
    one_line_error(capsys, code, vit, "--heatmap needs the classifier's dense form", "timm:test_vit", "Gather")
    assert not out.exists()


@pytest.mark.parametrize("case", ["suffix", "stdout", "onto the photo", "folder", "out-dir", "several"])
def test_bad_heatmap_requests_get_one_line_before_any_work(case, effnet_onnx, tmp_path, capsys, one_line_error):
    photo = str(photo_path(DOG_PHOTO))
    heat, needle = str(tmp_path / "heat.png"), "one image file"
    inputs, extra = [photo], []
    if case == "suffix":
        heat, needle = str(tmp_path / "heat.txt"), "suffix '.txt'"
    elif case == "stdout":
        heat, needle = "-", "give its path"
    elif case == "onto the photo":
        heat, needle = photo, "would overwrite an input file"
    elif case == "folder":
        inputs = [str(COCO_MINI / "images")]
    elif case == "out-dir":
        extra = ["--out-dir", str(tmp_path / "out")]
    else:
        inputs = [photo, str(photo_path(790))]
    code = main(["detect", *inputs, "--model", str(effnet_onnx), "--heatmap", heat, *extra])
    line = one_line_error(capsys, code, "--heatmap", needle)
    if case == "suffix":
        assert "heat.txt" in line
    assert not (tmp_path / "out").exists()
