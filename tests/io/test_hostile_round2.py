"""Hostile input, round 2 (issue 22): broken region-proposal models, deep trees, huge model
inputs, closed standard streams and early Ctrl-C.

Command-line cases run in a subprocess under an address-space limit and a timeout and measure
their own peak memory (`test_hostile_files.run_limited`); they fail on a traceback, an
"internal error", a hang, memory past 1.5 GB or more than one error line.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from slidewin.core.contract import ModelKind, ModelMeta, write_metadata
from test_hostile_files import one_error_line, photo, run_limited

ROOT = Path(__file__).resolve().parents[2]
LABELS = ("__background__", "person", "bicycle", "car")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, tiny_model) -> Path:
    return tiny_model(tmp_path_factory.mktemp("hostile-r2-model") / "tiny.onnx", ["N", 32, 32, 3])


def region_model(path: Path, boxes, scores, labels, extra=None, canvas=(64, 64)) -> Path:
    """A region-proposal model (slidewin's metadata) whose graph returns these constants, of
    any shape and type: what a hand-made or damaged export may return."""
    def const(name, elem, value):
        value = np.asarray(value)
        return helper.make_node("Constant", [], [name],
                                value=helper.make_tensor(f"c_{name}", elem, value.shape, value.ravel()))

    nodes = [const("boxes", TensorProto.FLOAT, np.asarray(boxes, np.float32)),
             const("scores", TensorProto.FLOAT, np.asarray(scores, np.float32)),
             const("labels", TensorProto.INT64, np.asarray(labels, np.int64))]
    x = helper.make_tensor_value_info("image", TensorProto.UINT8, [1, *canvas, 3])
    ys = [helper.make_tensor_value_info(n, e, None)
          for n, e in (("boxes", TensorProto.FLOAT), ("scores", TensorProto.FLOAT), ("labels", TensorProto.INT64))]
    model = helper.make_model(helper.make_graph(nodes, "broken_rcnn", [x], ys), opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    write_metadata(model, ModelMeta(kind=ModelKind.REGION_PROPOSAL, input_hw=canvas, labels=LABELS, label_set="custom",
                                    weights="random", architecture="broken", source_framework="onnx.helper",
                                    extra=extra or {}))
    onnx.save(model, str(path))
    return path


BOX = [[2, 2, 40, 40]]


@pytest.mark.parametrize("boxes, scores, labels, extra, needle", [
    (BOX, [0.9], [7], None, "output labels holds id 7, outside the model's 4 labels"),
    (BOX, [0.9], [-1], None, "output labels holds id -1"),
    ([[2, 2, 40, 40, 0.5]], [0.9], [1], None, "output boxes has shape (1, 5)"),
    ([2, 2, 40, 40], [0.9], [1], None, "output boxes has shape (4,)"),
    (BOX, [0.9, 0.8], [1], None, "output scores has shape (2,), expected (1,)"),
    (BOX, [0.9], [1, 2], None, "output labels has shape (2,), expected (1,)"),
    (BOX, [[0.9]], [[1]], None, "output scores has shape (1, 1)"),
    (BOX, [np.nan], [1], None, "inf or NaN"),
    (BOX, [0.9], [1], {"rpn_proposals": "lots"}, "malformed metadata rpn_proposals='lots'"),
    (BOX, [0.9], [1], {"rpn_proposals": "-3"}, "malformed metadata rpn_proposals='-3'"),
    (BOX, [0.9], [1], {"rpn_proposals": "99999999999999999999"}, "malformed metadata rpn_proposals"),
])
def test_broken_region_model_outputs_are_a_model_error(tmp_path, boxes, scores, labels, extra, needle):
    from slidewin.errors import ModelError
    from slidewin.runtime.region import FasterRCNNDetector

    model = region_model(tmp_path / "broken.onnx", boxes, scores, labels, extra)
    with pytest.raises(ModelError) as e:
        FasterRCNNDetector(model).detect(np.full((50, 60, 3), 100, np.uint8))
    assert needle in str(e.value) and str(model) in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("boxes, labels, extra, needle", [
    ([[2, 2, 40, 40, 0.5]], [1], None, "output boxes has shape (1, 5)"),
    (BOX, [9], None, "output labels holds id 9"),
    (BOX, [1], {"rpn_proposals": "1e9"}, "malformed metadata rpn_proposals='1e9'"),
])
def test_broken_region_model_is_one_line_on_the_command_line(tmp_path, boxes, labels, extra, needle):
    model = region_model(tmp_path / "broken.onnx", boxes, [0.9], labels, extra)
    proc = run_limited(tmp_path, "detect", photo(tmp_path / "a.jpg", 0), "--model", model, timeout=60)
    one_error_line(proc, 4, model, needle)


def test_broken_region_model_in_a_folder_run_is_recorded_per_image(tmp_path):
    model = region_model(tmp_path / "broken.onnx", [[2, 2, 40, 40, 0.5]], [0.9], [1])
    photo(tmp_path / "in" / "a.jpg", 0)
    photo(tmp_path / "in" / "b.jpg", 1)
    proc = run_limited(tmp_path, "detect", tmp_path / "in", "--model", model, "--out-dir", tmp_path / "out", timeout=60)
    assert proc.returncode == 3, proc.stderr
    lines = (tmp_path / "out" / "results.jsonl").read_text().splitlines()
    assert len(lines) == 2
    assert all("output boxes has shape (1, 5)" in json.loads(line)["error"] for line in lines)


def test_a_good_region_model_still_detects(tmp_path):
    """The output checks refuse only what breaks the contract."""
    from slidewin.runtime.region import FasterRCNNDetector

    det = FasterRCNNDetector(region_model(tmp_path / "ok.onnx", BOX * 2, [0.9, 0.7], [1, 3],
                                          {"rpn_proposals": "1000"}), min_score=0.5)
    dets = det.detect(np.full((64, 64, 3), 100, np.uint8))
    assert dets.class_ids.tolist() == [1, 3] and det.last_stats.windows == 1000


def test_a_folder_1200_levels_deep_is_walked(tmp_path, tiny):
    top = tmp_path / "deep"
    chain = [top / ("d/" * i) for i in range(1201)]  # ~2,400 characters: within PATH_MAX
    for folder in chain:
        os.mkdir(folder)  # one by one: os.makedirs and rmtree recurse
    photo(chain[-1] / "x.jpg", 0)
    try:
        t0 = time.monotonic()
        proc = run_limited(tmp_path, "detect", top, "--model", tiny, "--out-dir", tmp_path / "out", timeout=60)
        seconds = time.monotonic() - t0
        assert proc.returncode == 0, proc.stderr
        (line,) = (tmp_path / "out" / "results.jsonl").read_text().splitlines()
        assert "error" not in json.loads(line) and line.count("d/") == 1200
        assert seconds < 30  # resolving each folder's real path made it quadratic (~30 s)
    finally:
        os.unlink(chain[-1] / "x.jpg")
        for folder in reversed(chain):
            os.rmdir(folder)


@pytest.mark.parametrize("command", ["classify", "detect", "labels"])
def test_a_model_declaring_a_100000_square_input_is_one_line(tmp_path, tiny_model, command):
    big = tiny_model(tmp_path / "big.onnx", ["N", 100000, 100000, 3])
    img = photo(tmp_path / "a.jpg", 0)
    argv = [command, img, "--model", big] if command != "labels" else [command, "--model", big]
    proc = run_limited(tmp_path, *argv, timeout=60)
    if command == "labels":  # listing labels runs nothing
        assert proc.returncode == 0, proc.stderr
        return
    one_error_line(proc, 4, big, "input is 100000x100000", "at most 16,777,216")


# --- closed standard streams -------------------------------------------------------------------

def _run_closed(argv, close: tuple[int, ...], tmp_path: Path) -> subprocess.CompletedProcess:
    """``slidewin ARGV`` with the file descriptors in ``close`` closed, as ``>&-`` / ``2>&-`` do;
    what is left open is captured."""
    def preexec():
        for fd in close:
            os.close(fd)

    return subprocess.run([sys.executable, "-m", "slidewin", *map(str, argv)], preexec_fn=preexec, timeout=120,
                          stdout=subprocess.PIPE if 1 not in close else None,
                          stderr=subprocess.PIPE if 2 not in close else None, text=True, cwd=tmp_path)


@pytest.mark.parametrize("close", [(2,), (1,), (1, 2), (0, 1, 2)])
def test_closed_standard_streams_never_stop_a_folder_run(tmp_path, tiny, close):
    photo(tmp_path / "in" / "a.jpg", 0)
    photo(tmp_path / "in" / "b.jpg", 1)
    (tmp_path / "in" / "c.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")  # an error line for stderr
    out = tmp_path / "out"
    proc = _run_closed(["detect", "in", "--model", tiny, "--out-dir", out], close, tmp_path)
    assert proc.returncode == 3
    recs = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert sorted(Path(r["image"]).name for r in recs) == ["a.jpg", "b.jpg", "c.jpg"]
    assert ["error" not in r for r in sorted(recs, key=lambda r: r["image"])] == [True, True, False]
    if 2 not in close:
        assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr, proc.stderr
        assert "standard output is closed" in proc.stderr
    if 1 not in close:
        assert "2 ok, 1 failed" in proc.stdout


@pytest.mark.parametrize("close", [(2,), (1,)])
def test_closed_stream_one_photo(tmp_path, tiny, close):
    img = photo(tmp_path / "a.jpg", 0)
    proc = _run_closed(["classify", img, "--model", tiny, "--top-k", "2"], close, tmp_path)
    assert proc.returncode == 0
    if 1 in close:
        assert proc.stderr.strip().splitlines() == [
            "slidewin: note: standard output is closed: what this command prints is discarded (the files it "
            "writes are still written)"]
    else:
        assert proc.stdout.count("\n") == 3  # the image's line and two labels


# --- Ctrl-C at any moment ----------------------------------------------------------------------

_READY = "from slidewin.cli import entry; import os; os.write(1, b'R'); entry()"


@pytest.mark.parametrize("delay", [0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.4])
def test_sigint_early_in_a_command_is_one_line(tmp_path, tiny, delay):
    """A real SIGINT at several moments of a command's first 0.4 s after slidewin's code starts
    (the import of the parser, the commands, NumPy and ONNX Runtime, the model's opening): one
    line and exit code 130, never a traceback, whichever import it lands in. The child says when
    it has imported ``slidewin.cli``; what comes before (the interpreter's start, ~10 ms of
    standard-library imports) is Python's own."""
    photo(tmp_path / "in" / "a.jpg", 0)
    proc = subprocess.Popen([sys.executable, "-c", _READY, "detect", "in", "--model", str(tiny), "--out-dir", "out"],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.read(1) == "R"
        time.sleep(delay)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert "Traceback" not in err and "internal error" not in err, err
    if proc.returncode == 0:  # the run finished first: nothing to interrupt
        return
    assert proc.returncode == 130, (proc.returncode, err)
    said = [line for line in err.splitlines() if line.strip() and not line.startswith("note:")]
    assert said == ["slidewin: interrupted"], err


# --- nowhere to write: the dense form in memory, ONNX Runtime's telemetry quiet -----------------

def _nowhere_to_write(tmp_path: Path, model: Path) -> tuple[Path, dict]:
    """``model`` copied where neither its dense form's place beside it (taken by a folder) nor
    the cache folder (under a regular file) can be written, even by root."""
    import shutil

    home = tmp_path / "models"
    home.mkdir()
    copy = Path(shutil.copy(model, home / "m.onnx"))
    (home / "m.dense.onnx").mkdir()
    (tmp_path / "a-file").write_text("")
    return copy, {"XDG_CACHE_HOME": str(tmp_path / "a-file" / "cache")}


def test_mode_auto_with_nowhere_to_cache_keeps_the_dense_form_in_memory(tmp_path, effnet_onnx):
    """The same detections as a run whose dense form was cached, no error, no colour codes."""
    model, env = _nowhere_to_write(tmp_path, effnet_onnx)
    img = ROOT / "tests" / "data" / "coco-mini" / "images" / "000000000790.jpg"
    argv = ["detect", img, "--model", model, "--classes", "coco", "--min-score", "0.2", "--json", "-"]
    proc = run_limited(tmp_path, *argv, "--mode", "dense", env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "\x1b" not in proc.stderr and "telemetry" not in proc.stderr.lower(), proc.stderr
    assert not any((tmp_path / "models" / "m.dense.onnx").iterdir())
    cached = run_limited(tmp_path, *argv, "--mode", "dense", env={"XDG_CACHE_HOME": str(tmp_path / "cache")},
                         timeout=120)  # the same copy, its dense form cached in a writable cache folder
    assert cached.returncode == 0, cached.stderr
    got, want = json.loads(proc.stdout), json.loads(cached.stdout)
    assert got["detections"] == want["detections"] and got["detections"]
    auto = run_limited(tmp_path, *argv, "--mode", "auto", env=env, timeout=120)
    assert auto.returncode == 0 and json.loads(auto.stdout)["detections"] == want["detections"], auto.stderr


def test_onnxruntime_telemetry_warning_never_reaches_the_terminal(tmp_path, tiny):
    """ONNX Runtime warns in raw colour codes on import when its cache folder cannot be written."""
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "a-file" / "cache")}
    (tmp_path / "a-file").write_text("")
    raw = subprocess.run([sys.executable, "-c", "import onnxruntime"], capture_output=True, text=True, env=env)
    if "telemetry" not in raw.stderr:
        pytest.skip("this ONNX Runtime prints no telemetry warning")
    proc = subprocess.run([sys.executable, "-m", "slidewin", "classify", photo(tmp_path / "a.jpg", 0), "--model", tiny],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr


# --- export: what the user gave is judged before TensorFlow loads -------------------------------

@pytest.mark.parametrize("case, needle", [
    ("weights-missing", "weights file not found"),
    ("weights-suffix", "unsupported weights file type '.txt'"),
    ("labels-missing", "cannot read labels file"),
    ("labels-fifo", "FIFO"),
    ("out-folder", "--out is a folder"),
])
def test_export_keras_resnet50_refuses_bad_arguments_before_importing_tensorflow(tmp_path, case, needle):
    pytest.importorskip("slidewin_export")
    weights, labels, out = "none", None, tmp_path / "m.onnx"
    if case == "weights-missing":
        weights = str(tmp_path / "missing.keras")
    elif case == "weights-suffix":
        weights = str(tmp_path / "w.txt")
        Path(weights).write_text("not a model")
    elif case == "labels-missing":
        labels = tmp_path / "missing.txt"
    elif case == "labels-fifo":
        labels = tmp_path / "labels.txt"
        os.mkfifo(labels)
    else:
        out = tmp_path
    argv = ["export", "keras-resnet50", "--weights", weights, "--out", out] + (["--labels", labels] if labels else [])
    proc = run_limited(tmp_path, *argv, timeout=60)
    assert "importing TensorFlow" not in proc.stderr, proc.stderr
    one_error_line(proc, 2, needle)
