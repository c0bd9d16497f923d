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

A record is not trusted for being there. It carries a format version; each value must have the
shape its key's check (`SCHEMAS`) expects; and the record is signed (HMAC-SHA256) with a random
key kept in the cache folder (``memo.key``, mode 0600) over its format, the file's real path and
identity, and the values. A record that fails any of these (hand-edited labels, a forged
"dense check passed", one copied from another file's record, a FIFO or a link in its place) is
ignored, its value computed again, and the record rewritten.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: A file changed less than this many seconds ago is not recorded.
RACY_SECONDS = 2.0
#: Records are small (a model's metadata with 21,843 ImageNet-21k labels is ~0.4 MB); a bigger
#: file in their place is ignored unread.
MAX_RECORD_BYTES = 8 << 20
#: The record format: a record of any other format is ignored and rewritten.
FORMAT = 2


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


# --- what a record may hold ------------------------------------------------------------------

_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


def _is_digest(value) -> bool:
    return isinstance(value, str) and _DIGEST.fullmatch(value) is not None


def _is_ports(rows) -> bool:
    return isinstance(rows, list) and all(
        isinstance(r, list) and len(r) == 3 and isinstance(r[0], str) and isinstance(r[1], str)
        and isinstance(r[2], list) and all(d is None or isinstance(d, (int, str)) and not isinstance(d, bool)
                                           for d in r[2])
        for r in rows)


def _is_model_info(value) -> bool:
    """`slidewin.runtime.sessions.ModelInfo.to_json`'s shape: props str -> str, ports [name, type, shape]."""
    return (isinstance(value, dict) and set(value) == {"props", "inputs", "outputs"}
            and isinstance(value["props"], dict)
            and all(isinstance(k, str) and isinstance(v, str) for k, v in value["props"].items())
            and _is_ports(value["inputs"]) and _is_ports(value["outputs"]))


#: The keys slidewin records, and the check a recorded value must pass to be used: a value of
#: the wrong shape is ignored (and recomputed), never handed to the caller. A key not listed
#: here is refused (`recall` returns None) until it is given a check.
SCHEMAS: dict[str, Callable[[Any], bool]] = {
    "sha256": _is_digest,  # slidewin.io.hashing.file_sha256
    "model_info": _is_model_info,
    # slidewin.runtime.dense: the source digest a cached dense form's probe passed for
    "dense_probe_passed_for": lambda v: v is None or _is_digest(v),
}


def _is_identity(value) -> bool:
    return (isinstance(value, list) and len(value) == 5
            and all(isinstance(v, int) and not isinstance(v, bool) for v in value))


# --- records bound to their file by a key only this user's cache holds ----------------------

_KEY_NAME = "memo.key"
_KEY_BYTES = 32
_key_cache: dict[str, bytes] = {}


def _secret() -> bytes | None:
    """This cache folder's record key (created on first use, readable by its owner only), or None
    when the cache folder cannot hold one: then nothing is remembered."""
    from slidewin.errors import SlidewinError
    from slidewin.io.files import cache_dir, read_small_file

    path = cache_dir() / _KEY_NAME
    if str(path) in _key_cache:
        return _key_cache[str(path)]
    key = None
    try:
        data = read_small_file(path, 2 * _KEY_BYTES, "memo key", follow_links=False)
        if len(data) == 2 * _KEY_BYTES:
            key = bytes.fromhex(data.decode("ascii"))
    except (SlidewinError, ValueError, UnicodeDecodeError):
        key = None
    if key is None:
        key = _new_secret(path)
    if key is not None:
        _key_cache[str(path)] = key
    return key


def _new_secret(path: Path) -> bytes | None:
    from slidewin.io.files import REPLACE, atomic_write

    key = os.urandom(_KEY_BYTES)

    def write(tmp: Path) -> None:
        os.chmod(tmp, 0o600)
        tmp.write_text(key.hex())

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, write, REPLACE)
        os.chmod(path, 0o600)
    except OSError:
        return None
    return key


def _mac(key: bytes, body: dict) -> str:
    text = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hmac.new(key, text.encode("utf-8", "surrogateescape"), hashlib.sha256).hexdigest()


def _read(path: str | Path) -> dict:
    """The record of ``path``: ``{"identity": [...], "values": {...}}`` with only well-formed
    values, or {} for a record that is missing, not a regular file, too big, of another format,
    of another path, or not signed with this cache's key (forged, or copied from another file)."""
    from slidewin.errors import SlidewinError
    from slidewin.io.files import read_small_json

    record_path = _record_path(path)
    try:  # regular files only, read capped: a FIFO or a link to /dev/zero is ignored unread
        record = read_small_json(record_path, MAX_RECORD_BYTES, "memo record", follow_links=False)
    except SlidewinError:
        return {}
    key = _secret()
    if (key is None or not isinstance(record, dict) or set(record) != {"format", "path", "identity", "values", "mac"}
            or record["format"] != FORMAT or record["path"] != os.path.realpath(path)
            or not _is_identity(record["identity"]) or not isinstance(record["values"], dict)
            or not isinstance(record["mac"], str)):
        return {}
    body = {k: record[k] for k in ("format", "path", "identity", "values")}
    if not hmac.compare_digest(record["mac"], _mac(key, body)):
        return {}
    values = {k: v for k, v in record["values"].items() if k in SCHEMAS and SCHEMAS[k](v)}
    return {"identity": record["identity"], "values": values}


def recall(path: str | Path, key: str, ident: list[int] | None = None) -> Any:
    """The value recorded under ``key`` for ``path`` while it had its present identity (or
    ``ident``, taken by the caller), else None. Only a value that passes ``SCHEMAS[key]`` is
    returned."""
    ident = ident or identity(path)
    if ident is None:
        return None
    record = _read(path)
    if record.get("identity") != ident:
        return None
    return record["values"].get(key)


def remember(path: str | Path, key: str, value: Any, ident: list[int] | None) -> None:
    """Record ``value`` under ``key`` for ``path``, if the file still has identity ``ident`` (taken
    before the value was computed) and was last changed at least `RACY_SECONDS` ago. A record
    that was unusable (damaged, forged, of an older format) is replaced by a good one."""
    if ident is None or identity(path) != ident or time.time() - ident[4] / 1e9 < RACY_SECONDS:
        return
    if key not in SCHEMAS or not SCHEMAS[key](value):
        return
    from slidewin.errors import SlidewinError
    from slidewin.io.files import REPLACE, atomic_write_text

    secret = _secret()
    if secret is None:
        return
    record = _read(path)
    values = record.get("values", {}) if record.get("identity") == ident else {}
    values[key] = value
    body = {"format": FORMAT, "path": os.path.realpath(path), "identity": list(ident), "values": values}
    try:
        atomic_write_text(_record_path(path), json.dumps({**body, "mac": _mac(secret, body)}), REPLACE)
    except (OSError, SlidewinError, ValueError):
        pass

