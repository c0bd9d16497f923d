"""The package as a user installs it: sdist -> wheel -> a fresh virtual environment, not editable.

CI installs the project in editable mode, which hides a wheel that lacks a subpackage or a data
file. This builds the sdist, builds the wheel from that sdist (so the sdist must carry what the
wheel needs), installs the wheel with ``--no-deps`` into a new virtual environment that sees the
already-installed dependencies (no network), and runs the ``slidewin`` command from a folder
outside the source tree.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import pytest

import slidewin

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _run(cmd: list, cwd: Path, **kw) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    return subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True, timeout=600,
                          env={**env, **kw.pop("env", {})}, **kw)


@pytest.fixture(scope="module")
def dists(tmp_path_factory) -> dict[str, Path]:
    """The sdist and the wheel built from it (``python -m build``, this environment's setuptools)."""
    pytest.importorskip("build")
    out = tmp_path_factory.mktemp("dist")
    src = tmp_path_factory.mktemp("src")
    # Build from a copy of the tracked files (``git archive``) when this is a checkout: an in-tree
    # build would write build/ and *.egg-info into the working tree under the running tests.
    tree = ROOT
    if (ROOT / ".git").exists():
        archive = src / "tree.tar"
        done = _run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], ROOT)
        assert done.returncode == 0, done.stderr
        with tarfile.open(archive, "w") as tar:
            for rel in filter(None, done.stdout.split("\0")):
                if (ROOT / rel).is_file():
                    tar.add(ROOT / rel, arcname=rel)
        with tarfile.open(archive) as tar:
            tar.extractall(src / "tree", filter="data")
        tree = src / "tree"
    done = _run([sys.executable, "-m", "build", "--no-isolation", "--outdir", out, tree], src)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (wheel,) = out.glob("slidewin-*.whl")
    (sdist,) = out.glob("slidewin-*.tar.gz")
    return {"wheel": wheel, "sdist": sdist}


def test_the_wheel_holds_every_subpackage_and_the_data_files(dists):
    names = set(zipfile.ZipFile(dists["wheel"]).namelist())
    packages = sorted(str(p.parent.relative_to(ROOT)) for p in (ROOT / "slidewin").rglob("__init__.py"))
    assert packages, "no packages found in the tree"
    for pkg in packages:
        assert f"{pkg}/__init__.py" in names, f"{pkg} is missing from the wheel"
    for data in (ROOT / "slidewin" / "data").iterdir():
        assert f"slidewin/data/{data.name}" in names, f"{data.name} is missing from the wheel"
    exporters = {p.name for p in (ROOT / "export").glob("*.py")}
    assert {n.split("/", 1)[1] for n in names if n.startswith("slidewin_export/")} >= exporters
    assert not any(n.startswith(("tests/", "benchmarks/")) for n in names)


def test_the_sdist_holds_the_tests_and_their_photos(dists):
    names = {n.split("/", 1)[1] for n in tarfile.open(dists["sdist"]).getnames() if "/" in n}
    assert "tests/data/coco-mini/instances.json" in names
    assert "slidewin/data/demo_scene.jpg" in names
    assert {"pyproject.toml", "setup.py", "README.md"} <= names


@pytest.fixture(scope="module")
def fresh_venv(dists, tmp_path_factory) -> Path:
    """A new venv with the wheel installed (not editable); the dependencies come from this one."""
    venv = tmp_path_factory.mktemp("venv")
    done = _run([sys.executable, "-m", "venv", venv], venv)
    assert done.returncode == 0, done.stderr
    python = venv / "bin" / "python"
    # The dependencies: this environment's site-packages, appended after the venv's own (a .pth
    # line adds a path without running the .pth files in it, so the editable slidewin stays out).
    site = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], venv).stdout.strip())
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    done = _run([python, "-m", "pip", "install", "--no-deps", "--no-index", "--quiet", dists["wheel"]], venv)
    assert done.returncode == 0, done.stderr
    return venv


def test_the_installed_wheel_runs_from_outside_the_tree(fresh_venv, effnet_onnx, tmp_path):
    bin_ = fresh_venv / "bin"
    where = _run([bin_ / "python", "-c", "import slidewin, slidewin.cli, slidewin_export; print(slidewin.__file__)"], tmp_path)
    assert where.returncode == 0, where.stderr
    assert Path(where.stdout.strip()).is_relative_to(fresh_venv), f"not the installed copy: {where.stdout}"

    version = _run([bin_ / "slidewin", "--version"], tmp_path)
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip() == f"slidewin {slidewin.__version__}"
    module = _run([bin_ / "python", "-m", "slidewin", "--version"], tmp_path)
    assert module.returncode == 0 and module.stdout == version.stdout, module.stderr

    photo = Path(where.stdout.strip()).parent / "data" / "demo_scene.jpg"
    assert photo.is_file(), "the packaged photo is missing"
    classify = _run([bin_ / "slidewin", "classify", photo, "--model", effnet_onnx], tmp_path)
    assert classify.returncode == 0, classify.stderr
    assert len(classify.stdout.strip().splitlines()) >= 5

    out = tmp_path / "drawn.jpg"
    detect = _run([bin_ / "slidewin", "detect", photo, "--model", effnet_onnx, "--mode", "dense",
                   "--out-image", out, "--json", tmp_path / "dets.json"], tmp_path)
    assert detect.returncode == 0, detect.stderr
    assert out.stat().st_size > 0 and (tmp_path / "dets.json").stat().st_size > 0


@pytest.mark.parametrize("hidden, argv, extra", [
    (("faster_coco_eval",), ["evaluate", "--data", str(ROOT / "tests" / "data" / "coco-mini"), "--model", "m.onnx"],
     "eval"),
    (("ray",), ["detect", str(ROOT / "tests" / "data" / "coco-mini" / "images"), "--model", "m.onnx",
                "--engine", "ray", "--out-dir", "out"], "ray"),
    (("torch", "tensorflow"), ["export", "efficientnet-lite0", "--out", "m.onnx"], "export"),
])
def test_a_missing_extra_names_the_install_command_in_the_wheel_install(fresh_venv, tmp_path, hidden, argv, extra):
    """A missing extra, hidden from the import system: one line naming its pip install, nothing written."""
    code = (f"import sys; sys.modules.update(dict.fromkeys({list(hidden)!r})); from slidewin.cli import main; "
            f"sys.exit(main({argv!r}))")
    done = _run([fresh_venv / "bin" / "python", "-c", code], tmp_path)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 6, done.stderr
    assert len(lines) == 1 and f"pip install 'slidewin[{extra}]'" in lines[0], lines
    assert not list(tmp_path.iterdir()), "a command that cannot run wrote something"
