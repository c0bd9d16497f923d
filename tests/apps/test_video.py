"""Video and the other inputs people try first: ``detect clip.mp4``, ``detect -``, ``classify a b c``.

The clips are made here with ``cv2.VideoWriter`` from the coco-mini photos: 160x120, 10 frames at
10 fps (one second), so that EfficientNet-Lite0 in dense mode runs through one in about a second.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from slidewin.apps.video import VideoOut, codec_candidates, fourcc_text, is_video
from slidewin.cli import main
from slidewin.io.images import max_file_bytes
from slidewin.io.stdin import read_image_stream

ROOT = Path(__file__).resolve().parents[2]
PHOTOS = sorted((ROOT / "tests" / "data" / "coco-mini" / "images").glob("*.jpg"))
FRAMES, FPS, SIZE = 10, 10.0, (160, 120)


def make_clip(path: Path, fourcc: str, frames: int = FRAMES) -> Path:
    """A clip of coco-mini photos, one per frame, resized to SIZE."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), FPS, SIZE)
    assert writer.isOpened(), fourcc
    for i in range(frames):
        writer.write(cv2.resize(cv2.imread(str(PHOTOS[i % len(PHOTOS)])), SIZE, interpolation=cv2.INTER_AREA))
    writer.release()
    return path


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("clips")
    return {"mp4": make_clip(d / "clip.mp4", "mp4v"), "avi": make_clip(d / "clip.avi", "MJPG")}


def frames_of(path: Path) -> tuple[int, float, str]:
    """(frames decoded, fps, FOURCC) of a written clip."""
    cap = cv2.VideoCapture(str(path))
    assert cap.isOpened(), path
    n = 0
    while cap.read()[0]:
        n += 1
    fps, fourcc = cap.get(cv2.CAP_PROP_FPS), fourcc_text(cap.get(cv2.CAP_PROP_FOURCC))
    cap.release()
    return n, fps, fourcc


def jsonl(path: Path) -> list[dict]:
    text = path.read_text()
    assert text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


def detect(clip: Path, model: Path, *extra) -> list[str]:
    return ["detect", str(clip), "--model", str(model), "--mode", "dense", *map(str, extra)]


def test_video_gives_one_line_per_frame_and_a_drawn_video_of_the_same_frames(clips, effnet_onnx, tmp_path, capsys):
    out, frames = tmp_path / "annotated.mp4", tmp_path / "frames.jsonl"
    assert main(detect(clips["mp4"], effnet_onnx, "--out-image", out, "--json", frames)) == 0
    records = jsonl(frames)
    assert [r["frame"] for r in records] == list(range(FRAMES))
    assert [r["time_ms"] for r in records] == pytest.approx([i * 1000 / FPS for i in range(FRAMES)], abs=1)
    assert all(r["image"] == str(clips["mp4"]) and (r["width"], r["height"]) == SIZE and "error" not in r
               for r in records)
    n, fps, fourcc = frames_of(out)
    assert n == FRAMES and fps == pytest.approx(FPS)
    assert fourcc.lower() in ("mp4v", "fmp4")  # the source's family, MPEG-4 Part 2
    stdout = capsys.readouterr().out
    assert f"{FRAMES} frame(s)" in stdout and f"wrote video: {out}" in stdout
    assert stdout.startswith("model: efficientnet-lite0") and "preset display" in stdout.splitlines()[0]
    # The frames are the photos: what is found in each is what detect finds in the photo itself.
    first = tmp_path / "first.png"
    cap = cv2.VideoCapture(str(clips["mp4"]))
    cv2.imwrite(str(first), cap.read()[1])
    cap.release()
    assert main(["detect", str(first), "--model", str(effnet_onnx), "--mode", "dense", "--json",
                 str(tmp_path / "first.json")]) == 0
    assert json.loads((tmp_path / "first.json").read_text())["detections"] == records[0]["detections"]


def test_every_n_detects_in_every_nth_frame_and_the_video_keeps_its_speed(clips, effnet_onnx, tmp_path):
    out, frames = tmp_path / "every2.avi", tmp_path / "every2.jsonl"
    assert main(detect(clips["avi"], effnet_onnx, "--every", 2, "--out", out, "--json", frames)) == 0  # the spelling
    assert [r["frame"] for r in jsonl(frames)] == [0, 2, 4, 6, 8]
    n, fps, fourcc = frames_of(out)
    assert (n, fourcc) == (5, "MJPG") and fps == pytest.approx(FPS / 2)


