"""CLI smoke tests through main([...]), and one real subprocess for the console entry point."""

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
from slidewin.core.boxes import box_iou
from slidewin.core.contract import ModelKind, ModelMeta, write_metadata
from slidewin_export.demo_scene import paste, synthetic_background

CAT_IDS = range(281, 286)


def test_classify_names_a_cat(effnet_onnx, chelsea, capsys):
    assert main(["classify", str(chelsea), "--model", str(effnet_onnx), "--top-k", "3"]) == 0
    out = capsys.readouterr().out
    names = {"tabby", "tiger cat", "Persian cat", "Siamese cat", "Egyptian cat", "Egyptian Mau"}
    assert any(n in out for n in names), out


@pytest.mark.parametrize("mode", ["patch", "dense"])
def test_detect_finds_a_photo_pasted_into_a_scene(effnet_onnx, tmp_path, capsys, mode, save_rgb):
    """A real cat photo in a synthetic scene: found, labelled cat, boxed at IoU >= 0.5.

    The photo is pasted 336x224, the size of the second pyramid level's window, at a place
    unrelated to the window grid. Over random sizes and places the default square windows reach
    IoU >= 0.5 about 70% of the time in patch mode (windows on the cat's face outscore the whole
    cat); detection quality proper is measured by COCO AP in `slidewin evaluate`.
    """
    from skimage import data

    scene = synthetic_background((560, 900), seed=7)
    cat_box = (100, 250, 436, 474)
    paste(scene, data.chelsea(), cat_box)
    image = save_rgb(tmp_path / "scene.jpg", scene)
    out_img, out_json = tmp_path / "o.jpg", tmp_path / "o.json"
    model = tmp_path / "m.onnx"     # a private copy: dense mode caches its rewrite beside the model
    model.write_bytes(effnet_onnx.read_bytes())
    code = main(["detect", str(image), "--model", str(model), "--classes", "cat", "--mode", mode,
                 "--out-image", str(out_img), "--json", str(out_json)])
    assert code == 0
    record = json.loads(out_json.read_text())
    assert (record["width"], record["height"]) == (900, 560)
    assert set(record) >= {"image", "width", "height", "model", "detections"}
    dets = record["detections"]
    assert dets, "no detection"
    assert max(dets, key=lambda d: d["score"])["label"] == "cat"
    cats = np.array([d["xyxy"] for d in dets if d["label"] == "cat"])
    assert box_iou(cats, np.array([cat_box])).max() >= 0.5, dets
    drawn = cv2.imread(str(out_img))
    assert drawn.shape == (560, 900, 3)
    assert "wrote image" in capsys.readouterr().out


def test_detect_json_to_stdout(effnet_onnx, chelsea, capsys):
    assert main(["detect", str(chelsea), "--model", str(effnet_onnx), "--json", "-", "--classes", "cat"]) == 0
    out = capsys.readouterr().out
    record = json.loads(out)
    assert record["detections"] and record["detections"][0]["label"] == "cat"
    x1, y1, x2, y2 = record["detections"][0]["xyxy"]
    assert 0 <= x1 < x2 <= record["width"] and 0 <= y1 < y2 <= record["height"]


def test_demo_writes_image_and_json(effnet_onnx, tmp_path, capsys):
    code = main(["demo", "--model", str(effnet_onnx), "--out-dir", str(tmp_path)])
    assert code == 0
    record = json.loads((tmp_path / "demo.json").read_text())
    labels = {d["label"] for d in record["detections"]}
    assert "cat" in labels and "cup" in labels, record["detections"]
    assert (tmp_path / "demo.jpg").stat().st_size > 10_000
    assert str(tmp_path / "demo.json") in capsys.readouterr().out


# --- bad input -------------------------------------------------------------------------------

def bad_images(tmp: Path) -> dict[str, Path]:
    good = cv2.imencode(".jpg", np.full((64, 64, 3), 90, np.uint8))[1].tobytes()
    (tmp / "bytes.jpg").write_bytes(b"\x00\x01garbage" * 50)
    (tmp / "cut.jpg").write_bytes(good[:-60])
    cv2.imwrite(str(tmp / "gray.png"), np.zeros((32, 32), np.uint8))
    cv2.imwrite(str(tmp / "rgba.png"), np.zeros((32, 32, 4), np.uint8))
    cv2.imwrite(str(tmp / "deep.png"), np.zeros((32, 32, 3), np.uint16))
    return {
        "missing": tmp / "missing.jpg", "non-image": tmp / "bytes.jpg", "truncated": tmp / "cut.jpg",
        "grayscale": tmp / "gray.png", "rgba": tmp / "rgba.png", "16-bit": tmp / "deep.png",
    }


