"""Hostile input, round 2 (issue 22): every file slidewin reads that is not an image, and every
file a folder run owns inside its output folder.

Each command-line case runs ``python -m slidewin.cli`` in a subprocess under an address-space
limit and a timeout, measures its peak memory, and fails on a traceback, an "internal error", a
hang, memory past 1.5 GB, more than one error line, or a file outside the output folder touched.
Device nodes are made with ``mknod`` in a temporary folder (root only; skipped otherwise), never
taken from the real ``/dev``.
"""

from __future__ import annotations

import json
import os
import resource
import stat
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from slidewin.errors import SlidewinError
from slidewin.io.files import read_small_file, read_small_json

MEMORY_LIMIT = 3 << 30
#: Peak resident memory a case may reach (ORT, OpenCV and NumPy alone take ~0.3 GB).
MAX_RSS = 1536 << 20
TIMEOUT = 120
_WRAPPER = (
    "import os, resource, sys\n"
    "sys.argv = ['slidewin'] + sys.argv[1:]\n"
    "code = 1\n"
    "try:\n"
    "    from slidewin.cli import main\n"
    "    code = main()\n"
    "except SystemExit as e:\n"
    "    code = e.code\n"
    "finally:\n"
    "    hwm = [l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM:')]\n"
    "    with open(os.environ['SLIDEWIN_TEST_RSS'], 'w') as f:\n"
    "        f.write(hwm[0] if hwm else str(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))\n"
    "sys.exit(code)\n"
)
# The peak is this process's own VmHWM (kB): ru_maxrss of a process started by fork and exec keeps
# the high-water mark of the forked copy of its parent, which is the whole test session's memory
# late in a full run (3 GB here) and would fail every case for memory it never used. `main` rather
# than the console script's `entry`, whose quick exit (os._exit) would skip writing the figure.


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, tiny_model) -> Path:
    return tiny_model(tmp_path_factory.mktemp("hostile2-model") / "tiny.onnx", ["N", 32, 32, 3])


def run_limited(tmp_path: Path, *argv, cwd=None, env=None, timeout=TIMEOUT) -> subprocess.CompletedProcess:
    """``slidewin ARGV`` in a subprocess under MEMORY_LIMIT and ``timeout``; its peak memory is
    checked against MAX_RSS, its output against tracebacks and internal errors."""
    rss = tmp_path / f".rss-{os.getpid()}-{len(list(tmp_path.glob('.rss-*')))}"

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))

    full_env = {**os.environ, **(env or {}), "SLIDEWIN_TEST_RSS": str(rss)}
    proc = subprocess.run([sys.executable, "-c", _WRAPPER, *map(str, argv)], capture_output=True, text=True,
                          timeout=timeout, preexec_fn=limit, cwd=cwd, env=full_env)
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr, proc.stderr
    assert rss.exists(), f"the case wrote no memory figure: {proc.stderr[-500:]}"
    peak = int(rss.read_text()) * 1024
    rss.unlink(missing_ok=True)
    assert peak < MAX_RSS, f"peak memory {peak >> 20} MiB"
    return proc


def one_error_line(proc: subprocess.CompletedProcess, code: int, *needles) -> str:
    lines = [line for line in proc.stderr.strip().splitlines() if "error:" in line]
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    assert len(lines) == 1, proc.stderr
    for needle in needles:
        assert str(needle) in lines[0], (needle, lines[0])
    return lines[0]


def photo(path: Path, seed: int, hw=(60, 80)) -> Path:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.GaussianBlur(rng.integers(0, 255, (*hw, 3), np.uint8), (0, 0), 2))
    return path


def char_device(path: Path, major: int = 1, minor: int = 5) -> Path:
    """A character device node (default: what /dev/zero is) made here, or the test is skipped."""
    try:
        os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(major, minor))
    except PermissionError:
        pytest.skip("mknod needs root")
    return path


def sparse(path: Path, size: int, head: bytes = b"") -> Path:
    with open(path, "wb") as f:
        f.write(head)
        f.truncate(size)
    return path


def snapshot(folder: Path) -> dict[str, tuple]:
    """What a case must not touch: every path under ``folder`` with its type, size and mtime."""
    out = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            p = os.path.join(root, name)
            st = os.lstat(p)
            out[p] = (stat.S_IFMT(st.st_mode), st.st_size, st.st_mtime_ns)
    return out


# --- one helper for every small file: stat first, regular files only, capped read ----------

