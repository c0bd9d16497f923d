"""Folder runs on a Ray cluster (`--engine ray`): the same records, errors and resume as local runs.

One real local Ray cluster for the module (2 CPUs, a small object store, no dashboard, no
progress bars), real COCO photos (tests/data/coco-mini) plus a broken file, EfficientNet-Lite0 with its ImageNet
weights. Reference records come from a local `--out-dir` run and an uninterrupted Ray run, each
made once for the module.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from slidewin.apps.folder.run import SOME_FAILED_EXIT
from slidewin.cli import main

ROOT = Path(__file__).resolve().parents[2]
COCO_IMAGES = ROOT / "tests" / "data" / "coco-mini" / "images"
PHOTOS = 10
#: Detector flags of every run here: enough boxes on COCO photos that equality means something.
FLAGS = ["--classes", "coco", "--min-score", "0.2", "--max-levels", "1", "--preset", "ap"]  # ap: as DetectorConfig() below


def records(out: Path) -> list[dict]:
    text = (out / "results.jsonl").read_text()
    assert text == "" or text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


def by_image(recs: list[dict]) -> dict[str, dict]:
    """Records keyed by image, timings dropped; asserts that no image is recorded twice."""
    out = {r["image"]: {k: v for k, v in r.items() if k != "seconds"} for r in recs}
    assert len(out) == len(recs), "an image was recorded twice"
    return out


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """10 COCO photos and one truncated JPEG, in one folder."""
    folder = tmp_path_factory.mktemp("photos")
    chosen = sorted(COCO_IMAGES.glob("*.jpg"))[:PHOTOS]
    assert len(chosen) == PHOTOS, f"the fixture photos are missing in {COCO_IMAGES}"
    for p in chosen:
        shutil.copy(p, folder / p.name)
    jpeg = chosen[0].read_bytes()
    (folder / "broken.jpg").write_bytes(jpeg[: len(jpeg) // 3])
    return folder


@pytest.fixture(scope="module")
def s3_env():
    """An S3-compatible server on loopback (moto) with its variables set for the module, before
    the cluster starts: Ray's workers read credentials from their own environment, as on a real
    cluster. Instance-metadata lookups are off, so nothing ever leaves the machine."""
    pytest.importorskip("moto.server")
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one access-log line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {"AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield env
    for k, v in saved.items():
        os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    server.stop()


@pytest.fixture(scope="module")
def ray_cluster(s3_env):
    """One local Ray cluster for the module; runs in this process join it instead of starting one."""
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=128 * 2**20, log_to_driver=False,
             logging_level=logging.WARNING)
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def model(effnet_onnx, tmp_path_factory) -> Path:
    """EfficientNet-Lite0, hard-linked into a folder of its own so that its dense form, cached
    beside it, is made there once (by the driver's check) and shared by the actors."""
    dst = tmp_path_factory.mktemp("model") / "effnet.onnx"
    os.link(effnet_onnx, dst)
    return dst


def detect(source, model: Path, out: Path, *extra) -> list[str]:
    return ["detect", str(source), "--model", str(model), "--out-dir", str(out), *FLAGS, *extra]


@pytest.fixture(scope="module")
def local_records(photos, model, tmp_path_factory) -> dict[str, dict]:
    out = tmp_path_factory.mktemp("local") / "out"
    assert main(detect(photos, model, out)) == SOME_FAILED_EXIT
    return by_image(records(out))


@pytest.fixture(scope="module")
def ray_records(ray_cluster, photos, model, tmp_path_factory) -> dict[str, dict]:
    out = tmp_path_factory.mktemp("ray") / "out"
    assert main(detect(photos, model, out, "--engine", "ray", "--workers", "2")) == SOME_FAILED_EXIT
    return by_image(records(out))


def test_ray_records_equal_local_records_record_for_record(local_records, ray_records, photos):
    assert len(ray_records) == PHOTOS + 1
    assert ray_records.keys() == local_records.keys()
    for image, want in local_records.items():
        assert ray_records[image] == want, image   # same boxes, scores, labels, sizes, errors
    broken = ray_records[str(photos / "broken.jpg")]
    assert broken["error"] == "truncated JPEG (no end-of-image marker)" and broken["detections"] == []
    assert sum(len(r["detections"]) for r in ray_records.values()) >= PHOTOS  # a comparison of boxes


def test_killed_ray_driver_resumed_equals_an_uninterrupted_run(ray_cluster, ray_records, photos, model, tmp_path,
                                                              capsys):
    """The driver (a real `slidewin detect --engine ray` process with its own cluster) is killed
    with SIGKILL once a few records are written; `--resume` completes the same file."""
    out = tmp_path / "out"
    argv = detect(photos, model, out, "--engine", "ray", "--workers", "2")
    proc = subprocess.Popen([sys.executable, "-m", "slidewin.cli", *argv], cwd=ROOT, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    results = out / "results.jsonl"
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            if results.exists() and results.read_bytes().count(b"\n") >= 2:
                break
            time.sleep(0.005)
        killed = proc.poll() is None
        if killed:
            os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # whatever of its own cluster outlived it
        except ProcessLookupError:
            pass
    assert killed, "the run finished before it could be killed: give it more photos"
    done_before = results.read_bytes().count(b"\n")
    assert 2 <= done_before < PHOTOS + 1
    capsys.readouterr()
    assert main(argv + ["--resume"]) == SOME_FAILED_EXIT
    assert "recorded earlier" in capsys.readouterr().out
    assert by_image(records(out)) == ray_records


def test_a_killed_worker_loses_no_record(ray_cluster, ray_records, photos, model, tmp_path):
    """An actor process is SIGKILLed once two records are written: Ray restarts it, its image
    is done again, and every image is recorded once."""
    import psutil

    from slidewin.apps.folder.ray_engine import RayOptions, collect_sources, run_ray
    from slidewin.pipeline.config import DetectorConfig

    killed = []

    def kill_an_actor(i: int, record: dict) -> None:
        if i != 1:
            return
        for proc in psutil.Process().children(recursive=True):
            try:
                if any("_DetectActor" in part for part in proc.cmdline()):
                    proc.kill()
                    killed.append(proc.pid)
                    return
            except psutil.Error:
                pass

    out = tmp_path / "out"
    s = run_ray(collect_sources([photos]), out, model, options=RayOptions(workers=2), classes="coco",
                config=DetectorConfig(min_score=0.2, max_levels=1), progress=False, on_record=kill_an_actor)
    assert killed, "no actor process found to kill"
    assert (s.ok, s.failed, s.interrupted) == (PHOTOS, 1, False)
    assert by_image(records(out)) == ray_records


def test_s3_source_read_through_ray_gives_the_local_records(ray_cluster, s3_env, local_records, photos, model,
                                                           tmp_path, capsys):
    import boto3

    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="photos")
    for p in sorted(photos.iterdir()):
        s3.upload_file(str(p), "photos", f"set/{p.name}")
    s3.put_object(Bucket="photos", Key="set/notes.txt", Body=b"not an image suffix: skipped")
    s3.put_object(Bucket="photos", Key="set/.hidden.jpg", Body=b"hidden: skipped")
    out = tmp_path / "out"
    argv = detect("s3://photos/set/", model, out, "--engine", "ray", "--workers", "1")
    assert main(argv[:2] + ["s3://photos/missing.jpg"] + argv[2:]) == SOME_FAILED_EXIT
    got = by_image(records(out))
    assert got.pop("s3://photos/missing.jpg")["error"] == "no such file"
    want = {f"s3://photos/set/{Path(k).name}": {**v, "image": f"s3://photos/set/{Path(k).name}"}
            for k, v in local_records.items()}
    assert got == want
    capsys.readouterr()
    assert main(argv + ["--resume"]) == SOME_FAILED_EXIT  # keyed by URI: nothing is done again
    assert "0 this run" in capsys.readouterr().out and len(records(out)) == PHOTOS + 2


def test_each_actor_opens_one_detector_with_its_cpus_as_threads(model):
    from slidewin.apps.folder.ray_engine import ActorSpec, _DetectActor

    pytest.importorskip("ray")
    actor = _DetectActor(ActorSpec(model=str(model), model_name="m", classes="coco", threads=2))
    for clf in (actor.detector.classifier, actor.detector.dense):
        assert clf.session.get_session_options().intra_op_num_threads == 2
        assert clf.session.get_providers() == ["CPUExecutionProvider"]  # no GPU given to it


def test_more_workers_than_the_cluster_holds(ray_cluster, capsys):
    from slidewin.apps.folder.ray_engine import RayOptions, _pool_size
    from slidewin.errors import SlidewinError

    assert _pool_size(ray_cluster, RayOptions(), own_cluster=True) == 2
    assert _pool_size(ray_cluster, RayOptions(cpus_per_worker=2), own_cluster=True) == 1
    with pytest.raises(SlidewinError, match="3 worker.*need 3 CPU.*has 2 CPU"):
        _pool_size(ray_cluster, RayOptions(workers=3), own_cluster=True)
    assert _pool_size(ray_cluster, RayOptions(workers=3), own_cluster=False) == 3  # it may grow: a note
    assert "waits until it grows" in capsys.readouterr().err


# --- without a cluster ---------------------------------------------------------------------------


def test_without_the_extra_engine_ray_names_the_install_command(monkeypatch, capsys, one_line_error, tmp_path,
                                                                tiny_model):
    tiny = tiny_model(tmp_path / "tiny.onnx", ["N", 32, 32, 3])
    (tmp_path / "in").mkdir()
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` does without the extra
    code = main(["detect", str(tmp_path / "in"), "--model", str(tiny), "--out-dir", str(tmp_path / "o"),
                 "--engine", "ray"])
    assert code == 6
    one_line_error(capsys, code, "--engine ray", "pip install 'slidewin[ray]'")


@pytest.mark.parametrize("argv, needle", [
    (["--workers", "2"], "--workers is for --engine ray"),
    (["--gpus-per-worker", "1"], "--gpus-per-worker is for --engine ray"),
    (["--engine", "ray", "--prefetch", "2"], "--prefetch is for --engine local"),
])
def test_engine_flag_mistakes_are_one_line(argv, needle, tmp_path, capsys, one_line_error):
    code = main(["detect", str(tmp_path), "--model", "m.onnx", "--out-dir", str(tmp_path / "o"), *argv])
    one_line_error(capsys, code, needle)


def test_a_uri_needs_the_ray_engine(capsys, one_line_error):
    code = main(["detect", "s3://bucket/photos/", "--model", "m.onnx", "--out-dir", "o"])
    one_line_error(capsys, code, "s3://bucket/photos/", "--engine ray")


def test_an_address_nobody_answers_is_one_line_at_once(tmp_path, tiny_model):
    """Ray itself would retry for minutes, a warning every few seconds."""
    import socket

    pytest.importorskip("ray")
    tiny = tiny_model(tmp_path / "tiny.onnx", ["N", 32, 32, 3])
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.jpg").write_bytes(b"never read")
    with socket.socket() as s:  # a port that was free a moment ago
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.run([sys.executable, "-m", "slidewin.cli", "detect", str(tmp_path / "in"), "--model", str(tiny),
                           "--out-dir", str(tmp_path / "o"), "--engine", "ray", "--address", f"127.0.0.1:{port}"],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    err = [line for line in proc.stderr.strip().splitlines() if not line.startswith("note:")]  # random weights
    assert proc.returncode == 2 and len(err) == 1, proc.stderr
    assert f"cannot reach the Ray cluster at 127.0.0.1:{port}" in err[0]


# --- files the read tasks refuse unread (issue 22) -----------------------------------------------


def _sparse(path: Path, size: int, head: bytes = b"") -> Path:
    with open(path, "wb") as f:
        f.write(head)
        f.truncate(size)
    return path


@pytest.fixture(scope="module")
def hostile_photos(tmp_path_factory) -> Path:
    """Three COCO photos, a 1 GB sparse file of zeros and a 1 GB sparse file that starts with a
    real photo's header (a small image in far too many bytes)."""
    folder = tmp_path_factory.mktemp("hostile-photos")
    chosen = sorted(COCO_IMAGES.glob("*.jpg"))[:3]
    for p in chosen:
        shutil.copy(p, folder / p.name)
    _sparse(folder / "zeros.jpg", 1 << 30)
    _sparse(folder / "padded.jpg", 1 << 30, chosen[0].read_bytes()[:4096])
    return folder


def test_ray_read_tasks_refuse_huge_files_unread_as_a_local_run_does(ray_cluster, hostile_photos, model, tmp_path):
    """A 1 GB file never enters the dataset (the cluster's object store is 128 MiB): its record
    is the local run's, said from its size and header. `read_binary_files` read it whole."""
    local, remote = tmp_path / "local", tmp_path / "ray"
    assert main(detect(hostile_photos, model, local)) == SOME_FAILED_EXIT
    t0 = time.monotonic()
    assert main(detect(hostile_photos, model, remote, "--engine", "ray", "--workers", "1")) == SOME_FAILED_EXIT
    seconds = time.monotonic() - t0
    want, got = by_image(records(local)), by_image(records(remote))
    assert got == want
    assert "far more than a 640x" in got[str(hostile_photos / "padded.jpg")]["error"]
    assert got[str(hostile_photos / "zeros.jpg")]["error"]
    assert sum(1 for r in got.values() if "error" not in r) == 3
    assert seconds < 120, seconds


def test_read_capped_reads_a_pyarrow_filesystem_as_a_local_run_reads_a_file(hostile_photos, tmp_path):
    """The checks of the read tasks for URIs (S3, ...) are those of local files, error for error."""
    import pyarrow.fs as pafs

    from slidewin.apps.folder.ray_engine import read_capped
    from slidewin.errors import ImageError

    fs = pafs.LocalFileSystem()
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "folder.jpg").mkdir()
    photo = next(p for p in sorted(hostile_photos.iterdir()) if p.name.startswith("0"))
    cases = [photo, hostile_photos / "zeros.jpg", hostile_photos / "padded.jpg", tmp_path / "empty.jpg",
             tmp_path / "folder.jpg", tmp_path / "missing.jpg"]
    for path in cases:
        try:
            want = read_capped(str(path), 400_000_000)
        except ImageError as e:
            with pytest.raises(ImageError) as got:
                read_capped(str(path), 400_000_000, fs)
            assert str(got.value) == str(e)
        else:
            assert read_capped(str(path), 400_000_000, fs) == want


def test_a_ray_run_says_only_slidewin_lines(photos, model, tmp_path):
    """A run with a cluster of its own: no token notice, no "E core_worker" line of Ray's driver,
    no colour codes; only slidewin's own lines (here: the broken file's record)."""
    pytest.importorskip("ray")
    folder = tmp_path / "in"
    folder.mkdir()
    for name in sorted(p.name for p in photos.iterdir())[:2] + ["broken.jpg"]:
        shutil.copy(photos / name, folder / name)
    proc = subprocess.run([sys.executable, "-m", "slidewin", *detect(folder, model, tmp_path / "out", "--engine", "ray",
                                                                      "--workers", "1")],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == SOME_FAILED_EXIT, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines and all(line.startswith(("slidewin", "note:")) for line in lines), proc.stderr
    assert "\x1b" not in proc.stderr and "broken.jpg" in proc.stderr
    assert len(records(tmp_path / "out")) == 3


def _one_connection_server(reply: bytes | None):
    """A TCP server on loopback that answers its first connection with ``reply`` (None: says
    nothing), as a web server, an SSH server or a silent service would; (port, thread)."""
    import socket
    import threading

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)

    def serve():
        with srv:
            conn, _ = srv.accept()
            with conn:
                if reply is not None:
                    conn.sendall(reply)
                conn.settimeout(10)
                try:
                    conn.recv(1024)
                except OSError:
                    pass

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return srv.getsockname()[1], t


@pytest.mark.parametrize("reply, needle", [
    (b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n", "it answers HTTP/1: Ray's dashboard"),
    (b"SSH-2.0-OpenSSH_9.6\r\n", "it answers as an SSH server"),
    (None, "no HTTP/2 reply in 5 s"),
])
def test_an_address_that_is_not_a_ray_cluster_is_one_line_before_ray_starts(reply, needle, tmp_path, tiny_model):
    """Ray itself would retry for a minute, about 20 warnings before any slidewin line."""
    pytest.importorskip("ray")
    tiny = tiny_model(tmp_path / "tiny.onnx", ["N", 32, 32, 3])
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.jpg").write_bytes(b"never read")
    port, server = _one_connection_server(reply)
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "slidewin", "detect", str(tmp_path / "in"), "--model", str(tiny),
                           "--out-dir", str(tmp_path / "o"), "--engine", "ray", "--address", f"127.0.0.1:{port}"],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    err = [line for line in proc.stderr.strip().splitlines() if not line.startswith("note:")]  # random weights
    assert proc.returncode == 2 and len(err) == 1, proc.stderr
    assert f"127.0.0.1:{port} is not a Ray cluster ({needle}" in err[0], err[0]
    assert time.monotonic() - t0 < 60
    server.join(timeout=15)


def test_the_address_check_lets_a_real_gcs_through(ray_cluster):
    from slidewin.apps.folder.ray_engine import _check_reachable

    _check_reachable(ray_cluster.get_runtime_context().gcs_address)  # raises if it took Ray's GCS for something else


def test_the_read_task_never_reads_a_refused_file(hostile_photos):
    """What a read task hands on for a 1 GB file: no bytes, the local run's error, and a peak
    of allocations far below the file (`read_binary_files` held it whole)."""
    import tracemalloc

    import numpy as np

    from slidewin.apps.folder.prefetch import decode
    from slidewin.apps.folder.ray_engine import _read_files

    paths = [str(hostile_photos / "zeros.jpg"), str(hostile_photos / "padded.jpg")]
    tracemalloc.start()
    try:
        out = _read_files({"path": np.array(paths, dtype=object), "drawn": np.array(["", ""], dtype=object)},
                          max_pixels=400_000_000, filesystem=None)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20, peak
    assert [bytes(b) for b in out["bytes"]] == [b"", b""]
    assert list(out["error"]) == [decode(Path(p)).error for p in paths]
