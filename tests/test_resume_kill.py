"""A folder run killed with SIGKILL at random moments, again and again, then resumed to the end.

The final ``results.jsonl`` must equal an uninterrupted run's, record for record (timings aside):
no line lost, none duplicated, none changed. A kill rarely lands inside a write, so after every
other kill the test also appends half of the next record, as a write torn by a crash or a power cut
would leave it: the resumed run must cut it away, say so, and redo that image. Real photos
(tests/data/coco-mini) and a real classifier in dense mode, each run a separate process.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import COCO_MINI
from slidewin.apps.folder.run import SOME_FAILED_EXIT

ROOT = Path(__file__).resolve().parents[1]
KILLS = 3
PHOTOS = 6  # with the broken file: 7 records, enough for 3 kills between or during images
TIMING = ("seconds",)


def strip(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING} for r in records]


def read_lines(path: Path) -> tuple[list[bytes], bytes]:
    """(whole lines, the partial line after them: b"" when there is none)."""
    data = path.read_bytes() if path.exists() else b""
    whole = data.rfind(b"\n") + 1
    return data[:whole].splitlines(keepends=True), data[whole:]


def start(argv: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "slidewin.cli", *argv], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume_equals_a_clean_run(effnet_onnx, tmp_path):
    rng = random.Random(0)
    folder = tmp_path / "in"
    folder.mkdir()
    photos = sorted((COCO_MINI / "images").glob("*.jpg"))[:PHOTOS]
    for p in photos:
        os.symlink(p, folder / p.name)
    (folder / "broken.jpg").write_bytes(photos[0].read_bytes()[:5000])  # a bad file is a record too
    common = ["detect", str(folder), "--model", str(effnet_onnx), "--mode", "dense", "--max-levels", "1",
              "--classes", "coco", "--min-score", "0.3"]

    # The uninterrupted run, timed: when the first record appears, how long each image takes.
    ref = tmp_path / "ref"
    t0 = time.perf_counter()
    proc = start([*common, "--out-dir", str(ref)])
    first = None
    while proc.poll() is None:
        if first is None and read_lines(ref / "results.jsonl")[0]:
            first = time.perf_counter() - t0
        time.sleep(0.01)
    total = time.perf_counter() - t0
    assert proc.returncode == SOME_FAILED_EXIT, proc.stderr.read()  # broken.jpg failed, the rest did not
    reference = [json.loads(x) for x in read_lines(ref / "results.jsonl")[0]]
    n = len(reference)
    assert n == len(photos) + 1 and sum("error" in r for r in reference) == 1
    first = first or total
    per_image = (total - first) / max(n - 1, 1)

    out = tmp_path / "out"
    results = out / "results.jsonl"
    run = [*common, "--out-dir", str(out), "--resume"]
    kills = torn = real_partials = said_truncated = 0
    torn_tail = b""  # the simulated torn write still in the file, if any
    snapshots: list[list[bytes]] = []
    for _ in range(4 * KILLS):
        before = len(read_lines(results)[0])
        if kills == KILLS or before == n:
            break
        # Start-up (imports, model) plus up to two images: most kills land between or during
        # images, some while the model loads.
        delay = rng.uniform(0.5 * first, first + 2 * per_image)
        proc = start(run)
        t0 = time.perf_counter()
        while proc.poll() is None and time.perf_counter() - t0 < delay:
            time.sleep(0.002)
        killed = proc.poll() is None
        if killed:
            os.kill(proc.pid, signal.SIGKILL)
            kills += 1
        _, err = proc.communicate()
        said_truncated += err.count("partial last line")
        lines, tail = read_lines(results)
        if tail and tail != torn_tail:  # a kill inside a write left it (not the simulation)
            real_partials += 1
        torn_tail = tail
        snapshots.append(lines)
        if killed and not tail and kills % 2 == 0 and len(lines) < n:
            nxt = (json.dumps(reference[len(lines)]) + "\n").encode()
            torn_tail = nxt[: rng.randrange(1, len(nxt) - 1)]
            with open(results, "ab") as f:
                f.write(torn_tail)
            torn += 1
    proc = start(run)
    _, err = proc.communicate()
    said_truncated += err.count("partial last line")
    assert proc.returncode == SOME_FAILED_EXIT, err

    final_lines, final_tail = read_lines(results)
    final = [json.loads(x) for x in final_lines]
    assert kills >= 2 and torn >= 1, (kills, torn)  # the run was really interrupted, and torn
    assert final_tail == b""
    assert strip(final) == strip(reference)  # every image once, in order, with the same detections
    lost = [line for snap in snapshots for line in snap if line not in set(final_lines)]
    assert not lost  # a line once whole is never rewritten or dropped by a later run
    # Every partial line was cut away by the next run, which said so (a kill may land between the
    # cut and the message: then the message is missing, never doubled).
    assert 1 <= said_truncated <= torn + real_partials