@pytest.mark.parametrize("make, needle", [
    (lambda p: os.mkfifo(p), "FIFO"),
    (lambda p: p.mkdir(), "folder"),
    (lambda p: sparse(p, (4 << 20) + 1), "larger than 4 MiB"),
    (lambda p: None, "No such file"),
])
def test_read_small_file_refuses_in_one_line(tmp_path, make, needle):
    p = tmp_path / "settings.json"
    make(p)
    with pytest.raises(SlidewinError, match=needle) as e:
        read_small_file(p, 4 << 20, "settings file")
    assert str(p) in str(e.value) and "\n" not in str(e.value)


def test_read_small_file_never_reads_a_device_whole(tmp_path):
    zero = char_device(tmp_path / "zero")
    with pytest.raises(SlidewinError, match="character device"):
        read_small_file(zero, 100, "settings file")
    link = tmp_path / "link.json"
    link.symlink_to(zero)
    with pytest.raises(SlidewinError, match="character device"):
        read_small_json(link, 100, "settings file")


def test_read_small_file_refuses_links_when_asked(tmp_path):
    (tmp_path / "real.json").write_text("{}")
    (tmp_path / "link.json").symlink_to(tmp_path / "real.json")
    assert read_small_json(tmp_path / "link.json", 100, "x") == {}
    with pytest.raises(SlidewinError, match="symbolic link"):
        read_small_json(tmp_path / "link.json", 100, "x", follow_links=False)


def test_labels_file_fifo_and_device_are_refused(tmp_path):
    from slidewin_export.labels import read_labels_file

    os.mkfifo(tmp_path / "labels.txt")
    with pytest.raises(SlidewinError, match="FIFO"):
        read_labels_file(tmp_path / "labels.txt")
    (tmp_path / "zero.txt").symlink_to(char_device(tmp_path / "zero"))
    with pytest.raises(SlidewinError, match="character device"):
        read_labels_file(tmp_path / "zero.txt")


