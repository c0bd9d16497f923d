"""Which files a folder run reads, in which order, and what identifies each across runs."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

from slidewin.io.images import IMAGE_SUFFIXES

_MAGIC = re.compile(r"[*?[]")


def is_folder_input(spec: str | Path) -> bool:
    """True for a directory or a glob pattern (``*``, ``?``, ``[``) that is not itself a file."""
    p = Path(spec)
    return p.is_dir() or (not p.exists() and bool(_MAGIC.search(str(spec))))


def _is_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_SUFFIXES) and not name.startswith(".")


def _glob_root(pattern: str) -> Path:
    parts = []
    for part in Path(pattern).parts:
        if _MAGIC.search(part):
            break
        parts.append(part)
    return Path(*parts) if parts else Path(".")


def collect_inputs(specs: Iterable[str | Path], exclude: Path | None = None) -> tuple[Path, list[Path]]:
    """The image files named by directories (walked recursively), globs and plain file paths.

    Directories and globs keep files whose suffix is in `IMAGE_SUFFIXES` (any case), skipping
    hidden names and anything under ``exclude`` (the output folder); a plain file path is kept
    whatever its name. The order is stable: sorted by path components.

    Returns:
        (root, files): the folder that relative output paths (drawn images) start from, and the
        files, each once.
    """
    excluded = os.path.abspath(exclude) if exclude is not None else None

    def keep(path: str) -> bool:
        return excluded is None or os.path.commonpath([os.path.abspath(path), excluded]) != excluded

    roots, files = [], []
    for spec in specs:
        text = str(spec)
        p = Path(text)
        if p.is_dir():
            roots.append(p)
            for dirpath, dirnames, names in os.walk(p):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and keep(os.path.join(dirpath, d)))
                files += [Path(dirpath) / n for n in names if _is_image_name(n)]
        elif not p.exists() and _MAGIC.search(text):
            import glob

            roots.append(_glob_root(text))
            files += [Path(m) for m in glob.glob(text, recursive=True)
                      if os.path.isfile(m) and _is_image_name(os.path.basename(m)) and keep(m)]
        else:
            roots.append(p.parent)
            files.append(p)
    try:
        root = Path(os.path.commonpath([os.path.abspath(r) for r in roots])) if roots else Path(".")
    except ValueError:  # different drives
        root = Path(".")
    unique = {}
    for f in files:
        unique.setdefault(result_key(f), f)
    ordered = sorted(unique.values(), key=lambda f: Path(os.path.relpath(os.path.abspath(f), root)).parts)
    return root, ordered


def result_key(image: str | Path) -> str:
    """What identifies an image across runs: its absolute, normalised path (a URI as it is)."""
    text = str(image)
    if "://" in text:  # s3://bucket/key (Ray runs): no working directory to resolve against
        return text
    return os.path.normpath(os.path.abspath(text))