@pytest.mark.parametrize("command", ["detect", "classify"])
@pytest.mark.parametrize("case", ["missing", "non-image", "truncated", "grayscale", "rgba", "16-bit"])
def test_bad_image_is_one_line_and_nonzero(effnet_onnx, tmp_path, capsys, command, case, one_line_error):
    path = bad_images(tmp_path)[case]
    code = main([command, str(path), "--model", str(effnet_onnx)])
    one_line_error(capsys, code, path)


@pytest.mark.parametrize(
    "case, needle",
    [
        ("nchw", "expected (N, H, W, 3)"),
        ("rank2", "rank 2"),
        ("int32", "expected uint8 or float"),
        ("no-metadata", "not a slidewin model"),
        ("not-onnx", "not an ONNX model"),
        ("missing", "no such model file"),
    ],
)
def test_bad_model_is_one_line_and_nonzero(tmp_path, chelsea, capsys, case, needle, one_line_error, tiny_model):
    p = tmp_path / f"{case}.onnx"
    if case == "nchw":
        tiny_model(p, ["N", 3, 32, 32])
    elif case == "rank2":
        tiny_model(p, ["N", 3])
    elif case == "int32":
        tiny_model(p, ["N", 32, 32, 3], elem=TensorProto.INT32)
    elif case == "no-metadata":
        tiny_model(p, ["N", 32, 32, 3], meta=False)
    elif case == "not-onnx":
        p.write_bytes(b"definitely not protobuf" * 10)
    code = main(["detect", str(chelsea), "--model", str(p)])
    one_line_error(capsys, code, p, needle)


def test_tiny_valid_model_runs_end_to_end(tmp_path, chelsea, capsys, tiny_model):
    """The runtime accepts any model honouring the contract, not only the exported ones."""
    p = tiny_model(tmp_path / "tiny.onnx", ["N", 32, 32, 3])
    assert main(["detect", str(chelsea), "--model", str(p), "--window", "64", "--min-score", "0"]) == 0
    assert "detection(s)" in capsys.readouterr().out


def test_bad_options_are_one_line(effnet_onnx, chelsea, capsys, one_line_error):
    code = main(["detect", str(chelsea), "--model", str(effnet_onnx), "--classes", "unicorn"])
    one_line_error(capsys, code, "unknown class 'unicorn'")
    code = main(["detect", str(chelsea), "--model", str(effnet_onnx), "--scale", "0.5"])
    one_line_error(capsys, code, "scale")


def test_console_script_missing_file_exits_nonzero_without_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "slidewin.cli", "classify", str(tmp_path / "x.jpg"),
                           "--model", str(tmp_path / "m.onnx")], capture_output=True, text=True)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_the_console_script_leaves_quickly_with_every_line_written(tiny_conv, chelsea, tmp_path):
    """`entry` skips the interpreter's teardown (issue 14) only after flushing: all the output of a
    command reaches a pipe, the exit code is kept, and a one-photo detect needs no teardown."""
    out = subprocess.run([sys.executable, "-m", "slidewin.cli", "detect", str(chelsea), "--model", str(tiny_conv.path),
                          "--min-score", "0", "--json", "-"], capture_output=True, text=True)
    assert out.returncode == 0 and json.loads(out.stdout)["detections"], out.stderr
    code = ("import sys, slidewin.cli as c; c.main(['detect', sys.argv[1], '--model', sys.argv[2], '--json', "
            "sys.argv[3]]); print(c._teardown_needed())")
    one = subprocess.run([sys.executable, "-c", code, str(chelsea), str(tiny_conv.path), str(tmp_path / "d.json")],
                         capture_output=True, text=True, check=True)
    assert one.stdout.split()[-1] == "False", one.stdout


@pytest.mark.parametrize("work", ["import atexit; atexit.register(print, 'bye')",
                                  "import threading, time; threading.Thread(target=time.sleep, args=(0.3,)).start()",
                                  "import tempfile; t = tempfile.TemporaryDirectory()"])
def test_the_console_script_keeps_the_teardown_when_it_has_work(work):
    code = f"{work}; import slidewin.cli as c; print(c._teardown_needed())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.splitlines()[0] == "True", out.stdout


