"""One way to hash a file (slidewin.io.hashing): plain, or once per version of the file."""

import hashlib

import pytest

from slidewin.errors import is_internal, one_line
from slidewin.io import filememo, hashing
from slidewin.io.hashing import file_sha256, sha256_of


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_the_digest_is_the_sha256_of_the_bytes_named_as_such(tmp_path, cache):
    f = tmp_path / "w.bin"
    data = bytes(range(256)) * 5000  # more than one read chunk
    f.write_bytes(data)
    expected = "sha256:" + hashlib.sha256(data).hexdigest()
    assert sha256_of(f) == expected and file_sha256(f) == expected and file_sha256(str(f)) == expected


def test_a_file_too_new_to_record_is_still_hashed_once_in_this_process(tmp_path, cache, monkeypatch):
    monkeypatch.setattr(filememo, "RACY_SECONDS", 3600.0)  # nothing gets recorded
    calls = []
    monkeypatch.setattr(hashing, "sha256_of", lambda p: calls.append(p) or sha256_of(p))
    f = tmp_path / "fresh.onnx"
    f.write_bytes(b"x" * 100)
    assert file_sha256(f) == file_sha256(f) == sha256_of(f) and len(calls) == 1
    f.write_bytes(b"y" * 100)                              # a new version is hashed again
    assert file_sha256(f) == sha256_of(f) and len(calls) == 2


def test_what_is_not_a_file_is_refused_as_the_machine_would_say(tmp_path, cache):
    for path in (tmp_path / "missing.onnx", tmp_path):
        with pytest.raises(FileNotFoundError) as err:
            file_sha256(path)
        assert not is_internal(err.value) and one_line(err.value) == f"{path}: not a file"


def test_the_old_names_still_answer():
    from slidewin.runtime import model_meta

    assert model_meta.sha256_of is sha256_of
