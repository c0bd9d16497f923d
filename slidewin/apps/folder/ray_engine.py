"""Folder runs on a Ray cluster: ``slidewin detect SOURCE --out-dir OUT --engine ray``.

Done the way Ray Data's batch-inference guide does it: read tasks turn the files' paths into
their bytes, and `map_batches` hands them, one image per call, to a pool of actors
(`_DetectActor`). The read tasks read each file as a local run does (`read_capped`): ``stat``
first, regular files only, the header judged from the first MiB and the rest read only when
the declared image allows it; a refused file enters the dataset as its one-line error, never
as its bytes (`ray.data.read_binary_files` would read a 1 GB sparse file whole, in a task and
again in the object store). Each actor opens the detector once in its ``__init__``, with
ONNX Runtime's threads set to its CPUs (Ray sets ``OMP_NUM_THREADS``, which ONNX Runtime
ignores) and on CUDA when Ray gave it a GPU; it decodes the bytes with the validation of local
runs (`prefetch.decode`) and returns the record a local run writes (`run.detect_one`), as JSON
text so that Arrow never retypes a field.

The driver consumes the dataset exactly once (Ray Data is lazy: a second consumer would run the
whole pipeline again) and appends each record to ``OUT/results.jsonl`` as it arrives, through
the same `results_log.ResultsLog` and `run.record_all` as a local run: whole lines, a killed
driver or worker loses no written record, ``--resume`` skips what is done (keyed by
`inputs.result_key`), every record names its image as a local run would. Only the order of
the lines differs: it is the order in which the workers finish.

Ray is imported inside functions only: `import slidewin` and local runs never load it.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from slidewin.apps.folder.engines import RAY_INSTALL, Engine, RayOptions, is_uri  # noqa: F401 (Engine: re-exported)
from slidewin.apps.folder.prefetch import Decoded, decode
from slidewin.apps.folder.records import DetectionRecord
from slidewin.apps.folder.run import (DRAWN_DIR, FolderSummary, check_own_folders, detect_one, drawn_paths, open_run,
                                      record_all)
from slidewin.errors import ImageError, MissingDependencyError, SlidewinError, first_line, one_line
from slidewin.io.images import DEFAULT_MAX_PIXELS, IMAGE_SUFFIXES, read_judged
from slidewin.io.stderr import eprint
from slidewin.pipeline.config import DetectorConfig
from slidewin.runtime.sessions import Device

#: Images per read task: small blocks spread the work evenly over the actors and keep little
#: read-but-unprocessed data in the object store.
FILES_PER_BLOCK = 16


@dataclass(frozen=True)
class ActorSpec:
    """What every actor opens and how it records (shipped to the actors by pickling).

    Attributes:
        model: the model file, absolute (actors may not share the driver's working directory).
        model_name: what records name as the model (as the user gave it, like local runs).
        draw: the output folder drawn images go in (each row names its drawn file), as a local
            ``--draw`` run does.
    """

    model: str
    model_name: str
    config: DetectorConfig | None = None
    classes: str | None = None
    proposals: object | None = None  # a ProposalConfig, when proposals are scored instead of windows
    device: Device = Device.AUTO
    threads: int = 1
    convert: bool = False
    max_pixels: int = DEFAULT_MAX_PIXELS
    draw: str | None = None


def import_ray():
    """The ``ray`` module with Ray Data, or a one-line error naming the install command."""
    try:
        import ray
        import ray.data  # noqa: F401  (the extra is ray[data]: fail here, not mid-run)
    except ImportError:
        raise MissingDependencyError(f"--engine ray needs Ray Data: {RAY_INSTALL}") from None
    return ray


class _DetectActor:
    """One detector per actor, opened once; called with batches of file bytes and paths."""

    def __init__(self, spec: ActorSpec):
        import ray

        from slidewin.pipeline.factory import build_detector

        device = spec.device
        if device is Device.AUTO:  # decided here, from what Ray gave this actor
            device = Device.CUDA if ray.get_gpu_ids() else Device.CPU
        self.spec = spec
        self.detector = build_detector(spec.model, config=spec.config, classes=spec.classes, device=device,
                                       threads=spec.threads, proposals=spec.proposals)

    def __call__(self, batch: dict) -> dict:
        import numpy as np

        spec, lines = self.spec, []
        for data, path, error, drawn in zip(batch["bytes"], batch["path"], batch["error"], batch["drawn"]):
            if error:  # refused by the read task, unread: the record a local run writes
                decoded = Decoded(None, str(error), 0.0)
            else:
                decoded = decode(Path(path), spec.convert, spec.max_pixels, data=bytes(data))
            record = detect_one(self.detector, path, decoded, spec.model_name, Path(drawn) if drawn else None,
                                Path(spec.draw) if spec.draw else None)
            lines.append(json.dumps(record.to_json()))
        return {"record": np.array(lines, dtype=object)}


def read_capped(path: str, max_pixels: int, filesystem=None) -> bytes:
    """A file's bytes, read as a local run reads them (`read_image_file`): a local path through
    it, a file of a pyarrow ``filesystem`` (S3, ...) with the same checks: the size first, the
    header judged from the first `HEAD_BYTES`, the rest read only when the declared image
    allows it.

    Raises:
        ImageError: naming the file and the problem (no such file, not a file, empty,
            a refused header, more bytes than the image needs).
    """
    from slidewin.io.images import read_image_file

    if filesystem is None:
        return read_image_file(path, max_pixels)
    import pyarrow.fs as pafs

    try:
        info = filesystem.get_file_info(path)
        if info.type == pafs.FileType.NotFound:
            raise ImageError("no such file", path)
        if info.type == pafs.FileType.Directory:
            raise ImageError("is a directory, not an image", path)
        if info.type != pafs.FileType.File:
            raise ImageError("not an image file: not a regular file", path)
        size = info.size
        if not size:
            raise ImageError("empty file (0 bytes)", path)
        with filesystem.open_input_file(path) as f:
            return read_judged(lambda offset, count: f.read_at(count, offset), size, path, max_pixels)
    except OSError as e:
        raise ImageError(f"cannot read file ({first_line(e, limit=None)})", path) from None


def _read_files(batch: dict, max_pixels: int, filesystem) -> dict:
    """Read task: each path's bytes (`read_capped`), or its one-line error and no bytes."""
    import numpy as np

    datas, errors = [], []
    for path in batch["path"]:
        try:
            datas.append(read_capped(str(path), max_pixels, filesystem))
            errors.append("")
        except Exception as e:  # recorded for this image, as a local run does
            datas.append(b"")
            errors.append(one_line(e, with_path=False))
    return {"path": batch["path"], "drawn": batch["drawn"], "bytes": np.array(datas, dtype=object),
            "error": np.array(errors, dtype=object)}


def remote_inputs(sources: list[str]) -> tuple[object, list[str], list[str]]:
    """The image files under URIs (a folder, walked recursively, or a file), through pyarrow.

    Like `collect_inputs`: files with an image suffix (any case), no hidden names, sorted, each
    once. Credentials and endpoints come from the usual variables (``AWS_ENDPOINT_URL``, ...).

    Returns:
        (filesystem, files, missing): pyarrow's filesystem of the first URI, the files' URIs,
        and the plain file URIs that do not exist (recorded as errors, as local runs do).
    """
    import pyarrow.fs as pafs

    filesystem, scheme, files, missing = None, sources[0].split("://", 1)[0], [], []
    for source in sources:
        if source.split("://", 1)[0] != scheme:
            raise SlidewinError(f"one run reads one kind of URI: {sources[0]} and {source}")
        try:
            fs, path = pafs.FileSystem.from_uri(source)
            info = fs.get_file_info(path)
            found = fs.get_file_info(pafs.FileSelector(path, recursive=True)) \
                if info.type == pafs.FileType.Directory else []
        except (OSError, ValueError) as e:
            raise SlidewinError(f"cannot list {source} ({first_line(e, limit=None)})") from None
        filesystem = filesystem or fs
        if info.type == pafs.FileType.File:
            files.append(source)
        elif info.type == pafs.FileType.NotFound:
            missing.append(source)
        for f in found:
            rel = f.path[len(path):].lstrip("/")
            if (f.type == pafs.FileType.File and f.path.lower().endswith(IMAGE_SUFFIXES)
                    and not any(part.startswith(".") for part in rel.split("/"))):
                files.append(f"{scheme}://{f.path}")
    return filesystem, sorted(set(files)), sorted(set(missing) - set(files))


@dataclass(frozen=True)
class Sources:
    """The images of a run: local files (as `collect_inputs` finds them) or URIs.

    Attributes:
        files: every image, in order (URIs named but missing included: they get error records).
        root: the folder drawn images' relative paths start from (local files only).
        filesystem: pyarrow's filesystem for URIs (None: local files).
        missing: URIs named on the command line that do not exist.
    """

    files: list[str | Path]
    root: Path | None = None
    filesystem: object | None = None
    missing: frozenset[str] = frozenset()


def collect_sources(specs: list[str | Path], exclude: Path | None = None) -> Sources:
    """Local folders, globs and files (see `collect_inputs`), or URIs (see `remote_inputs`)."""
    from slidewin.apps.folder.inputs import collect_inputs

    remote = [is_uri(s) for s in specs]
    if any(remote) and not all(remote):
        raise SlidewinError("one run reads local files or URIs, not both")
    if not any(remote):
        root, files = collect_inputs(specs, exclude=exclude)
        return Sources(list(files), root)
    filesystem, files, missing = remote_inputs([str(s) for s in specs])
    return Sources(sorted(files + missing), None, filesystem, frozenset(missing))


def _connect(ray, address: str | None) -> tuple[bool, bool]:
    """Join the cluster at ``address`` (or ``RAY_ADDRESS``), else start one on this machine.

    Without an address the run gets a cluster of its own even where ``ray start`` made one
    here: joining it is asked for with ``auto``, so what a command does never depends on what
    else runs on the machine.

    Returns:
        (connected, own): whether this call connected (the run disconnects at its end: False when
        the caller had already, e.g. a library user's own ``ray.init``), and whether it started
        the cluster (one that cannot grow).
    """
    if ray.is_initialized():
        return False, False
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        _check_reachable(address)
    # Ray's worker logs stay in its log folder: streamed here they would interleave with the bar.
    # What Ray says on every run (the token notice of a cluster of its own, the driver's notes
    # about Ray Data's actors) would bury slidewin's one line; a failure is said by `_ray_failure`.
    quiet = {"logging_level": logging.ERROR, "log_to_driver": False}
    auth_logger = logging.getLogger("ray._private.authentication")
    auth_level = auth_logger.level
    auth_logger.setLevel(logging.ERROR)
    try:
        if address:
            ray.init(address=address, **quiet)
        else:
            ray.init(address="local", include_dashboard=False, **quiet)
    except Exception as e:  # ConnectionError, RuntimeError, ValueError: which one depends on the address
        raise SlidewinError(f"cannot {'reach the Ray cluster at ' + address if address else 'start Ray'} "
                            f"({first_line(e, limit=None)})") from None
    finally:
        auth_logger.setLevel(auth_level)
    return True, not address


#: What an HTTP/2 client sends first (RFC 9113 3.4): the preface and an empty SETTINGS frame.
_H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """A ``HOST:PORT`` that is not a Ray cluster is one line now; Ray itself would retry for
    minutes, printing a warning every few seconds.

    Ray's GCS speaks gRPC, i.e. HTTP/2, at that port, and an HTTP/2 server answers a client's
    preface with a SETTINGS frame. A port nothing listens on, one that answers otherwise (the
    dashboard's HTTP/1 at 8265, an SSH server) or says nothing is refused here. ``auto``,
    ``scheme://`` addresses and TLS clusters (``RAY_USE_TLS``) are left to Ray.
    """
    import socket

    host, _, port = address.rpartition(":")
    if "://" in address or not host or not port.isdigit():
        return
    try:
        conn = socket.create_connection((host.strip("[]"), int(port)), timeout=timeout)
    except OSError as e:
        raise SlidewinError(f"cannot reach the Ray cluster at {address} ({e.strerror or 'timed out'}); "
                            "is `ray start --head` running there?") from None
    if os.environ.get("RAY_USE_TLS", "").lower() in ("1", "true"):
        conn.close()
        return
    reply = b""
    with conn:
        try:
            conn.sendall(_H2_PREFACE)
            while len(reply) < 9:
                chunk = conn.recv(9 - len(reply))
                if not chunk:
                    break
                reply += chunk
        except OSError:  # a timeout, or reset by a server that does not like the preface
            pass
    if len(reply) == 9 and reply[3] == 0x04:  # a SETTINGS frame: HTTP/2, as Ray's GCS speaks it
        return
    what = ("it answers HTTP/1: Ray's dashboard or another web server" if reply.startswith(b"HTTP/")
            else "it answers as an SSH server" if reply.startswith(b"SSH-")
            else f"no HTTP/2 reply in {timeout:g} s" if not reply else "its reply is not HTTP/2")
    raise SlidewinError(f"{address} is not a Ray cluster ({what}); give the head node's GCS address, "
                        "HOST:6379 unless `ray start --head --port` chose another")


def _quiet_ray_data(ray) -> None:
    """slidewin shows its own progress bar, one line per failed image and one line if the run
    fails; Ray Data's bars, execution logs and tracebacks (kept in its log folder) would only
    repeat them."""
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.CRITICAL)  # a failure is said once, by `_ray_failure`


