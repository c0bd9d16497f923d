"""What slidewin has learnt about a file, remembered for as long as the file stays the same.

A one-photo command would otherwise pay, on every call, for work whose answer depends only on a
model file: its SHA-256 (35 ms for EfficientNet-Lite0, 0.2 s for ResNet50), the metadata and
inputs a session reads from it (opening a session: ~0.08 s), and the probe that checks a cached
dense form (a second session and two inferences). This module records such answers per file.

A record holds the file's *identity*: device, inode, size, and modification and change times in
nanoseconds. Any write to the file, and any rename onto its path, changes the change time, which
no user can set back, so a recorded value is never used for other content. Two guards cover file
systems with coarse timestamps (git's "racy" case): a file changed less than `RACY_SECONDS` before
it is recorded is not recorded, and the identity is taken before and after the value is
computed by the caller (`remember` is given the first one).

Records live in the cache folder, one small JSON file per path (``files/<digest of the path>.json``,
written atomically), so they are the user's own, like the dense forms cached there. Reading or
writing them never fails a command: a record that cannot be read or written only costs time.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

#: A file changed less than this many seconds ago is not recorded.
RACY_SECONDS = 2.0
#: Records are small (a model's metadata with 21,843 ImageNet-21k labels is ~0.4 MB); a bigger
#: file in their place is ignored unread.
MAX_RECORD_BYTES = 8 << 20


def identity(path: str | Path) -> list[int] | None:
    """(device, inode, size, mtime ns, ctime ns) of the file ``path`` names (None: not a file)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    if not os.path.isfile(path):
        return None
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def _record_path(path: str | Path) -> Path:
    from slidewin.io.files import cache_dir

    key = hashlib.sha256(os.path.realpath(path).encode("utf-8", "surrogateescape")).hexdigest()[:32]
    return cache_dir() / "files" / f"{key}.json"


def _read(path: str | Path) -> dict:
    record_path = _record_path(path)
    from slidewin.errors import SlidewinError
    from slidewin.io.files import read_small_json

    try:  # regular files only, read capped: a FIFO or a link to /dev/zero is ignored unread
        record = read_small_json(record_path, MAX_RECORD_BYTES, "memo record", follow_links=False)
    except SlidewinError:
        return {}
    if not isinstance(record, dict) or record.get("path") != os.path.realpath(path):
        return {}
    return record


def recall(path: str | Path, key: str, ident: list[int] | None = None) -> Any:
    """The value recorded under ``key`` for ``path`` while it had its present identity (or
    ``ident``, taken by the caller), else None."""
    ident = ident or identity(path)
    if ident is None:
        return None
    record = _read(path)
    if record.get("identity") != ident:
        return None
    return record.get("values", {}).get(key)


def remember(path: str | Path, key: str, value: Any, ident: list[int] | None) -> None:
    """Record ``value`` under ``key`` for ``path``, if the file still has identity ``ident`` (taken
    before the value was computed) and was last changed at least `RACY_SECONDS` ago."""
    if ident is None or identity(path) != ident or time.time() - ident[4] / 1e9 < RACY_SECONDS:
        return
    from slidewin.io.files import REPLACE, atomic_write_text

    record = _read(path)
    values = record.get("values", {}) if record.get("identity") == ident else {}
    values[key] = value
    try:
        atomic_write_text(_record_path(path), json.dumps(
            {"path": os.path.realpath(path), "identity": ident, "values": values}), REPLACE)
    except OSError:
        pass


def file_sha256(path: str | Path) -> str:
    """``sha256:<hex>`` of a file, hashed once per version of the file (see the module notes)."""
    from slidewin.runtime.model_meta import sha256_of

    ident = identity(path)
    digest = recall(path, "sha256", ident)
    if isinstance(digest, str):
        return digest
    digest = sha256_of(path)
    remember(path, "sha256", digest, ident)
    return digest
