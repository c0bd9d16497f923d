"""What is remembered about a file is used only while the file stays the same, and never fails a
command (slidewin.io.filememo)."""

import os
import time

import pytest

from slidewin.io import filememo
from slidewin.io import hashing
from slidewin.io.filememo import identity, recall, remember
from slidewin.io.hashing import file_sha256, sha256_of


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(filememo, "RACY_SECONDS", 0.0)
    for key in ("k", "one", "two", "three"):  # keys of these tests, any JSON value
        monkeypatch.setitem(filememo.SCHEMAS, key, lambda v: True)
    return tmp_path / "cache" / "slidewin" / "files"


def _hash_counter(monkeypatch) -> list:
    calls = []
    def counted(path):
        calls.append(path)
        return sha256_of(path)

    monkeypatch.setattr(hashing, "sha256_of", counted)
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


# --- records are not trusted for being there (issue 22) --------------------------------------

def _record(cache) -> "Path":
    (record,) = cache.glob("*.json")
    return record


def _edit(record, change) -> None:
    import json

    data = json.loads(record.read_text())
    change(data)
    record.write_text(json.dumps(data))


@pytest.mark.parametrize("change", [
    lambda d: d.update(values=[]),                                   # wrong types: valid JSON
    lambda d: d.update(identity="x"),
    lambda d: d.update(path=3),
    lambda d: d.pop("mac"),
    lambda d: d.update(format=1),                                    # an older format
    lambda d: d["values"].update(sha256="sha256:" + "0" * 64),       # a forged value, well formed
    lambda d: d["values"].update(sha256=[1, 2]),                     # a value of the wrong shape
], ids=["values-list", "identity-str", "path-int", "no-mac", "old-format", "forged", "bad-shape"])
def test_a_malformed_or_forged_record_is_ignored_and_rewritten(tmp_path, cache, change):
    f = tmp_path / "model.onnx"
    f.write_bytes(b"a")
    file_sha256(f)
    _edit(_record(cache), change)
    assert recall(f, "sha256") is None
    assert file_sha256(f) == sha256_of(f)
    assert recall(f, "sha256") == sha256_of(f)                       # rewritten, good again


def test_a_record_copied_from_another_file_vouches_for_nothing(tmp_path, cache):
    """A "passed" record of one file, given another file's path and identity, is not signed."""
    import json
    import shutil

    a, b = tmp_path / "a.onnx", tmp_path / "b.onnx"
    a.write_bytes(b"a")
    b.write_bytes(b"b")
    remember(a, "dense_probe_passed_for", "sha256:" + "1" * 64, identity(a))
    record_a = _record(cache)
    record_b = filememo._record_path(b)
    shutil.copy(record_a, record_b)
    assert recall(b, "dense_probe_passed_for") is None               # another path
    _edit(record_b, lambda d: d.update(path=os.path.realpath(b), identity=identity(b)))
    assert recall(b, "dense_probe_passed_for") is None               # its signature no longer fits
    assert recall(a, "dense_probe_passed_for") == "sha256:" + "1" * 64
    assert json.loads(record_a.read_text())["format"] == filememo.FORMAT


def test_forged_model_info_is_not_used(tmp_path, cache):
    f = tmp_path / "model.onnx"
    f.write_bytes(b"a")
    info = {"props": {"slidewin.labels": '["cat"]'}, "inputs": [["image", "tensor(uint8)", [None, 32, 32, 3]]],
            "outputs": [["probabilities", "tensor(float)", ["N", 4]]]}
    remember(f, "model_info", info, identity(f))
    assert recall(f, "model_info") == info
    _edit(_record(cache), lambda d: d["values"]["model_info"]["props"].update({"slidewin.labels": '["dog"]'}))
    assert recall(f, "model_info") is None
    remember(f, "model_info", {"props": {"a": 1}, "inputs": [], "outputs": []}, identity(f))  # wrong shape
    assert recall(f, "model_info") is None


def test_an_unknown_key_is_neither_kept_nor_returned(tmp_path, cache):
    f = tmp_path / "model.onnx"
    f.write_bytes(b"a")
    remember(f, "not-a-key", 1, identity(f))
    assert recall(f, "not-a-key") is None


def test_the_record_key_is_private_and_a_bad_one_is_replaced(tmp_path, cache):
    f = tmp_path / "model.onnx"
    f.write_bytes(b"a")
    file_sha256(f)
    key = cache.parent / "memo.key"
    assert key.stat().st_mode & 0o777 == 0o600
    filememo._key_cache.clear()
    key.write_text("short")
    assert recall(f, "sha256") is None                               # a new key: old records unsigned
    assert file_sha256(f) == sha256_of(f) and recall(f, "sha256") == sha256_of(f)
