"""Folder runs against hostile conditions (issue 12): resuming from another working directory or
with other settings, corrupt lines in the middle of results.jsonl, special files in the walk,
and the walk's rule with everything it skipped listed."""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from slidewin.apps.folder.inputs import HIDDEN, LINKED_FOLDER, NOT_REGULAR, OTHER_SUFFIX, collect_inputs, result_key
from slidewin.cli import main


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, tiny_model) -> Path:
    return tiny_model(tmp_path_factory.mktemp("tiny") / "tiny.onnx", ["N", 32, 32, 3])


def photo(path: Path, seed: int, hw=(60, 80)) -> Path:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.GaussianBlur(rng.integers(0, 255, (*hw, 3), np.uint8), (0, 0), 2))
    return path


def records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


def detect(*args) -> list[str]:
    return ["detect", *map(str, args), "--window", "48"]


def test_resume_from_another_working_directory_redoes_nothing(tiny, tmp_path, capsys, monkeypatch):
    for i in range(3):
        photo(tmp_path / "data" / "in" / f"{i}.jpg", i)
    out = tmp_path / "out"
    monkeypatch.chdir(tmp_path / "data")
    assert main(detect("in", "--model", tiny, "--out-dir", out)) == 0
    lines = (out / "results.jsonl").read_bytes().splitlines(keepends=True)
    (out / "results.jsonl").write_bytes(b"".join(lines[:2]))  # a run stopped after two images
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    assert main(detect("data/in", "--model", tiny, "--out-dir", out, "--resume")) == 0
    assert "3 ok, 0 failed of 3 image(s) (1 this run, 2 recorded earlier)" in capsys.readouterr().out
    recs = records(out)
    assert len(recs) == 3
    keys = {result_key(r["image"], tmp_path / "data") if i < 2 else result_key(r["image"]) for i, r in enumerate(recs)}
    assert keys == {str((tmp_path / "data" / "in" / f"{i}.jpg").resolve()) for i in range(3)}


def test_resume_with_other_settings_is_refused_in_one_line(tiny, tmp_path, capsys):
    photo(tmp_path / "in" / "a.jpg", 1)
    photo(tmp_path / "in" / "b.jpg", 2)
    out = tmp_path / "out"
    assert main(detect(tmp_path / "in", "--model", tiny, "--out-dir", out)) == 0
    before = (out / "results.jsonl").read_bytes()
    capsys.readouterr()
    code = main(detect(tmp_path / "in", "--model", tiny, "--out-dir", out, "--resume", "--min-score", "0.1"))
    err = [line for line in capsys.readouterr().err.strip().splitlines() if "error:" in line]
    assert code != 0 and len(err) == 1, err
    assert "other settings" in err[0] and "min_score 0.7 -> 0.1" in err[0] and "run.json" in err[0]  # display preset: 0.7
    assert (out / "results.jsonl").read_bytes() == before
    assert main(detect(tmp_path / "in", "--model", tiny, "--out-dir", out, "--resume")) == 0  # same settings: fine


def test_corrupt_middle_line_is_reported_and_its_image_redone(tiny, tmp_path, capsys):
    for i in range(3):
        photo(tmp_path / "in" / f"{i}.jpg", i)
    out = tmp_path / "out"
    assert main(detect(tmp_path / "in", "--model", tiny, "--out-dir", out)) == 0
    lines = (out / "results.jsonl").read_bytes().splitlines(keepends=True)
    lines[1] = b"#CORRUPT#" + lines[1][9:]
    (out / "results.jsonl").write_bytes(b"".join(lines))
    capsys.readouterr()
    assert main(detect(tmp_path / "in", "--model", tiny, "--out-dir", out, "--resume")) == 0
    captured = capsys.readouterr()
    assert "1 corrupt line(s) (line 2)" in captured.err
    assert "(1 this run, 2 recorded earlier)" in captured.out
    good = [json.loads(line) for line in (out / "results.jsonl").read_bytes().splitlines() if b"#CORRUPT#" not in line]
    assert sorted(Path(r["image"]).name for r in good) == ["0.jpg", "1.jpg", "2.jpg"]


