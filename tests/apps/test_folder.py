"""Folder runs (`slidewin detect DIR --out-dir OUT`): one whole line per image, whatever happens.

The tiny model makes these tests fast; its output does not matter here.
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
import pytest

from slidewin.apps.folder.inputs import collect_inputs
from slidewin.apps.folder.run import SOME_FAILED_EXIT, drawn_path, run_folder
from slidewin.cli import main

ROOT = Path(__file__).resolve().parents[2]
TIMING = ("seconds",)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, tiny_model) -> Path:
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
    # A folder record is the --json record of that image (timings aside): both run the display preset.
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
    (["--out-dir", "O", "--json", "x.json"], "--out-image and --json are for one image"),
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
    from slidewin.pipeline.sliding import SlidingWindowDetector

    for i in range(5):
        photo(tmp_path / "in" / f"{i}.jpg", i)
    out = tmp_path / "out"
    real_run, calls = SlidingWindowDetector.detect, []

    def run(self, image, prepared=None):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_run(self, image, prepared)

    monkeypatch.setattr(SlidingWindowDetector, "detect", run)
    assert main(detect(tmp_path / "in", "--model", tiny, "--out-dir", out)) == 130
    err = capsys.readouterr().err
    assert "--resume" in err and "interrupted" in err
    assert len(records(out)) == 2
    monkeypatch.setattr(SlidingWindowDetector, "detect", real_run)
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
    from slidewin.pipeline.factory import build_detector

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


def test_prefetch_never_decodes_a_huge_image_ahead(tmp_path, monkeypatch):
    """Look-ahead is bounded by declared pixels: an image over the budget is decoded only when
    it is next, never while another one is being detected in."""
    import threading

    import slidewin.apps.folder.prefetch as prefetch
    from slidewin.core.detections import Detections
    from slidewin.core.detector import RunStats

    names = ["0.jpg", "1.jpg", "2-big.jpg", "3.jpg", "4.jpg"]
    for i, name in enumerate(names):
        photo(tmp_path / "in" / name, i, hw=(300, 400) if "big" in name else (30, 40))
    monkeypatch.setattr(prefetch, "PREFETCH_PIXELS", 10_000)  # room for a few small images only
    events, lock = [], threading.Lock()
    real_decode = prefetch.decode

    def decode(path, convert, max_pixels, prepare):
        with lock:
            events.append(("decode", path.name))
        return real_decode(path, convert, max_pixels, prepare)

    class Detector:
        labels, meta, providers, last_stats = ("a",), None, [], None

        def prepare(self, image):
            return None

        def detect(self, image, prepared=None):
            with lock:
                events.append(("run", image.shape[1]))
            time.sleep(0.05)  # let the pool run ahead if it would
            with lock:
                events.append(("done", image.shape[1]))
            self.last_stats = RunStats()
            return Detections.empty(self.labels)

    monkeypatch.setattr(prefetch, "decode", decode)
    _, inputs = collect_inputs([tmp_path / "in"])
    s = run_folder(Detector(), inputs, tmp_path / "out", "m", prefetch=4, progress=False)
    assert s.ok == 5
    big = events.index(("decode", "2-big.jpg"))
    assert events[:big].count(("done", 40)) == 2 and ("run", 40) not in events[big - 1:big]
    assert events.index(("decode", "1.jpg")) < events.index(("done", 40))   # small ones do go ahead
