"""What is remembered about a file is used only while the file stays the same, and never fails a
command (slidewin.io.filememo)."""

import os
import time

import pytest

from slidewin.io import filememo
from slidewin.io.filememo import file_sha256, identity, recall, remember
from slidewin.runtime.model_meta import sha256_of


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(filememo, "RACY_SECONDS", 0.0)
    return tmp_path / "cache" / "slidewin" / "files"


def _hash_counter(monkeypatch) -> list:
    calls = []
    import slidewin.runtime.model_meta as model_meta

    def counted(path):
        calls.append(path)
        return sha256_of(path)

    monkeypatch.setattr(model_meta, "sha256_of", counted)
    return calls


def test_a_hash_is_computed_once_per_version_of_the_file(tmp_path, cache, monkeypatch):
    f = tmp_path / "model.onnx"
    f.write_bytes(b"a" * 1000)
    calls = _hash_counter(monkeypatch)
    assert file_sha256(f) == sha256_of(f) and len(calls) == 1
    assert file_sha256(f) == sha256_of(f) and len(calls) == 1   # remembered, not hashed again
    assert list(cache.glob("*.json"))


def test_a_rewrite_is_seen_even_with_the_same_size_and_modification_time(tmp_path, cache, monkeypatch):
    f = tmp_path / "model.onnx"
    f.write_bytes(b"a" * 1000)
    first = file_sha256(f)
    st = f.stat()
    time.sleep(0.02)
    f.write_bytes(b"b" * 1000)                                  # same size ...
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))            # ... modification time set back
    assert identity(f)[3] == st.st_mtime_ns
    assert file_sha256(f) == sha256_of(f) != first              # the change time gives it away


def test_a_replaced_file_is_another_file(tmp_path, cache):
    f, g = tmp_path / "model.onnx", tmp_path / "other.onnx"
    f.write_bytes(b"a" * 10)
    g.write_bytes(b"b" * 10)
    file_sha256(f)
    g.replace(f)
    assert file_sha256(f) == sha256_of(f)


def test_a_file_changed_moments_ago_is_not_remembered(tmp_path, cache, monkeypatch):
    monkeypatch.setattr(filememo, "RACY_SECONDS", 60.0)
    f = tmp_path / "model.onnx"
    f.write_bytes(b"a")
    remember(f, "k", 1, identity(f))
    assert recall(f, "k") is None


def test_a_value_computed_while_the_file_changed_is_not_remembered(tmp_path, cache):
    f = tmp_path / "model.onnx"
    f.write_bytes(b"a")
    before = identity(f)
    time.sleep(0.02)
    f.write_bytes(b"ab")
    remember(f, "k", 1, before)
    assert recall(f, "k") is None and recall(f, "k", before) is None


def test_values_are_kept_per_key_and_dropped_with_the_version(tmp_path, cache):
    f = tmp_path / "model.onnx"
    f.write_bytes(b"a")
    remember(f, "one", 1, identity(f))
    remember(f, "two", [2], identity(f))
    assert (recall(f, "one"), recall(f, "two")) == (1, [2])
    time.sleep(0.02)
    f.write_bytes(b"b")
    remember(f, "three", 3, identity(f))
    assert (recall(f, "one"), recall(f, "three")) == (None, 3)


def test_an_unusable_cache_folder_only_costs_time(tmp_path, monkeypatch):
    (tmp_path / "cache-is-a-file").write_text("x")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache-is-a-file"))
    monkeypatch.setattr(filememo, "RACY_SECONDS", 0.0)
    f = tmp_path / "model.onnx"
    f.write_bytes(b"a")
    assert file_sha256(f) == sha256_of(f) == file_sha256(f)
    assert recall(f, "sha256") is None


def test_a_damaged_record_is_ignored(tmp_path, cache):
    f = tmp_path / "model.onnx"
    f.write_bytes(b"a")
    file_sha256(f)
    for record in cache.glob("*.json"):
        record.write_text("{not json")
    assert recall(f, "sha256") is None and file_sha256(f) == sha256_of(f)


def test_not_a_file_has_no_identity(tmp_path):
    assert identity(tmp_path) is None and identity(tmp_path / "missing") is None


def test_an_oversized_record_is_ignored_unread(tmp_path, cache, monkeypatch):
    f = tmp_path / "model.onnx"
    f.write_bytes(b"a")
    file_sha256(f)
    monkeypatch.setattr(filememo, "MAX_RECORD_BYTES", 10)
    assert recall(f, "sha256") is None and file_sha256(f) == sha256_of(f)