def test_a_truncated_video_is_one_line_naming_the_frame_and_keeps_the_frames_before(
        clips, effnet_onnx, tmp_path, capsys, one_line_error):
    data = clips["avi"].read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(data[: len(data) // 2])
    out, frames = tmp_path / "cut-drawn.avi", tmp_path / "cut.jsonl"
    code = main(detect(cut, effnet_onnx, "--out-image", out, "--json", frames))
    records = jsonl(frames)
    kept = len(records)
    assert 0 < kept < FRAMES and [r["frame"] for r in records] == list(range(kept))
    one_line_error(capsys, code, cut, f"frame {kept} of {FRAMES}", "ends early")
    assert frames_of(out)[0] == kept  # the drawn video is finalised with those frames


def test_a_stream_broken_mid_way_keeps_the_frames_before_it(clips, effnet_onnx, tmp_path, capsys):
    data = bytearray(clips["mp4"].read_bytes())
    middle = len(data) // 2
    data[middle:middle + 2000] = np.random.default_rng(0).integers(0, 256, 2000, dtype=np.uint8).tobytes()
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(bytes(data))
    frames = tmp_path / "bad.jsonl"
    code = main(detect(bad, effnet_onnx, "--json", frames))
    err = capsys.readouterr().err
    records = jsonl(frames)
    assert "Traceback" not in err and [r["frame"] for r in records] == list(range(len(records)))
    lines = err.strip().splitlines()
    if code == 0:  # FFmpeg decoded every frame: what it said about the damage is in the records, and one note
        assert len(records) == FRAMES and any(r.get("warnings") for r in records), err
        assert len(lines) == 1 and str(bad) in lines[0] and "damaged data" in lines[0], err
    else:
        assert len(lines) == 1 and str(bad) in lines[0] and f"frame {len(records)} " in lines[0], err


@pytest.mark.parametrize("name, fourcc, exact", [("clip.avi", "MJPG", True), ("clip.mkv", "mp4v", False)])
def test_a_frame_count_is_trusted_only_where_the_container_indexes_its_frames(tmp_path, name, fourcc, exact):
    """Matroska's count is estimated from the duration: two frames fewer than it, without a word
    from the decoder, is the end of a good clip; an AVI's is exact: the same is a clip cut short."""
    from slidewin.apps.video import VideoReader
    from slidewin.errors import ImageError

    reader = VideoReader(make_clip(tmp_path / name, fourcc))
    assert reader.exact_count is exact and reader.frame_count == FRAMES
    reader.frame_count = FRAMES + 2
    if exact:
        with pytest.raises(ImageError, match=f"frame {FRAMES} of {FRAMES + 2} cannot be read"):
            list(reader.frames())
    else:
        assert len(list(reader.frames())) == FRAMES
    reader.close()


@pytest.mark.parametrize("content, needle", [(b"", "empty file"), (b"not a video at all" * 100, "cannot open video")])
def test_a_video_that_cannot_be_opened_is_one_line_and_writes_nothing(
        effnet_onnx, tmp_path, capsys, one_line_error, content, needle):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(content)
    code = main(detect(bad, effnet_onnx, "--out-image", tmp_path / "o.mp4", "--json", tmp_path / "o.jsonl"))
    one_line_error(capsys, code, bad, needle)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.mp4"]


def test_frames_over_max_pixels_are_refused_when_the_clip_is_opened(clips, effnet_onnx, tmp_path, capsys,
                                                                    one_line_error):
    code = main(detect(clips["mp4"], effnet_onnx, "--max-pixels", 19_199, "--json", tmp_path / "f.jsonl"))
    one_line_error(capsys, code, clips["mp4"], "160x120 = 19,200 pixels exceeds --max-pixels 19,199")
    assert not (tmp_path / "f.jsonl").exists()


def test_out_dir_resume_continues_after_the_last_frame_and_redraws_the_whole_video(
        clips, effnet_onnx, tmp_path, capsys):
    """A clip still being copied stops the run early; --resume once it is whole does the rest."""
    clip, out = tmp_path / "v.avi", tmp_path / "out"
    data = clips["avi"].read_bytes()
    clip.write_bytes(data[: len(data) // 2])
    assert main(detect(clip, effnet_onnx, "--out-dir", out, "--draw")) == 3
    first = (out / "results.jsonl").read_bytes()
    kept = len(first.splitlines())
    assert 0 < kept < FRAMES
    capsys.readouterr()
    clip.write_bytes(data)
    assert main(detect(clip, effnet_onnx, "--out-dir", out, "--draw")) != 0  # not without --resume
    assert main(detect(clip, effnet_onnx, "--out-dir", out, "--draw", "--resume")) == 0
    assert f"({kept} recorded earlier)" in capsys.readouterr().out
    after = (out / "results.jsonl").read_bytes()
    assert after.startswith(first)  # nothing redone, nothing rewritten
    assert [r["frame"] for r in jsonl(out / "results.jsonl")] == list(range(FRAMES))
    assert frames_of(out / "drawn" / "v.avi")[0] == FRAMES
    code = main(detect(clip, effnet_onnx, "--out-dir", out, "--resume", "--every", 2))
    assert code != 0 and "every 1 -> 2" in capsys.readouterr().err  # other settings: refused


def test_ctrl_c_keeps_whole_records_and_a_playable_video_and_says_how_to_resume(clips, effnet_onnx, tmp_path):
    import signal
    import time

    clip, out = make_clip(tmp_path / "long.avi", "MJPG", frames=30), tmp_path / "out"
    args = [*detect(clip, effnet_onnx, "--out-dir", out, "--draw")]
    proc = subprocess.Popen([sys.executable, "-m", "slidewin", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    results, deadline = out / "results.jsonl", time.monotonic() + 120
    while time.monotonic() < deadline and not (results.exists() and results.read_bytes().count(b"\n") >= 2):
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    kept = jsonl(results)
    assert proc.returncode == 130 and 2 <= len(kept) < 30, err
    assert b"--resume" in err and b"Traceback" not in err
    assert frames_of(out / "drawn" / "long.avi")[0] == len(kept)  # finalised with the frames recorded
    assert main([*args, "--resume"]) == 0
    assert [r["frame"] for r in jsonl(results)] == list(range(30))
    assert frames_of(out / "drawn" / "long.avi")[0] == 30


def test_video_flags_that_do_not_fit_are_one_line(clips, effnet_onnx, tmp_path, capsys, one_line_error):
    one_line_error(capsys, main(detect(clips["mp4"], effnet_onnx, "--out-image", tmp_path / "a.jpg")), "a.jpg",
                   ".mp4")
    one_line_error(capsys, main(detect(clips["mp4"], effnet_onnx, "--resume")), "--resume", "--out-dir")
    one_line_error(capsys, main(detect(clips["mp4"], effnet_onnx, "--out-dir", tmp_path / "o", "--format", "csv")),
                   "--format")
    one_line_error(capsys, main(detect(PHOTOS[0], effnet_onnx, "--every", 2)), "--every is for videos")
    one_line_error(capsys, main(["detect", str(clips["mp4"]), str(PHOTOS[0]), "--model", str(effnet_onnx)]),
                   "only input")


def test_videos_are_known_by_suffix_or_by_their_first_bytes(clips, tmp_path):
    renamed = tmp_path / "clip.bin"
    renamed.write_bytes(clips["mp4"].read_bytes())
    avi = tmp_path / "clip.data"
    avi.write_bytes(clips["avi"].read_bytes())
    assert is_video(tmp_path / "missing.MKV") and is_video(renamed) and is_video(avi)
    assert not is_video(PHOTOS[0]) and not is_video(tmp_path)


@pytest.mark.parametrize("source, suffix, expected", [
    ("FMP4", ".mp4", ["mp4v"]), ("XVID", ".avi", ["mp4v", "MJPG"]), ("MJPG", ".mp4", ["MJPG", "mp4v"]),
    ("avc1", ".mp4", ["avc1", "mp4v"]), ("H264", ".webm", ["avc1", "VP80"]), ("", ".avi", ["MJPG"]),
])
def test_the_drawn_video_tries_the_source_family_first_then_the_container_codec(source, suffix, expected):
    assert codec_candidates(source, suffix) == expected


def test_a_codec_that_cannot_be_written_falls_back_with_a_note(tmp_path):
    notes = []
    out = VideoOut(tmp_path / "o.avi", "ZZZZ", 5.0, SIZE, notes.append)
    out.write(np.zeros((SIZE[1], SIZE[0], 3), np.uint8))
    assert out.finish() and out.fourcc == "MJPG"
    assert len(notes) == 1 and "cannot encode ZZZZ" in notes[0] and "MJPG" in notes[0]
    assert frames_of(tmp_path / "o.avi")[:1] == (1,)
    assert [p.name for p in tmp_path.iterdir()] == ["o.avi"]  # no temporary file left


def test_progress_in_a_log_counts_frames_even_without_a_frame_count(monkeypatch, capsys):
    from slidewin.apps.folder import progress

    monkeypatch.setattr(progress, "_LOG_EVERY_SECONDS", 0.0)
    bar = progress.Progress(None, 3, enabled=False, unit="frames")
    bar.advance()
    bar.advance()
    bar.close()
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2 and lines[-1].startswith("slidewin: 5 frames, ") and lines[-1].endswith(" frame/s"), lines


# --- stdin -----------------------------------------------------------------------------------


def small_photo(tmp_path: Path) -> Path:
    path = tmp_path / "small.jpg"
    cv2.imwrite(str(path), cv2.resize(cv2.imread(str(PHOTOS[1])), SIZE, interpolation=cv2.INTER_AREA))
    return path


def run_cli(args: list[str], stdin: bytes) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "slidewin", *args], input=stdin, capture_output=True, cwd=ROOT,
                          check=False)


def test_detect_dash_reads_one_image_from_stdin(effnet_onnx, tmp_path):
    photo = small_photo(tmp_path)
    args = ["--model", str(effnet_onnx), "--mode", "dense", "--min-score", "0.05", "--json", "-"]
    piped = run_cli(["detect", "-", *args], photo.read_bytes())
    assert piped.returncode == 0, piped.stderr
    from_file = run_cli(["detect", str(photo), *args], b"")
    record, expected = json.loads(piped.stdout), json.loads(from_file.stdout)
    assert record["image"] == "-" and (record["width"], record["height"]) == SIZE
    assert record["detections"] == expected["detections"] and record["detections"]
    classified = run_cli(["classify", "-", "--model", str(effnet_onnx), "--top-k", "1"], photo.read_bytes())
    assert classified.returncode == 0 and classified.stdout.decode().startswith("<stdin>  ("), classified.stderr


@pytest.mark.parametrize("data, needle", [
    (b"\x00garbage, not an image" * 50, "not an image"),
    (b"", "empty input"),
])
def test_detect_dash_with_garbage_is_one_line(effnet_onnx, data, needle):
    proc = run_cli(["detect", "-", "--model", str(effnet_onnx), "--mode", "dense"], data)
    lines = proc.stderr.decode().strip().splitlines()
    assert proc.returncode == 3 and len(lines) == 1 and "<stdin>" in lines[0] and needle in lines[0], lines


class _Endless(io.RawIOBase):
    """A stream that starts with ``head`` and then never ends; counts what was read."""

    def __init__(self, head: bytes):
        self.head, self.read_bytes = head, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = len(buffer)
        chunk = (self.head[self.read_bytes:self.read_bytes + n]).ljust(n, b"\0")
        buffer[:n] = chunk
        self.read_bytes += n
        return n


def test_stdin_reads_no_more_than_the_image_may_hold(tmp_path):
    png = cv2.imencode(".png", np.zeros((10, 12, 3), np.uint8))[1].tobytes()
    assert read_image_stream(io.BytesIO(png)) == png
    stream = _Endless(png)
    with pytest.raises(Exception, match=r"<stdin>: more than .* bytes, more than a 12x10 image may hold"):
        read_image_stream(stream)
    assert stream.read_bytes <= max_file_bytes(120) + 1
    with pytest.raises(Exception, match="image too large"):
        read_image_stream(io.BytesIO(png), max_pixels=100)


# --- classify ----------------------------------------------------------------------------------


def test_classify_takes_several_photos_and_a_bad_one_is_one_line(effnet_onnx, tmp_path, capsys):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a photo" * 20)
    code = main(["classify", str(PHOTOS[0]), str(bad), str(PHOTOS[1]), "--model", str(effnet_onnx), "--top-k", "2"])
    out, err = capsys.readouterr()
    assert code == 3
    assert err.strip().splitlines() == [f"slidewin: error: {bad}: not an image (or an unsupported format)"]
    blocks = out.strip().split("\n\n")
    assert [b.splitlines()[0].split("  (")[0] for b in blocks] == [str(PHOTOS[0]), str(PHOTOS[1])]
    assert all(len(b.splitlines()) == 3 for b in blocks)
    assert main(["classify", str(PHOTOS[1]), "--model", str(effnet_onnx), "--top-k", "2"]) == 0
    assert capsys.readouterr().out.strip() == blocks[1]  # the same block as alone
