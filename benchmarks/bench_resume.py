"""Crash and resume: SIGKILL a folder run at random moments, resume it, compare with a clean run.

`slidewin detect FOLDER --out-dir OUT --resume` is started over N coco-dev photos and killed
with SIGKILL at a random moment, again and again (``--kills`` times), then left to finish. The
final ``results.jsonl`` must equal an uninterrupted run's, record for record (timings aside), with
no line lost and none duplicated. A kill rarely lands inside a write, so every other kill also
appends half of the next record, as a write torn by a crash or a power cut would leave it: the
resumed run must cut it away and redo that image. Run:

    python benchmarks/bench_resume.py [--images 40] [--kills 8] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import (
    COCO_DEV,
    ROOT,
    ensure_model,
    machine,
    machine_line,
    print_table,
    write_json,
)

TIMING = ("seconds",)


def strip(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING} for r in records]


def read_lines(path: Path) -> tuple[list[bytes], bool]:
    """(whole lines, whether a partial line follows them)."""
    data = path.read_bytes() if path.exists() else b""
    whole = data.rfind(b"\n") + 1
    return data[:whole].splitlines(keepends=True), whole < len(data)


def start(argv: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "slidewin.cli", *argv], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=40)
    ap.add_argument("--kills", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-torn-writes", action="store_true", help="do not simulate torn writes")
    args = ap.parse_args(argv)
    rng = random.Random(args.seed)

    model = ensure_model("efficientnet-lite0")
    m = machine()
    print(f"machine: {machine_line(m)}")
    photos = sorted((COCO_DEV / "images").glob("*.jpg"))[: args.images]
    config = ["--mode", "dense", "--max-levels", "2", "--classes", "coco", "--min-score", "0.3"]
    with tempfile.TemporaryDirectory(prefix="bench-resume-") as tmp:
        tmp = Path(tmp)
        folder = tmp / "in"
        folder.mkdir()
        for p in photos:
            os.symlink(p, folder / p.name)
        (folder / "broken.jpg").write_bytes(photos[0].read_bytes()[:5000])  # a bad file is a record too
        common = ["detect", str(folder), "--model", str(model), *config]

        # The uninterrupted run, timed: when does the first record appear, how long per image.
        ref = tmp / "ref"
        t0 = time.perf_counter()
        proc = start(common + ["--out-dir", str(ref)])
        first = None
        while proc.poll() is None:
            if first is None and read_lines(ref / "results.jsonl")[0]:
                first = time.perf_counter() - t0
            time.sleep(0.01)
        total = time.perf_counter() - t0
        if proc.returncode not in (0, 3):
            raise SystemExit(f"reference run failed: {proc.stderr.read()}")
        reference = [json.loads(x) for x in read_lines(ref / "results.jsonl")[0]]
        n = len(reference)
        per_image = (total - (first or 0)) / max(n - 1, 1)
        print(f"reference: {n} records in {total:.1f} s (first after {first:.1f} s, {per_image:.2f} s/image)")

        out = tmp / "out"
        results = out / "results.jsonl"
        run_argv = common + ["--out-dir", str(out), "--resume"]
        kills, events, snapshots, torn, truncated_msgs, real_partials = 0, [], [], 0, 0, 0
        torn_tail = b""  # the simulated torn write still in the file, if any
        attempt = 0
        while kills < args.kills and attempt < 4 * args.kills:
            before = len(read_lines(results)[0])
            if before == n:
                break
            # Startup (imports, model) plus about a share of the work left: the kills spread over the
            # run, some landing while the model loads, most between or during images.
            delay = rng.uniform(0.0, (first or 1.0) + per_image * (n - before) / (args.kills - kills + 1))
            attempt += 1
            proc = start(run_argv)
            t0 = time.perf_counter()
            while proc.poll() is None and time.perf_counter() - t0 < delay:
                time.sleep(0.002)
            killed = proc.poll() is None
            if killed:
                os.kill(proc.pid, signal.SIGKILL)
                kills += 1
            _, err = proc.communicate()
            truncated_msgs += err.count("partial last line")
            lines, partial = read_lines(results)
            tail = results.read_bytes()[sum(map(len, lines)):] if partial else b""
            if partial and tail != torn_tail:  # a kill inside a write left it (not the simulation)
                real_partials += 1
            torn_tail = tail
            snapshots.append(lines)
            simulated = False
            if killed and not partial and not args.no_torn_writes and kills % 2 == 0 and len(lines) < n:
                nxt = (json.dumps(reference[len(lines)]) + "\n").encode()
                torn_tail = nxt[: rng.randrange(1, len(nxt) - 1)]
                with open(results, "ab") as f:
                    f.write(torn_tail)
                torn += 1
                simulated = True
            events.append({"attempt": attempt, "killed": killed, "after_s": round(delay, 2),
                           "lines_before": before, "lines_after": len(lines), "partial_line_left": partial,
                           "torn_write_simulated": simulated})
            print(f"  run {attempt}: {'SIGKILL' if killed else 'finished'} after {delay:.2f} s: "
                  f"{before} -> {len(lines)} lines" + (", partial line left" if partial else "")
                  + (", torn write appended" if simulated else ""), flush=True)
        proc = start(run_argv)
        _, err = proc.communicate()
        truncated_msgs += err.count("partial last line")
        final_lines, final_partial = read_lines(results)
        final = [json.loads(x) for x in final_lines]

    images = [r["image"] for r in final]
    final_set = set(final_lines)
    lost = sum(1 for snap in snapshots for line in snap if line not in final_set)
    duplicated = len(images) - len(set(images))
    equal = strip(final) == strip(reference)
    rows = [[args.images + 1, kills, torn + real_partials, truncated_msgs, lost, duplicated, len(final), n,
             "yes" if equal and not final_partial else "NO"]]
    print_table(["images", "SIGKILLs", "partial lines (torn + real)", "partial lines truncated", "lines lost",
                 "lines duplicated", "final records", "reference records", "equal to the clean run"], rows,
                title="Folder run killed at random moments, resumed each time (EfficientNet-Lite0 dense, CPU)")
    write_json("resume", {
        "machine": m, "images": args.images + 1, "config": config, "seed": args.seed, "kills": kills,
        "torn_writes_simulated": torn, "partial_lines_from_kills": real_partials,
        "partial_lines_truncated": truncated_msgs, "lines_lost": lost, "lines_duplicated": duplicated,
        "final_records": len(final), "reference_records": n, "equal_to_reference": equal and not final_partial,
        "reference_seconds": round(total, 2), "events": events,
    })
    return 0 if equal and not lost and not duplicated else 1


if __name__ == "__main__":
    sys.exit(main())
