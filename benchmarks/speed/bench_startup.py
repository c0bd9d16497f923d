"""One photo, one command: whole-process wall time of the CLI against the time inside ONNX Runtime.

Users call ``slidewin detect photo.jpg`` from scripts, one photo at a time, and judge the tool by
that wall time. This runs the CLI as a user's second call would, each run a separate process (warm
disk, bytecode caches written, dense model cached and checked: unmeasured warm-up runs first), for
``classify``, ``detect --mode dense`` and ``detect --mode patch`` on one 640 px coco-dev photo,
and reports per command:

- whole-process wall time (median of ``--runs``);
- time to first output (the first byte on stdout);
- the stage times of the JSON record (``inference`` is the time inside ONNX Runtime), and the
  ratio whole-process / inference (issue 14's target: at most 1.5 for dense ``detect``).

``--before PATH`` adds the same rows for another ``slidewin`` executable (an older checkout's
venv), measured interleaved with this one, so before/after are side by side in one run. Each
version gets its own copy of the model: versions that disagree on the dense cache's format would
otherwise rebuild it in turn on every run. A wrapper that runs another tree with ``python -m``
needs ``-P``, or the working directory's ``slidewin`` comes first on ``sys.path``.

``--folder N`` also runs one folder run over N coco-dev photos (dense mode) and compares the
per-image wall time after the first record (start-up paid once) with what the records say each
image needed: ONNX Runtime plus decode (issue 14: within 10%).

    python benchmarks/speed/bench_startup.py [--runs 7] [--before ../baseline/.venv/bin/slidewin] [--folder 50]
        [--out NAME] [--data DIR | --photo PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: _common

from _common import (
    Result,
    add_data_option,
    ensure_model,
    interleave,
    machine,
    parse,
    photos,
)

from slidewin.io.filememo import RACY_SECONDS

PHOTO = "000000000790.jpg"  # 640 x 426


def commands(model: Path, photo: Path, json_out: Path) -> dict[str, list[str]]:
    return {
        "classify": ["classify", str(photo), "--model", str(model)],
        "detect --mode dense": ["detect", str(photo), "--model", str(model), "--mode", "dense",
                                "--json", str(json_out)],
        "detect --mode patch": ["detect", str(photo), "--model", str(model), "--mode", "patch",
                                "--json", str(json_out)],
    }


#: The processes' environment: a user's, with bytecode caches. pip writes them when it installs a
#: package, and Python on first import; a PYTHONDONTWRITEBYTECODE in the benchmark's own
#: environment (this sandbox sets it) would make every run compile slidewin's modules again.
USER_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def run_once(exe: str, argv: list[str], json_out: Path) -> dict:
    """Wall time, time to first stdout byte, and the JSON record's stages of one process."""
    json_out.unlink(missing_ok=True)
    t0 = time.perf_counter()
    proc = subprocess.Popen([exe, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=USER_ENV)
    first = proc.stdout.read(1)
    t_first = time.perf_counter() - t0
    rest, err = proc.communicate()
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"bench_startup: {exe} {' '.join(argv)} failed: {err.decode()[-500:]}")
    stages = json.loads(json_out.read_text())["seconds"] if json_out.exists() else {}
    return {"wall": wall, "first_output": t_first if first else wall, "stages": stages}


def summarise(runs: list[dict]) -> dict:
    stages = sorted({k for r in runs for k in r["stages"]})
    return {"wall_s": statistics.median(r["wall"] for r in runs),
            "first_output_s": statistics.median(r["first_output"] for r in runs),
            "stages_s": {k: statistics.median(r["stages"].get(k, 0.0) for r in runs) for k in stages},
            "runs": runs}


