"""ONNX Runtime sessions: one construction site, and every session made with the same settings."""

import re
from dataclasses import replace
from pathlib import Path

import pytest

from slidewin.runtime.sessions import Device, SessionSettings, open_session, session_options

ROOT = Path(__file__).resolve().parents[2]


def test_one_place_makes_sessions():
    """Runtime, exporters and benchmarks all open models through `open_session`."""
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
