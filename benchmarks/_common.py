"""Shared by the benchmark scripts: machine description, data sets, models, interleaved rounds,
and one `Result` that every script saves, prints and charts."""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
MODELS = ROOT / "models"
#: The data sets beside the repository, when a checkout has them (a clone does not).
SHARED_DATA = ROOT.parent / "shared" / "data"
COCO_DEV = SHARED_DATA / "coco-dev"
COCO_TRAIN = SHARED_DATA / "coco-train"
#: Data sets for every benchmark's --data, separated by os.pathsep (":" on Linux and macOS).
DATA_ENV = "SLIDEWIN_DATA"

sys.path.insert(0, str(ROOT))
def machine() -> dict:
    """What the numbers were measured on."""
    import onnxruntime as ort

    from slidewin.runtime.sessions import cuda_usable, physical_cores

    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = None
    if cuda_usable():
        try:
            import subprocess

            gpu = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=10).stdout.strip() or "CUDA GPU"
        except Exception:
            gpu = "CUDA GPU"
    return {
        "cpu": cpu,
        "logical_cores": os.cpu_count(),
        "physical_cores": physical_cores(),
        "gpu": gpu,
        "python": platform.python_version(),
        "onnxruntime": ort.__version__,
        "providers": ort.get_available_providers(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }


def machine_line(m: dict) -> str:
    gpu = f", GPU: {m['gpu']}" if m.get("gpu") else ", no GPU"
    return f"{m['cpu']} ({m['physical_cores']} cores){gpu}; onnxruntime {m['onnxruntime']}"


# --- data ----------------------------------------------------------------------------------------------


def default_data(fallback: tuple[Path, ...] = (COCO_DEV,)) -> list[Path]:
    """The data sets a benchmark reads when --data is not given: $SLIDEWIN_DATA, else the
    ``fallback`` folders beside the repository (coco-dev) when they are all there, else none."""
    env = os.environ.get(DATA_ENV, "")
    if env.strip():
        return [Path(p).expanduser() for p in env.split(os.pathsep) if p.strip()]
    return list(fallback) if all(p.is_dir() for p in fallback) else []


def add_data_option(ap: argparse.ArgumentParser, *, many: bool = False, required: bool = True,
                    help: str = "COCO-format data set (images/ + instances.json)",
                    fallback: tuple[Path, ...] = (COCO_DEV,)) -> None:
    """The one --data of every benchmark; `parse` fills in its default and checks it.

    Args:
        many: several data sets (``--data DIR [DIR ...]``); ``args.data`` is then a list.
        required: without data the script cannot run (otherwise ``args.data`` may be None or
            empty, and the script falls back to something else, such as synthetic images).
        fallback: the folders beside the repository used when neither --data nor $SLIDEWIN_DATA
            says (coco-dev; both coco-dev and coco-train for the scripts that compare them).
    """
    ap.add_argument("--data", type=Path, nargs="+" if many else None, default=None, metavar="DIR",
                    help=f"{help}; default: ${DATA_ENV} (paths separated by '{os.pathsep}'), else "
                         f"{' and '.join(p.name for p in fallback)} in the shared data folder beside the repository")
    ap.set_defaults(_data_option=(many, required, tuple(fallback)))


def parse(ap: argparse.ArgumentParser, argv=None) -> argparse.Namespace:
    """``ap.parse_args(argv)``, with --data (when the parser has it) defaulted and checked: a
    missing data set ends the script with one line naming it."""
    args = ap.parse_args(argv)
    if not hasattr(args, "_data_option"):
        return args
    many, required, fallback = args._data_option
    del args._data_option
    given = args.data if many else ([args.data] if args.data is not None else None)
    paths = list(given) if given is not None else default_data(fallback)
    if not paths and required:
        sys.exit(f"{ap.prog}: no data set: pass --data DIR or set {DATA_ENV} "
                 f"(paths separated by '{os.pathsep}')")
    for p in paths:
        if not p.is_dir():
            sys.exit(f"{ap.prog}: {p}: no such folder (pass --data DIR or set {DATA_ENV})")
    paths = [p.absolute() for p in paths]  # child processes may run in another directory
    args.data = paths if many else (paths[0] if paths else None)
    return args


def photos(data: Path | None, n: int | None = None) -> list[Path]:
    """The first n JPEG photos of a data set (its images/ folder, or the folder itself), by name."""
    if data is None:
        return []
    folder = data / "images" if (data / "images").is_dir() else data
    return sorted(folder.glob("*.jpg"))[:n]


# --- models ----------------------------------------------------------------------------------------------


def ensure_model(name: str) -> Path:
    """An exported model under models/, exported on first use (needs the `export` extra)."""
    MODELS.mkdir(exist_ok=True)
    path = MODELS / f"{name}.onnx"
    if path.exists():
        return path
    print(f"exporting {name} to {path} (first run only) ...", flush=True)
    if name == "efficientnet-lite0":
        from slidewin_export.efficientnet_lite0 import export_efficientnet_lite0

        export_efficientnet_lite0(path)
    elif name == "resnet50-random":
        from slidewin_export.keras_resnet50 import export_keras_resnet50

        export_keras_resnet50("none", path)
    elif name == "frcnn-random":
        from slidewin_export.frcnn import export_frcnn

        export_frcnn("none", path)
    else:
        raise ValueError(f"unknown model {name}")
    return path


# --- timing ------------------------------------------------------------------------------------------------


def interleave(cases, rounds: int):
    """Yield ``(round, case)``: every case once per round, forwards in even rounds and backwards
    in odd ones (A B C, C B A, A B C, ...).

    On a shared machine the load drifts while a benchmark runs. Timed in a fixed order, the case
    that always runs first (or always right after a heavy one) would carry that drift alone;
    mirrored rounds give every case the same mean position, so a linear drift cancels out over
    each pair of rounds, and each neighbour runs before and after it alike.
    """
    cases = list(cases)
    for r in range(rounds):
        for case in cases if r % 2 == 0 else reversed(cases):
            yield r, case


def run_child(script: str | Path, spec: dict, timeout: float = 3600) -> dict:
    """Run ``script --child JSON(spec)`` in a fresh process (its peak RSS is its own) and return
    the JSON object it prints last."""
    import subprocess

    out = subprocess.run([sys.executable, str(script), "--child", json.dumps(spec)], capture_output=True, text=True,
                         timeout=timeout, cwd=ROOT)
    if out.returncode != 0:
        raise RuntimeError(f"child failed ({out.returncode}): {out.stderr.strip()[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def timed(fn, min_seconds: float = 3.0, min_runs: int = 3, warmup: int = 1) -> list[float]:
    """Run fn repeatedly (after warm-up) until both limits are reached; return per-run seconds."""
    for _ in range(warmup):
        fn()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < min_runs or time.perf_counter() - start < min_seconds:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def median(xs: list[float]) -> float:
    return statistics.median(xs)


# --- results ---------------------------------------------------------------------------------------------


@dataclass
class Result:
    """One benchmark run: where it ran, how it was called, and what it measured.

    ``save()`` writes ``<folder>/<name>.json`` as ``{"machine", "args", "rows", **extra}``;
    ``table()`` prints a markdown table; ``chart(draw)`` writes ``<folder>/<name>.png``.

    Args:
        machine: `machine()`'s dict.
        args: the command line (an argparse Namespace or a dict); stored as JSON.
        rows: what was measured, one entry per case (dicts, or a dict of them by case name).
        name: the file name under ``folder``, without extension.
        extra: more top-level keys for the JSON (data set, model, targets, ...).
        folder: where the files go (None: benchmarks/results).
    """

    machine: dict
    args: dict
    rows: list | dict
    name: str = "result"
    extra: dict = field(default_factory=dict)
    folder: Path | None = None

    def __post_init__(self):
        if isinstance(self.args, argparse.Namespace):
            self.args = {k: v for k, v in vars(self.args).items() if not k.startswith("_")}

    @property
    def machine_line(self) -> str:
        return machine_line(self.machine)

    def to_json(self) -> dict:
        return {"machine": self.machine, "args": self.args, **self.extra, "rows": self.rows}

    def save(self) -> Path:
        return write_json(self.name, self.to_json(), folder=self.folder)

    @classmethod
    def load(cls, path: Path) -> Result:
        """Read back a saved result (for redrawing its chart without measuring again)."""
        d = json.loads(Path(path).read_text())
        extra = {k: v for k, v in d.items() if k not in ("machine", "args", "rows")}
        return cls(d["machine"], d.get("args", {}), d["rows"], name=Path(path).stem, extra=extra,
                   folder=Path(path).parent)

    def table(self, headers: list[str], cells: list[list] | None = None, title: str | None = None) -> str:
        """Print (and return) a markdown table: ``cells`` as given, or each row's values under
        ``headers`` when the rows are dicts keyed by the headers."""
        if cells is None:
            rows = self.rows.values() if isinstance(self.rows, dict) else self.rows
            cells = [[r.get(h, "-") for h in headers] for r in rows]
        return print_table(headers, cells, title=title)

    def chart(self, draw, figsize=(8, 4.5), ncols: int = 1) -> Path | None:
        """Call ``draw(ax)`` (``draw(axes)`` with ``ncols`` > 1 panels side by side) on a fresh
        figure and save it as ``<folder>/<name>.png``."""
        return write_chart(self.name, draw, folder=self.folder, figsize=figsize, ncols=ncols)


def print_table(headers: list[str], rows: list[list], title: str | None = None) -> str:
    """Print (and return) a GitHub-markdown table."""
    from slidewin.apps.tables import markdown_table

    text = (f"\n{title}\n\n" if title else "") + markdown_table(headers, rows)
    print(text, flush=True)
    return text


def write_json(name: str, payload: dict, folder: Path | None = None) -> Path:
    """Write payload as <folder>/<name>.json (default folder: benchmarks/results)."""
    folder = folder or RESULTS
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    print(f"wrote {shown(path)}")
    return path


def shown(path: Path) -> Path:
    """The path relative to the repository when it lies inside it (for messages)."""
    path = Path(path)
    return path.relative_to(ROOT) if path.is_relative_to(ROOT) else path


def write_chart(name: str, draw, folder: Path | None = None, figsize=(8, 4.5), ncols: int = 1) -> Path | None:
    """Call draw(ax) (draw(axes), a list, when ncols > 1) on a fresh matplotlib figure and save it
    as <folder>/<name>.png (default folder: benchmarks/results)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no chart (pip install 'slidewin[eval]')")
        return None
    fig, axes = plt.subplots(1, ncols, figsize=figsize, dpi=110, squeeze=False)
    draw(list(axes[0]) if ncols > 1 else axes[0][0])
    fig.tight_layout()
    folder = folder or RESULTS
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    fig.savefig(path)
    plt.close(fig)
    print(f"wrote {shown(path)}")
    return path
