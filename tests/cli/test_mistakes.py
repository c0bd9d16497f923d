"""User mistakes (issue 12): each is one line on stderr naming the problem, a non-zero exit code,
never "internal error", and it is caught before any detection work where it can be."""

from __future__ import annotations

import json
import resource
import signal
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from slidewin.cli import main


@pytest.fixture
def image(tmp_path) -> Path:
    path = tmp_path / "in.jpg"
    rng = np.random.default_rng(0)
    cv2.imwrite(str(path), cv2.GaussianBlur(rng.integers(0, 255, (120, 160, 3), np.uint8), (0, 0), 3))
    return path


@pytest.fixture
def tiny(tmp_path, tiny_model) -> Path:
    return tiny_model(tmp_path / "tiny.onnx", ["N", 32, 32, 3])


@pytest.fixture
def conv(tiny_conv) -> Path:
    """A dense-capable model file (its dense form is cached beside it, in tmp_path)."""
    return tiny_conv.path


def no_internal_error(capsys, code, *needles) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.strip().splitlines() if not line.startswith("note:")]
    assert code != 0 and len(lines) == 1 and "Traceback" not in err, (code, err)
    assert "internal error" not in lines[0], lines[0]
    for needle in needles:
        assert str(needle) in lines[0], (needle, lines[0])
    return lines[0]


@pytest.mark.parametrize("argv, needle", [
    (["--stride", "inf"], "finite"),
    (["--stride", "nan"], "finite"),
    (["--scale", "inf"], "finite"),
    (["--min-score", "nan"], "finite"),
    (["--stride", "16.5"], "whole number"),
    (["--classes", "²"], "unknown class '²'"),
    (["--classes", "0-30000000"], "out of range"),
    (["--classes", "3-1"], "is empty"),
    (["--batch-size", "1000000000", "--mode", "patch"], "--batch-size"),
    (["--batch-size", "1e9"], "whole number"),
])
def test_bad_detector_arguments_are_one_line(tiny, image, capsys, argv, needle):
    try:
        code = main(["detect", str(image), "--model", str(tiny), *argv])
    except SystemExit as e:  # argparse's own checks
        code = e.code
    no_internal_error(capsys, code, needle)


def test_dense_stride_must_be_the_network_stride(conv, image, capsys):
    code = main(["detect", str(image), "--model", str(conv), "--mode", "dense", "--stride", "16"])
    no_internal_error(capsys, code, "--stride must be 32")


def test_huge_class_range_is_refused_before_allocating(tiny, image, capsys):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    code = main(["detect", str(image), "--model", str(tiny), "--classes", "0-300000000"])
    no_internal_error(capsys, code, "class index 300000000 out of range")
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100_000  # KiB


@pytest.mark.parametrize("flag", ["--out-image", "--out", "--json"])  # --out: the old spelling
def test_outputs_onto_a_directory_an_input_or_below_a_file(tiny, image, tmp_path, capsys, flag):
    (tmp_path / "adir").mkdir()
    (tmp_path / "afile").write_text("x")
    data = image.read_bytes()
    cases = [(tmp_path / "adir", "is a folder"), (image, "would overwrite an input file"),
             (tiny, "would overwrite an input file"), (tmp_path / "afile" / "x.json", "is a file")]
    for target, needle in cases:
        code = main(["detect", str(image), "--model", str(tiny), flag, str(target)])
        no_internal_error(capsys, code, flag, needle)
    assert image.read_bytes() == data


def test_out_dir_that_is_a_file(tiny, image, tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    code = main(["detect", str(image.parent), "--model", str(tiny), "--out-dir", str(tmp_path / "afile")])
    no_internal_error(capsys, code, "--out-dir is a file")


def test_dense_cache_that_cannot_be_written_anywhere_is_kept_in_memory(conv, image, tmp_path, capsys, monkeypatch):
    """Neither beside the model nor in the cache folder: the run keeps the dense form in memory
    (issue 22; it used to fail), and writes nothing anywhere."""
    beside = conv.with_name(conv.stem + ".dense.onnx")
    beside.mkdir()
    (tmp_path / "cache-is-a-file").write_text("x")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache-is-a-file"))
    for mode in ("dense", "auto"):
        assert main(["detect", str(image), "--model", str(conv), "--mode", mode]) == 0
        assert "error" not in capsys.readouterr().err
    assert not any(beside.iterdir()) and (tmp_path / "cache-is-a-file").read_text() == "x"


def test_model_with_infinite_outputs_is_a_model_error(tiny, image, capsys):
    model = onnx.load(str(tiny))
    for t in model.graph.initializer:
        t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t) * np.float32(1e38), t.name))
    onnx.save(model, str(tiny))
    code = main(["detect", str(image), "--model", str(tiny), "--window", "64"])
    assert code == 4
    no_internal_error(capsys, code, "inf or NaN")


def test_plan_that_would_explode_is_refused_with_what_to_change(tiny_conv):
    from slidewin.pipeline.config import DetectorConfig
    from slidewin.pipeline.sliding import SlidingWindowDetector

    detector = SlidingWindowDetector(tiny_conv, config=DetectorConfig(windows_hw=((8, 8),), reference_side=None))
    with pytest.raises(Exception, match=r"GiB.*use larger --window sizes \(the smallest is 8x8 here\)"):
        detector.plan((6000, 8000))
    assert detector.plan((60, 80))  # the same settings on a small image are fine


def test_labels_and_file_names_reach_the_terminal_escaped(tmp_path, image, capsys, tiny_model):
    path = tiny_model(tmp_path / "evil.onnx", ["N", 32, 32, 3])
    model = onnx.load(str(path))
    for p in model.metadata_props:
        if p.key == "labels":
            p.value = json.dumps(["\x1b[2J\x1b]0;pwned\x07a", "b\nslidewin: error: forged", "c", "d"])
    onnx.save(model, str(path))
    odd = tmp_path / "odd\x1b[31mname.jpg"
    odd.write_bytes(image.read_bytes())
    assert main(["detect", str(odd), "--model", str(path), "--window", "64", "--min-score", "0"]) == 0
    out, err = capsys.readouterr()
    assert "\x1b" not in out + err and "\\x1b[2J" in out and "\\x1b[31m" in out
    assert not any(line.startswith("slidewin: error") for line in (out + err).splitlines())


def test_draw_on_a_full_disk_records_the_image_and_goes_on(tiny, tmp_path):
    """RLIMIT_FSIZE makes every drawn image too large to write (EFBIG), as a full disk would."""
    rng = np.random.default_rng(0)
    (tmp_path / "in").mkdir()
    for name in ("a.jpg", "b.jpg"):
        cv2.imwrite(str(tmp_path / "in" / name), rng.integers(0, 255, (300, 400, 3), np.uint8))

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))

    proc = subprocess.run([sys.executable, "-m", "slidewin.cli", "detect", str(tmp_path / "in"), "--model", str(tiny),
                           "--out-dir", str(tmp_path / "out"), "--draw", "--window", "96"],
                          capture_output=True, text=True, timeout=120, preexec_fn=limit)
    assert proc.returncode == 3 and "Traceback" not in proc.stderr, proc.stderr
    records = [json.loads(line) for line in (tmp_path / "out" / "results.jsonl").open()]
    assert [Path(r["image"]).name for r in records] == ["a.jpg", "b.jpg"]
    for r in records:
        assert "cannot write the drawn image" in r["error"] and "File too large" in r["error"], r
