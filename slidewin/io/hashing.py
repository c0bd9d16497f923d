"""File hashing: the one place slidewin computes a file's SHA-256.

`sha256_of` hashes a file every time it is called (exporters record a user's weights file with
it). `file_sha256` gives the same value, hashed once per version of the file: the digest is
remembered in the cache folder (`slidewin.io.filememo`), and in this process, so a one-photo
command does not pay 0.2 s for ResNet50's digest on every call.
"""

from __future__ import annotations

import errno
import hashlib
from functools import lru_cache
from pathlib import Path

#: Bytes read at a time: a model file of any size costs this much memory.
_CHUNK = 1 << 20
#: The `slidewin.io.filememo` key a file's digest is remembered under.
MEMO_KEY = "sha256"


def sha256_of(path: str | Path) -> str:
    """``sha256:<hex>`` of a file's bytes (the weights origin recorded for a user's own weights).

    Raises:
        OSError: the file cannot be read.
    """
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def file_sha256(path: str | Path) -> str:
    """`sha256_of` ``path``, hashed once per version of the file (see `slidewin.io.filememo`).

    Raises:
        FileNotFoundError: ``path`` is not a regular file.
        OSError: the file cannot be read.
    """
    from slidewin.io import filememo

    ident = filememo.identity(path)
    if ident is None:
        raise FileNotFoundError(errno.ENOENT, "not a file", str(path))
    digest = filememo.recall(path, MEMO_KEY, ident)
    if isinstance(digest, str):
        return digest
    # Not recorded (a file changed moments ago is never recorded, nor is anything when the cache
    # folder is read-only): this process still hashes each version of the file once.
    digest = _hash_version(str(path), tuple(ident))
    filememo.remember(path, MEMO_KEY, digest, ident)
    return digest


@lru_cache(maxsize=32)
def _hash_version(path: str, ident: tuple[int, ...]) -> str:
    """`sha256_of` one version of a file (``ident``: its `slidewin.io.filememo.identity`)."""
    return sha256_of(path)