def make_walk(root: Path) -> None:
    photo(root / "a.jpg", 1)
    photo(root / "nested" / "b.png", 2)
    Image = pytest.importorskip("PIL.Image")
    Image.fromarray(np.full((40, 50, 3), 90, np.uint8)).save(root / "c.gif")
    if cv2.haveImageWriter(".jp2"):
        cv2.imwrite(str(root / "d.jp2"), np.full((40, 50, 3), 90, np.uint8))
    photo(root / ".hidden.jpg", 3)
    photo(root / ".cache" / "e.jpg", 4)
    photo(root.parent / "elsewhere" / "f.jpg", 5)
    os.symlink(root.parent / "elsewhere", root / "linked")
    os.mkfifo(root / "pipe.jpg")
    (root / "notes.txt").write_text("not an image")


def test_walk_rule_and_what_it_skipped(tmp_path):
    make_walk(tmp_path / "in")
    skipped = []
    _, files = collect_inputs([tmp_path / "in"], skipped=skipped)
    jp2 = ["d.jp2"] if cv2.haveImageWriter(".jp2") else []
    assert [f.name for f in files] == ["a.jpg", "c.gif", *jp2, "b.png"]
    reasons = {p.name: r for p, r in skipped}
    assert reasons == {".hidden.jpg": HIDDEN, ".cache": HIDDEN, "linked": LINKED_FOLDER, "pipe.jpg": NOT_REGULAR,
                       "notes.txt": OTHER_SUFFIX}
    _, files = collect_inputs([tmp_path / "in" / "linked"])  # named explicitly, a linked folder is walked
    assert [f.name for f in files] == ["f.jpg"]


def test_folder_run_lists_what_it_skipped(tiny, tmp_path, capsys):
    make_walk(tmp_path / "in")
    assert main(detect(tmp_path / "in", "--model", tiny, "--out-dir", tmp_path / "out")) == 0
    out = capsys.readouterr().out
    assert "skipped 5 path(s) while walking the inputs" in out
    for needle in ("2 hidden", "1 symlinked folder, not followed", "1 not a regular file", "pipe.jpg",
                   "1 not an image suffix", "notes.txt"):
        assert needle in out, (needle, out)
    recorded = sorted(Path(r["image"]).name for r in records(tmp_path / "out"))
    assert "c.gif" in recorded and "a.jpg" in recorded and "b.png" in recorded


@pytest.mark.parametrize("absolute", [False, True])
def test_resume_after_the_project_folder_is_moved_redoes_nothing(tiny, tmp_path, capsys, monkeypatch, absolute):
    """Issue 22: run.json keys records by their path inside the input root, not by the working
    directory, so a renamed project (output folder inside it) resumes with nothing redone."""
    proj = tmp_path / "proj"
    for i in range(5):
        photo(proj / "in" / f"{i}.jpg", i)
    monkeypatch.chdir(proj)
    args = (proj / "in", proj / "out") if absolute else ("in", "out")
    assert main(detect(args[0], "--model", tiny, "--out-dir", args[1])) == 0
    lines = (proj / "out" / "results.jsonl").read_bytes().splitlines(keepends=True)
    (proj / "out" / "results.jsonl").write_bytes(b"".join(lines[:3]))
    assert "/" not in json.loads((proj / "out" / "run.json").read_text())["cwd"].strip(".")
    monkeypatch.chdir(tmp_path)
    moved = tmp_path / "renamed"
    proj.rename(moved)
    monkeypatch.chdir(moved)
    for _ in range(2):
        args = (moved / "in", moved / "out") if absolute else ("in", "out")
        capsys.readouterr()
        assert main(detect(args[0], "--model", tiny, "--out-dir", args[1], "--resume")) == 0
        assert "5 ok, 0 failed of 5 image(s)" in capsys.readouterr().out
        recs = records(moved / "out")
        assert sorted(Path(r["image"]).name for r in recs) == [f"{i}.jpg" for i in range(5)]


def test_another_tree_with_the_same_names_is_not_taken_for_a_moved_one(tiny, tmp_path, capsys):
    for i in range(2):
        photo(tmp_path / "a" / f"{i}.jpg", i)
        photo(tmp_path / "b" / f"{i}.jpg", i + 10)
    out = tmp_path / "out"
    assert main(detect(tmp_path / "a", "--model", tiny, "--out-dir", out)) == 0
    assert main(detect(tmp_path / "b", "--model", tiny, "--out-dir", out, "--resume")) == 0
    assert len(records(out)) == 4


