"""ONNX Runtime sessions: one construction site, and every session made with the same settings."""

import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from slidewin.runtime.sessions import Device, SessionSettings, cuda_usable, open_session, session_options

ROOT = Path(__file__).resolve().parents[2]


def test_one_place_makes_sessions():
    """Runtime, exporters and benchmarks all open models through `open_session` (or its in-memory
    twins): one InferenceSession call and one SessionOptions call in the whole tree."""
    sites = []
    for folder in ("slidewin", "export", "benchmarks"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for n, line in enumerate(path.read_text().splitlines(), 1):
                if re.search(r"\bInferenceSession\s*\(", line) or re.search(r"\bSessionOptions\s*\(", line):
                    sites.append(f"{path.relative_to(ROOT)}:{n}")
    assert len(sites) == 2 and all(s.startswith("slidewin/runtime/sessions.py:") for s in sites), sites


def test_session_options_follow_the_settings():
    opts = session_options(SessionSettings(device=Device.CPU, threads=1, memory_pattern=False))
    assert opts.intra_op_num_threads == 1 and opts.inter_op_num_threads == 1 and not opts.enable_mem_pattern
    assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    with pytest.raises(ValueError, match="threads"):
        SessionSettings(threads=0)
    with pytest.raises(ValueError):
        SessionSettings(device="gpu0")


def test_dense_session_takes_the_classifiers_settings(tiny_conv):
    from slidewin.runtime.classifier import Classifier
    from slidewin.runtime.dense import DenseClassifier

    clf = Classifier(tiny_conv.path, device=Device.CPU, threads=1)
    dense = DenseClassifier(clf)
    assert clf.settings == SessionSettings(device=Device.CPU, threads=1)
    assert dense.settings == replace(clf.settings, memory_pattern=False)
    assert dense.session.get_providers() == clf.providers


@pytest.mark.parametrize("make, needle", [
    (lambda p: None, "no such model file"),
    (lambda p: p.mkdir(), "is a directory"),
    (lambda p: p.write_bytes(b""), "empty model file"),
    (lambda p: p.write_bytes(b"\x08\x01garbage"), "cannot load model"),
])
def test_bad_model_files_are_one_model_error(tmp_path, make, needle):
    from slidewin.errors import ModelError

    p = tmp_path / "m.onnx"
    make(p)
    with pytest.raises(ModelError, match=needle):
        open_session(p, SessionSettings(device=Device.CPU))


def test_a_known_model_is_described_without_a_session(tiny_conv, tmp_path, monkeypatch):
    from slidewin.io import filememo
    from slidewin.runtime.classifier import Classifier
    from slidewin.runtime.sessions import ModelInfo, model_info

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(filememo, "RACY_SECONDS", 0.0)
    info, session = model_info(tiny_conv.path, SessionSettings(device=Device.CPU))
    assert session is not None and info == ModelInfo.of(session)
    again, none = model_info(tiny_conv.path, SessionSettings(device=Device.CPU))
    assert none is None and again == info                       # remembered: no session opened
    clf = Classifier(tiny_conv.path, device=Device.CPU)
    assert clf._session is None and clf.meta == tiny_conv.meta and clf.input_dtype == tiny_conv.input_dtype
    x = np.zeros((2, 64, 64, 3), np.uint8)
    np.testing.assert_array_equal(clf.predict(x), tiny_conv.predict(x))
    if not cuda_usable():
        from slidewin.errors import ModelError

        with pytest.raises(ModelError, match="no usable CUDA"):   # refused when made, not at first use
            Classifier(tiny_conv.path, device="cuda")


def test_physical_cores_follow_the_topology_and_the_affinity():
    import os
    import subprocess
    import sys

    import psutil

    from slidewin.runtime.sessions import physical_cores

    if not Path("/sys/devices/system/cpu/cpu0/topology/core_id").exists():
        pytest.skip("no CPU topology in sysfs here: physical_cores falls back to psutil")
    if len(os.sched_getaffinity(0)) == (os.cpu_count() or 0):
        assert physical_cores() == psutil.cpu_count(logical=False)
    one = subprocess.run([sys.executable, "-c", "import os; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); "
                          "from slidewin.runtime.sessions import physical_cores; print(physical_cores())"],
                         capture_output=True, text=True, check=True)
    assert one.stdout.strip() == "1"
