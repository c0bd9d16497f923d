"""slidewin compare: both detectors on one image, one table, one side-by-side picture."""

import json

import cv2
import numpy as np

from slidewin.cli import main


def test_compare_smoke(effnet_onnx, frcnn_random_onnx, tmp_path, capsys):
    from skimage import data

    img = tmp_path / "coffee.jpg"
    rgb = data.coffee()
    cv2.imwrite(str(img), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    out, js = tmp_path / "side.jpg", tmp_path / "cmp.json"
    code = main(["compare", str(img), "--model", str(effnet_onnx), "--frcnn", str(frcnn_random_onnx),
                 "--out-image", str(out), "--json", str(js), "--proposals", "selective-search-single"])
    assert code == 0
    text = capsys.readouterr().out
    assert "dense windows (efficientnet-lite0)" in text and "region proposal network (fasterrcnn_resnet50_fpn_v2)" in text
    assert "selective-search-single, pooled (efficientnet-lite0)" in text
    assert " windows" in text and "1000 proposals" in text
    # the random-weight model's scores are refused, the trained one's are shown
    assert "refused: untrained" in text and "untrained (random) weights" in text
    h, w = rgb.shape[:2]
    side = cv2.imread(str(out))
    assert side.shape[1] == 3 * w + 2 * 12 and side.shape[0] > h
    payload = json.loads(js.read_text())
    patch, proposals, region = payload["detectors"]
    assert set(proposals["seconds"]) == {"proposals", "pyramid", "inference", "scoring", "nms"}
    assert patch["weights"] == "imagenet" and patch["num_detections"] == len(patch["detections"])
    assert region["weights"] == "random" and region["detections"] == []      # no scores for random weights
    assert set(region["seconds"]) == {"letterbox", "inference", "postprocess"}
    assert set(patch["seconds"]) == {"pyramid", "inference", "scoring", "nms"}
    assert all(np.isfinite(v) for v in patch["seconds"].values())


def test_compare_checks_model_kinds(effnet_onnx, tmp_path, capsys):
    from skimage import data

    img = tmp_path / "c.jpg"
    cv2.imwrite(str(img), data.chelsea()[..., ::-1])
    code = main(["compare", str(img), "--model", str(effnet_onnx), "--frcnn", str(effnet_onnx)])
    err = capsys.readouterr().err
    assert code != 0 and "--frcnn must be a region-proposal model" in err and len(err.strip().splitlines()) == 1


def test_compare_without_frcnn_shows_windows_and_proposals(effnet_onnx, chelsea, tmp_path, capsys):
    out = tmp_path / "side.jpg"
    # the old spellings, --classifier and --out, stay accepted
    code = main(["compare", str(chelsea), "--classifier", str(effnet_onnx), "--out", str(out),
                 "--proposals", "selective-search-single", "--proposal-scoring", "crops", "--max-proposals", "30"])
    text = capsys.readouterr().out
    assert code == 0 and "Faster R-CNN" not in text and "30 proposals" in text
    assert cv2.imread(str(out)).shape[1] == 2 * 451 + 12    # chelsea is 451 px wide
