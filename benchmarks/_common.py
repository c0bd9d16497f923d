"""Shared by the benchmark scripts: machine description, models, tables, JSON and charts."""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
MODELS = ROOT / "models"
COCO_DEV = ROOT.parent / "shared" / "data" / "coco-dev"

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
    print(f"wrote {_shown(path)}")
    return path


def _shown(path: Path) -> Path:
    return path.relative_to(ROOT) if path.is_relative_to(ROOT) else path


def write_chart(name: str, draw, folder: Path | None = None, figsize=(8, 4.5)) -> Path | None:
    """Call draw(ax) on a fresh matplotlib figure and save it as <folder>/<name>.png
    (default folder: benchmarks/results)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no chart (pip install 'slidewin[eval]')")
        return None
    fig, ax = plt.subplots(figsize=figsize, dpi=110)
    draw(ax)
    fig.tight_layout()
    folder = folder or RESULTS
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    fig.savefig(path)
    plt.close(fig)
    print(f"wrote {_shown(path)}")
    return path