def _pool_size(ray, options: RayOptions, own_cluster: bool) -> int:
    """``options.workers``, or as many actors as the cluster's CPUs (and GPUs) hold.

    A cluster started for this run never grows, so asking more of it is an error; a cluster
    joined may be autoscaling, so there it is a note and the run waits for the resources.
    """
    total = ray.cluster_resources()
    cpus, gpus = total.get("CPU", 0.0), total.get("GPU", 0.0)
    fit = int(cpus // options.cpus_per_worker)
    if options.gpus_per_worker:
        fit = min(fit, int(gpus // options.gpus_per_worker))
    workers = options.workers or max(1, fit)
    if workers > fit:
        gpu_need = f" and {workers * options.gpus_per_worker:g} GPU(s)" if options.gpus_per_worker else ""
        text = (f"{workers} worker(s) need {workers * options.cpus_per_worker} CPU(s){gpu_need}; the cluster has "
                f"{cpus:g} CPU(s) and {gpus:g} GPU(s)")
        if own_cluster:
            raise SlidewinError(f"{text}: lower --workers, --cpus-per-worker or --gpus-per-worker")
        eprint(f"slidewin: note: {text} now; the run waits until it grows")
    return workers


def _dataset(ray, rows: list[dict], filesystem, spec: ActorSpec, options: RayOptions, workers: int):
    """Paths -> bytes or errors (read tasks, `read_capped`) -> records (actor pool), lazily; one
    image per call."""
    blocks = min(len(rows), max(2 * workers, -(-len(rows) // FILES_PER_BLOCK)))
    # Reading is I/O. Read tasks asking for a CPU would wait forever behind actors that hold
    # every CPU of the cluster (the default pool), so they ask for none and are capped instead.
    # One file per read call: a block never holds more than one image's bytes.
    ds = ray.data.from_items(rows, override_num_blocks=blocks)
    ds = ds.map_batches(_read_files, fn_kwargs={"max_pixels": spec.max_pixels, "filesystem": filesystem},
                        batch_size=1, batch_format="numpy", num_cpus=0, concurrency=2 * workers)
    return ds.map_batches(_DetectActor, fn_constructor_kwargs={"spec": spec}, batch_size=1, batch_format="numpy",
                          compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=options.cpus_per_worker,
                          num_gpus=options.gpus_per_worker or None)


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_OWN_ERROR = re.compile(r"slidewin\.errors\.\w+: (.+)")


def _ray_failure(ray, e: BaseException) -> SlidewinError:
    """A failure of the Ray pipeline itself (not of an image: those are records) as one line.

    An actor's own SlidewinError (e.g. the model is not at that path on a worker node) is said
    as is: Ray keeps it as the cause of a task error, or as the last line of an actor's death
    message (the exception itself is not kept there).
    """
    if isinstance(e, ray.exceptions.RayTaskError) and isinstance(e.cause, SlidewinError):
        return e.cause
    lines = [line.strip() for line in _ANSI.sub("", str(e)).splitlines() if line.strip()]
    last = lines[-1] if lines else type(e).__name__
    own = _OWN_ERROR.match(last)
    if own:
        return SlidewinError(own.group(1))
    return SlidewinError(f"the Ray run failed ({type(e).__name__}: {last}); Ray's logs are in "
                         "/tmp/ray/session_latest/logs on the head node")


def _ray_records(ray, todo: list[str | Path], sources: Sources, spec: ActorSpec, options: RayOptions,
                 drawn: dict) -> Generator[DetectionRecord, None, None]:
    """The records of ``todo``: URIs named but missing first (as local runs record them), then
    every other image's record as the actors finish it, each once."""
    # Rows name local files by absolute path (actors may not share the driver's working
    # directory) and URIs by their filesystem's path (no scheme).
    given, rows = {}, []
    for path in todo:
        name = str(path)
        if name in sources.missing:
            yield DetectionRecord.of(name, None, spec.model_name, error="no such file")
            continue
        key = name.split("://", 1)[1] if is_uri(name) else os.path.abspath(name)
        given[key] = name
        rows.append({"path": key, "drawn": str(drawn[path]) if path in drawn else ""})
    if not rows:
        return
    connected, own = _connect(ray, options.address)
    try:
        _quiet_ray_data(ray)
        ds = _dataset(ray, rows, sources.filesystem, spec, options, _pool_size(ray, options, own))
        for row in ds.iter_rows():
            record = DetectionRecord.from_json(json.loads(row["record"]))
            name = given.pop(record.image, None)
            if name is None:  # a block re-run after a worker died: its first copy is written
                continue
            record.image = name
            yield record
    except ray.exceptions.RayError as e:
        raise _ray_failure(ray, e) from None
    finally:
        if connected:
            ray.shutdown()


def run_ray(sources: Sources, out_dir: Path, model: str | Path, *, options: RayOptions = RayOptions(),
            config: DetectorConfig | None = None, classes: str | None = None, proposals=None,
            device: Device | str = Device.AUTO, resume: bool = False, draw: bool = False, convert: bool = False,
            max_pixels: int = DEFAULT_MAX_PIXELS, progress: bool | None = None, settings: dict | None = None,
            on_record: Callable[[int, DetectionRecord], None] | None = None) -> FolderSummary:
    """`run_folder` on a Ray cluster: the same ``results.jsonl``, records, resume and summary.

    The model is opened in every actor (open it once in the driver first, as the CLI does, to
    fail early on a bad model or ``classes``); it and local images must be at the same paths on
    every node of a multi-node cluster (a shared filesystem), as must ``out_dir`` with ``draw``.

    Args:
        sources: the images (`collect_sources`).
        out_dir: where ``results.jsonl`` (and ``drawn/``) go, on the driver's machine.
        model: the model file; records name it as given.
        options: the cluster and the actor pool.
        config, classes, proposals, device: as for `build_detector` (device ``auto``: CUDA in
            actors that were given a GPU, else the CPU).
        resume, draw, convert, max_pixels, progress, settings, on_record: as for `run_folder`.
    """
    ray = import_ray()
    if draw and sources.root is None:
        raise SlidewinError("--draw writes beside local images only; URIs have no local folder to mirror")
    if draw:  # a drawn/ that is a link or a file would fail every image: refuse the run once
        check_own_folders(Path(out_dir), Path(out_dir) / DRAWN_DIR / "x")
    spec = ActorSpec(model=os.path.abspath(model), model_name=str(model), config=config, classes=classes,
                     proposals=proposals, device=Device(device), threads=options.cpus_per_worker, convert=convert,
                     max_pixels=max_pixels, draw=os.path.abspath(out_dir) if draw else None)
    log, todo, summary = open_run(sources.files, Path(out_dir), model, resume, settings, sources.root)
    # Named in the driver, over every input, as a local run names them: a.png and a.png.jpg
    # never share a drawn file, and a resume draws the same names.
    drawn = {p: Path(os.path.abspath(d)) for p, d in drawn_paths(Path(out_dir), sources.root, sources.files).items()} \
        if draw else {}
    with _driver_log_aside():
        return record_all(_ray_records(ray, todo, sources, spec, options, drawn), log, summary, progress, on_record)


@contextmanager
def _driver_log_aside() -> Iterator[None]:
    """Ray's C++ core in the driver writes to file descriptor 2 on every run ("E core_worker
    ... has constructor arguments in the object store", which is how Ray Data makes every
    actor pool) and takes no logging setting for it. During the run fd 2 points at a private
    temporary file, and ``sys.stderr`` (slidewin's lines, the progress bar) at the real stderr.
    A failed run is said in one line by `_ray_failure`; Ray's own logs stay in its log folder."""
    import tempfile

    try:
        sys.stderr.flush()
        on_fd2 = sys.stderr.fileno() == 2  # else (a library user's stream, a test's capture) it stays as it is
    except (AttributeError, OSError, ValueError):
        on_fd2 = False
    try:
        log = tempfile.TemporaryFile(prefix="slidewin-ray-driver-")
        real = os.dup(2)
    except OSError:  # no temp file, no fd 2: leave it as it is
        yield
        return
    stream = sys.stderr
    if on_fd2:
        sys.stderr = open(os.dup(real), "w", buffering=1, errors="backslashreplace")
    os.dup2(log.fileno(), 2)
    try:
        yield
    finally:
        if on_fd2:
            sys.stderr.flush()
            sys.stderr.close()
            sys.stderr = stream
        os.dup2(real, 2)
        os.close(real)
        log.close()