def test_an_old_run_json_is_still_read(tiny, tmp_path, capsys, monkeypatch):
    for i in range(2):
        photo(tmp_path / "in" / f"{i}.jpg", i)
    out = tmp_path / "out"
    monkeypatch.chdir(tmp_path)
    assert main(detect("in", "--model", tiny, "--out-dir", out)) == 0
    run = json.loads((out / "run.json").read_text())
    (out / "run.json").write_text(json.dumps({"format": 1, "cwd": str(tmp_path), "settings": run["settings"]}))
    assert main(detect("in", "--model", tiny, "--out-dir", out, "--resume")) == 0
    assert len(records(out)) == 2


@pytest.mark.parametrize("through_link", [False, True])
def test_a_run_never_takes_its_own_output_as_input(tiny, tmp_path, capsys, through_link):
    for i in range(2):
        photo(tmp_path / "in" / f"{i}.jpg", i)
    real_out = tmp_path / "in" / "out"
    out = real_out
    if through_link:
        real_out.mkdir()
        out = tmp_path / "out-link"
        out.symlink_to(real_out)
    for resume in ((), ("--resume",), ("--resume",)):
        main(detect(tmp_path / "in", "--model", tiny, "--out-dir", out, "--draw", *resume))
        recs = records(real_out)
        assert sorted(Path(r["image"]).name for r in recs) == ["0.jpg", "1.jpg"], recs
    assert len(list((real_out / "drawn").rglob("*.jpg"))) == 2


def test_similar_names_never_draw_to_the_same_file(tiny, tmp_path):
    photo(tmp_path / "in" / "a.png", 1)
    photo(tmp_path / "in" / "a.png.jpg", 2)
    out = tmp_path / "out"
    assert main(detect(tmp_path / "in", "--model", tiny, "--out-dir", out, "--draw")) == 0
    assert sorted(p.name for p in (out / "drawn").iterdir()) == ["a.png.2.jpg", "a.png.jpg"]


def test_retry_failed_redoes_only_the_error_records_and_replaces_them(tiny, tmp_path):
    from slidewin.apps.folder.run import run_folder
    from slidewin.pipeline.factory import build_detector

    for i in range(3):
        photo(tmp_path / "in" / f"{i}.jpg", i)
    (tmp_path / "in" / "bad.jpg").write_bytes(b"\xff\xd8 not yet")   # a transient failure
    out = tmp_path / "out"
    detector = build_detector(tiny)
    root, inputs = collect_inputs([tmp_path / "in"])
    s = run_folder(detector, inputs, out, tiny, root=root, progress=False)
    assert (s.ok, s.failed) == (3, 1)
    before = {r["image"]: r for r in records(out) if "error" not in r}
    photo(tmp_path / "in" / "bad.jpg", 9)                            # fixed
    s = run_folder(detector, inputs, out, tiny, root=root, resume=True, progress=False)
    assert (s.ok_now, s.failed_now, s.failed) == (0, 0, 1)           # a plain resume keeps the error
    s = run_folder(detector, inputs, out, tiny, root=root, resume=True, retry_failed=True, progress=False)
    assert (s.ok, s.failed, s.ok_now, s.skipped) == (4, 0, 1, 3)
    recs = records(out)
    assert len(recs) == 4 and not any("error" in r for r in recs)
    assert {r["image"]: r for r in recs[:3]} == before                # the good records untouched


def test_cli_retry_failed_after_a_transient_failure(tiny, tmp_path, capsys):
    for i in range(2):
        photo(tmp_path / "in" / f"{i}.jpg", i)
    (tmp_path / "in" / "late.jpg").write_bytes(b"\xff\xd8 still being copied")
    out = tmp_path / "out"
    assert main(detect(tmp_path / "in", "--model", tiny, "--out-dir", out)) == 3   # some failed
    photo(tmp_path / "in" / "late.jpg", 5)
    assert main(detect(tmp_path / "in", "--model", tiny, "--out-dir", out, "--resume")) == 3  # kept as it was
    assert main(detect(tmp_path / "in", "--model", tiny, "--out-dir", out, "--retry-failed")) == 0
    recs = records(out)
    assert len(recs) == 3 and not any("error" in r for r in recs)
    capsys.readouterr()
    assert main(detect(tmp_path / "late.jpg", "--model", tiny, "--retry-failed")) == 2    # one photo: refused
    assert "--retry-failed is for folder runs" in capsys.readouterr().err