def _dataset(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    photo(data / "images" / "a.jpg", 0)
    return data


@pytest.mark.parametrize("kind", ["fifo", "device", "huge"])
def test_evaluate_instances_special_or_huge_is_one_line(tmp_path, tiny, kind):
    data = _dataset(tmp_path)
    ann = data / "instances.json"
    if kind == "fifo":
        os.mkfifo(ann)
    elif kind == "device":
        ann.symlink_to(char_device(tmp_path / "zero"))
    else:
        sparse(ann, 300 << 20, b'{"images": [')
    proc = run_limited(tmp_path, "evaluate", "--data", data, "--model", tiny, timeout=60)
    one_error_line(proc, 2, ann, {"fifo": "FIFO", "device": "character device", "huge": "larger than"}[kind])


@pytest.mark.parametrize("kind", ["fifo", "device", "huge", "garbage"])
def test_memo_record_that_is_not_ours_never_fails_a_command(tmp_path, tiny, kind):
    """A memo record that is a FIFO, a link to a device, huge or garbage only costs time."""
    from slidewin.io import filememo

    cache = tmp_path / "cache"
    env = {"XDG_CACHE_HOME": str(cache)}
    img = photo(tmp_path / "a.jpg", 0)
    old = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(cache)
    try:
        record = filememo._record_path(tiny)
    finally:
        os.environ.pop("XDG_CACHE_HOME") if old is None else os.environ.__setitem__("XDG_CACHE_HOME", old)
    record.parent.mkdir(parents=True)
    if kind == "fifo":
        os.mkfifo(record)
    elif kind == "device":
        record.symlink_to(char_device(tmp_path / "zero"))
    elif kind == "huge":
        sparse(record, 1 << 30, b'{"path": "')
    else:
        record.write_text('{"format": 2, "path": 3, "identity": "x", "values": []}')
    proc = run_limited(tmp_path, "detect", img, "--model", tiny, "--window", "48", "--json", "-", env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["image"] == str(img)


def test_huge_run_json_is_one_line(tmp_path, tiny):
    photo(tmp_path / "in" / "a.jpg", 0)
    out = tmp_path / "out"
    out.mkdir()
    sparse(out / "run.json", 1 << 30, b"{")
    (out / "results.jsonl").write_text("")
    proc = run_limited(tmp_path, "detect", tmp_path / "in", "--model", tiny, "--window", "48", "--out-dir", out,
                       "--resume", timeout=60)
    one_error_line(proc, 2, out / "run.json", "larger than")


def test_resuming_a_huge_results_file_streams_it(tmp_path, tiny):
    """~400 MB of records (long lines, and a last line cut short) is read line by line."""
    photo(tmp_path / "in" / "a.jpg", 0)
    out = tmp_path / "out"
    out.mkdir()
    pad = "x" * (1 << 20)
    with open(out / "results.jsonl", "w") as f:
        for i in range(400):
            f.write(json.dumps({"image": str(tmp_path / "in" / f"gone{i}.jpg"), "model": "m", "pad": pad}) + "\n")
        f.write('{"image": "cut sh')
    proc = run_limited(tmp_path, "detect", tmp_path / "in", "--model", tiny, "--window", "48", "--out-dir", out,
                       "--resume", timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = (out / "results.jsonl").read_bytes().splitlines()
    assert len(lines) == 401 and json.loads(lines[-1])["image"].endswith("a.jpg")


# --- files inside --out-dir: never a link out of it, never a special file -------------------

def _run_folder(tmp_path, model, *extra, out=None, timeout=60):
    out = out or tmp_path / "out"
    return run_limited(tmp_path, "detect", tmp_path / "in", "--model", model, "--window", "48", "--out-dir", out,
                       *extra, timeout=timeout)


@pytest.mark.parametrize("name", ["results.jsonl", "run.json"])
@pytest.mark.parametrize("kind", ["link", "dangling", "fifo"])
def test_own_files_that_are_links_or_special_are_refused(tmp_path, tiny, name, kind):
    photo(tmp_path / "in" / "a.jpg", 0)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    target = outside / "victim.jsonl"
    out = tmp_path / "out"
    out.mkdir()
    if kind == "link":
        target.write_bytes(b'{"image": "x"}\n{"image": "no newline"')
        (out / name).symlink_to(target)
    elif kind == "dangling":
        (out / name).symlink_to(target)
    else:
        os.mkfifo(out / name)
    before = snapshot(outside)
    for resume in ((), ("--resume",)):
        proc = _run_folder(tmp_path, tiny, *resume)
        # without --resume the command line may first say that the folder holds results
        one_error_line(proc, 2, *((out / name, "not a regular file") if resume or kind != "link" else ()))
        assert snapshot(outside) == before


def test_drawn_folder_or_file_that_is_a_link_never_writes_outside(tmp_path, tiny):
    photo(tmp_path / "in" / "a.jpg", 0)
    photo(tmp_path / "in" / "sub" / "b.jpg", 1)
    outside = tmp_path / "elsewhere"
    photo(outside / "victim.jpg", 2)
    out = tmp_path / "out"
    (out / "drawn").mkdir(parents=True)
    (out / "drawn" / "a.jpg").symlink_to(outside / "victim.jpg")
    (out / "drawn" / "sub").symlink_to(outside)
    before = snapshot(outside)
    proc = _run_folder(tmp_path, tiny, "--draw")
    assert proc.returncode == 3, proc.stderr
    assert snapshot(outside) == before
    recs = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(recs) == 2 and all("symbolic link" in r["error"] for r in recs), recs

    (tmp_path / "out2").mkdir()
    (tmp_path / "out2" / "drawn").symlink_to(outside)
    for resume in ((), ("--resume",)):
        proc = _run_folder(tmp_path, tiny, "--draw", *resume, out=tmp_path / "out2")
        one_error_line(proc, 2, tmp_path / "out2" / "drawn", "symbolic link")
    assert snapshot(outside) == before


# --- evaluate: the report folder first, empty or ambiguous datasets in one line --------------

@pytest.mark.parametrize("images, needle", [([], "holds no images"),
                                            ([{"id": 1, "file_name": "a.jpg"}, {"id": 1, "file_name": "a.jpg"}],
                                             "repeated: 1")])
def test_evaluate_refuses_empty_or_duplicate_images(tmp_path, images, needle):
    from slidewin.apps.evaluate import load_dataset

    data = _dataset(tmp_path)
    (data / "instances.json").write_text(json.dumps({"images": images, "annotations": [], "categories": []}))
    with pytest.raises(SlidewinError, match=needle):
        load_dataset(data)


def test_evaluate_checks_the_report_folder_first(tmp_path, tiny):
    data = _dataset(tmp_path)
    (data / "instances.json").write_text(json.dumps({"images": [{"id": 1, "file_name": "a.jpg"}],
                                                     "annotations": [], "categories": []}))
    (tmp_path / "report").write_text("a file")
    proc = run_limited(tmp_path, "evaluate", "--data", data, "--model", tiny, "--out-dir", tmp_path / "report")
    one_error_line(proc, 2, tmp_path / "report", "is a file")