def test_import_slidewin_and_a_local_folder_run_pull_in_no_training_framework_nor_ray(tmp_path, tiny_model):
    tiny = tiny_model(tmp_path / "tiny.onnx", ["N", 32, 32, 3])
    (tmp_path / "in").mkdir()
    cv2.imwrite(str(tmp_path / "in" / "a.jpg"), np.zeros((40, 50, 3), np.uint8))
    heavy = "('tensorflow', 'torch', 'keras', 'tf2onnx', 'ray', 'pyarrow', 'numba')"
    code = ("import sys, slidewin, slidewin.cli; slidewin.cli.build_parser(); "
            f"print([m for m in {heavy} if m in sys.modules]); "
            f"code = slidewin.cli.main(['detect', {str(tmp_path / 'in')!r}, '--model', {str(tiny)!r}, "
            f"'--out-dir', {str(tmp_path / 'out')!r}, '--window', '32']); "
            f"print(code, [m for m in {heavy} if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    lines = out.strip().splitlines()
    assert (lines[0], lines[-1]) == ("[]", "0 []"), out


def test_a_one_photo_detect_never_loads_numba(tiny_conv, chelsea, tmp_path):
    """Few candidates take NumPy's NMS: a one-photo run does not pay for loading numba (issue 14)."""
    code = ("import sys; from slidewin.cli import main; "
            f"code = main(['detect', {str(chelsea)!r}, '--model', {str(tiny_conv.path)!r}, '--min-score', '0', "
            f"'--json', {str(tmp_path / 'd.json')!r}]); print(code, 'numba' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split()[-2:] == ["0", "False"], out
    assert json.loads((tmp_path / "d.json").read_text())["detections"]


def test_default_windows_grow_with_big_photos_but_given_windows_stay_pixels(effnet_onnx, tmp_path, capsys, save_rgb):
    from skimage import data

    small = save_rgb(tmp_path / "small.jpg", cv2.resize(data.chelsea(), (1024, 768)))
    big = save_rgb(tmp_path / "big.jpg", cv2.resize(data.chelsea(), (2048, 1536)))

    def windows(path, *extra):
        assert main(["detect", str(path), "--model", str(effnet_onnx), "--mode", "dense", "--json", "-",
                     "--classes", "cat", *extra]) == 0
        return json.loads(capsys.readouterr().out)

    s, b = windows(small), windows(big)
    assert b["windows"] == s["windows"]                       # searched at the same relative scales
    assert b["detections"] and b["detections"][0]["label"] == "cat"
    b_pixels = windows(big, "--reference-side", "0")           # absolute pixels: ~4x the windows
    assert b_pixels["windows"] > 3 * s["windows"]
    given = windows(big, "--window", "200x150")               # --window sizes are pixels ...
    scaled = windows(big, "--window", "200x150", "--reference-side", "1024")  # ... unless asked
    assert given["windows"] > 3 * scaled["windows"]


def test_merge_option_changes_how_windows_become_boxes(effnet_onnx, chelsea, capsys):
    def run(merge):
        assert main(["detect", str(chelsea), "--model", str(effnet_onnx), "--mode", "dense", "--json", "-",
                     "--classes", "coco", "--min-score", "0.3", "--merge", merge]) == 0
        return json.loads(capsys.readouterr().out)["detections"]

    hard, soft, nested = run("nms"), run("soft-nms"), run("nested")
    assert hard and hard[0]["label"] == "cat"
    assert soft and all(d["score"] >= 0.3 for d in soft)                     # decayed, never below --min-score
    assert soft != hard
    assert soft[0]["xyxy"] == hard[0]["xyxy"] and soft[0]["score"] == hard[0]["score"]  # the top box is untouched
    assert len(nested) <= len(hard)
    with pytest.raises(SystemExit) as e:                                       # argparse: usage + one error line
        main(["detect", str(chelsea), "--model", str(effnet_onnx), "--merge", "wbf"])
    assert e.value.code == 2 and "invalid choice: 'wbf'" in capsys.readouterr().err


def test_cli_dense_mode_detects_and_checks_the_stride(effnet_onnx, tmp_path, capsys):
    from skimage import data

    img = tmp_path / "chelsea.jpg"
    cv2.imwrite(str(img), cv2.cvtColor(data.chelsea(), cv2.COLOR_RGB2BGR))
    model = tmp_path / "m.onnx"
    model.write_bytes(effnet_onnx.read_bytes())
    assert main(["detect", str(img), "--model", str(model), "--mode", "dense", "--classes", "cat",
                 "--json", str(tmp_path / "d.json")]) == 0
    dets = json.loads((tmp_path / "d.json").read_text())["detections"]
    assert dets and dets[0]["label"] == "cat"
    capsys.readouterr()
    code = main(["detect", str(img), "--model", str(model), "--mode", "dense", "--stride", "16"])
    err = capsys.readouterr().err
    assert code != 0 and "--stride must be 32" in err and len(err.strip().splitlines()) == 1