def folder_run(exe: str, model: Path, n: int, tmp: Path, data: Path) -> dict:
    """Per-image wall time of a folder run after its first record, against the records' own
    inference + decode seconds (decode runs ahead in a thread: it overlaps when prefetched)."""
    folder = tmp / "photos"
    folder.mkdir()
    for p in photos(data, n):
        (folder / p.name).symlink_to(p)
    out = tmp / "out"
    proc = subprocess.Popen([exe, "detect", str(folder), "--model", str(model), "--mode", "dense",
                             "--out-dir", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=USER_ENV)
    results = out / "results.jsonl"
    while not (results.exists() and results.stat().st_size):  # the first record: start-up is paid
        if proc.poll() is not None:
            raise SystemExit(f"bench_startup: folder run failed: {proc.stderr.read().decode()[-500:]}")
        time.sleep(0.01)
    t_first = time.perf_counter()
    proc.wait()
    t_end = time.perf_counter()
    records = [json.loads(line) for line in results.read_text().splitlines()]
    rest = records[1:]
    per_image = (t_end - t_first) / max(1, len(rest))
    need = statistics.mean(r["seconds"]["inference"] + r["seconds"]["decode"] for r in rest)
    inference = statistics.mean(r["seconds"]["inference"] for r in rest)
    return {"images": len(records), "wall_per_image_s": per_image, "inference_plus_decode_s": need,
            "inference_s": inference, "ratio": per_image / need}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--before", default=None, help="another slidewin executable to measure beside this tree's")
    ap.add_argument("--photo", type=Path, default=None, help=f"the photo (default: {PHOTO} of --data)")
    add_data_option(ap, required=False, help="where the photo (and the folder run's photos) come from")
    ap.add_argument("--folder", type=int, default=0, metavar="N", help="also a folder run over N photos")
    ap.add_argument("--out", default="startup", help="name of the JSON and PNG under benchmarks/results/")
    args = parse(ap, argv)
    if args.photo is None and args.data is not None:
        args.photo = (args.data / "images" if (args.data / "images").is_dir() else args.data) / PHOTO
    if args.photo is None or not args.photo.is_file():
        sys.exit(f"bench_startup: no photo {args.photo or PHOTO}: pass --photo PATH or --data DIR")
    if args.folder and args.data is None:
        sys.exit("bench_startup: --folder needs photos: pass --data DIR")
    here = shutil.which("slidewin", path=str(Path(sys.executable).parent)) or "slidewin"
    exes = {"after": here} if args.before is None else {"before": args.before, "after": here}
    result = Result(machine(), args, {}, name=args.out)
    print(f"machine: {result.machine_line}; load average {os.getloadavg()[0]:.1f}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        json_out = tmp / "record.json"
        cmds = {}
        for label in exes:  # each version its own copy of the model, so its own dense cache beside it:
            model = tmp / label / "model.onnx"  # versions that disagree on the cache's format would
            model.parent.mkdir()  # rebuild it in turn, and every run would pay for a rebuild
            shutil.copy(ensure_model("efficientnet-lite0"), model)
            cmds[label] = commands(model, args.photo, json_out)
        for label, exe in exes.items():  # warm-up: disk cache, bytecode, dense model written
            for cmd in cmds[label].values():
                run_once(exe, cmd, json_out)
        # What a user's second call finds: files older than RACY_SECONDS are remembered
        # (slidewin.io.filememo), which the copy and the dense form just written were not.
        time.sleep(RACY_SECONDS)
        for label, exe in exes.items():
            run_once(exe, cmds[label]["detect --mode dense"], json_out)
        names = list(cmds["after"])
        results = {(label, name): [] for label in exes for name in names}
        cases = [(name, label) for name in names for label in exes]
        for _, (name, label) in interleave(cases, args.runs):  # load drifts hit both alike
            results[label, name].append(run_once(exes[label], cmds[label][name], json_out))
        folder = folder_run(here, tmp / "after" / "model.onnx", args.folder, tmp, args.data) if args.folder else None
    out, rows = result.rows, []
    for (label, name), runs in results.items():
        s = summarise(runs)
        out.setdefault(name, {})[label] = s
        inf = s["stages_s"].get("inference")
        rows.append([name, label, f"{s['wall_s']:.2f}", f"{s['first_output_s']:.2f}",
                     "-" if not inf else f"{inf:.2f}", "-" if not inf else f"{s['wall_s'] / inf:.2f}",
                     ", ".join(f"{k} {v:.3f}" for k, v in s["stages_s"].items()) or "-"])
    result.table(["command", "version", "whole process s (median)", "first output s", "inside ONNX Runtime s",
                 "whole / ORT", "stages in the record (s)"], rows,
                title=f"One photo, {args.runs} runs each, separate processes ({result.machine_line})")
    if folder:
        print(f"\nfolder run, {folder['images']} photos, dense: {folder['wall_per_image_s']:.3f} s per image after "
              f"the first record; the records need {folder['inference_plus_decode_s']:.3f} s (ONNX Runtime "
              f"{folder['inference_s']:.3f} + decode): {folder['ratio']:.2f}x")
    result.extra.update(photo=str(args.photo), executables=exes, folder_run=folder, load_avg_1min=os.getloadavg()[0])
    result.save()

    def draw(ax):
        names = list(out)
        width = 0.8 / len(exes)
        for k, label in enumerate(exes):
            walls = [out[n][label]["wall_s"] for n in names]
            infs = [out[n][label]["stages_s"].get("inference", 0.0) for n in names]
            xs = [i + k * width for i in range(len(names))]
            ax.bar(xs, walls, width, label=f"{label}: whole process")
            ax.bar(xs, infs, width * 0.5, label=f"{label}: inside ONNX Runtime")
        ax.set_xticks([i + width * (len(exes) - 1) / 2 for i in range(len(names))], names)
        ax.set_ylabel("seconds")
        ax.legend(fontsize=8)
        ax.set_title("One photo, one process", fontsize=9)

    result.chart(draw)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
