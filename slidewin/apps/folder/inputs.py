"""Which files a folder run reads, in which order, and what identifies each across runs.

The rule for walking a folder (recursively, in sorted order):

- a file is an input when its suffix is one of the formats slidewin decodes (`IMAGE_SUFFIXES`,
  any case) and it is a regular file (or a link to one);
- hidden names (starting with ``.``) are skipped, files and folders alike;
- symlinked folders are not followed (a link may point back up the tree or anywhere else):
  name one as an input to walk it;
- FIFOs, sockets, devices and broken links are skipped, as are files with other suffixes and
  folders that cannot be read;
- the output folder is never walked.

Everything skipped is collected with its reason (`collect_inputs`'s ``skipped``), and the run's
summary lists it. A file named explicitly is always an input, whatever its name: the loader
judges its content and refuses what is not an image, in its record.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterable
from pathlib import Path

from slidewin.errors import printable
from slidewin.io.images import IMAGE_SUFFIXES

_MAGIC = re.compile(r"[*?[]")

#: Why a walk skipped a path.
HIDDEN = "hidden"
LINKED_FOLDER = "symlinked folder, not followed (name it as an input to include it)"
OTHER_SUFFIX = "not an image suffix"
NOT_REGULAR = "not a regular file"
UNREADABLE = "unreadable folder"


def is_folder_input(spec: str | Path) -> bool:
    """True for a directory or a glob pattern (``*``, ``?``, ``[``) that is not itself a file."""
    p = Path(spec)
    return p.is_dir() or (not p.exists() and bool(_MAGIC.search(str(spec))))


def _glob_root(pattern: str) -> Path:
    parts = []
    for part in Path(pattern).parts:
        if _MAGIC.search(part):
            break
        parts.append(part)
    return Path(*parts) if parts else Path(".")


def _reason(entry: os.DirEntry) -> str | None:
    """Why a walk skips a directory entry that is not a folder to descend; None: an input."""
    if entry.name.startswith("."):
        return HIDDEN
    if not entry.name.lower().endswith(IMAGE_SUFFIXES):
        return OTHER_SUFFIX
    try:
        return None if entry.is_file() else NOT_REGULAR  # follows a link to a file
    except OSError:
        return NOT_REGULAR


def _walk(top: Path, excluded: str | None, files: list[Path], skipped: list[tuple[Path, str]]) -> None:
    """Depth-first, sorted walk of ``top`` following the module's rule.

    With a stack of folders rather than recursion: a tree thousands of levels deep is walked
    (or its too-long paths skipped as unreadable), never a RecursionError. A folder's real path is
    compared with ``excluded`` only when its inode number (free from the directory listing) is
    that folder's: resolving every folder's path costs time quadratic in the depth."""
    excluded_ino = _inode(excluded)
    stack = [top]
    while stack:
        folder = stack.pop()
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError:
            skipped.append((folder, UNREADABLE))
            continue
        below = []
        for entry in entries:
            path = Path(entry.path)
            if entry.is_dir(follow_symlinks=False):
                if (excluded is not None and excluded_ino in (None, entry.inode())
                        and os.path.realpath(path) == excluded):
                    continue  # the output folder, reached by any path: never its own input
                if entry.name.startswith("."):
                    skipped.append((path, HIDDEN))
                else:
                    below.append(path)
            elif entry.is_symlink() and entry.is_dir():
                skipped.append((path, LINKED_FOLDER))
            elif (reason := _reason(entry)) is None:
                files.append(path)
            else:
                skipped.append((path, reason))
        stack.extend(reversed(below))


def _inode(folder: str | None) -> int | None:
    """The inode number of an existing folder that is not a mount point (whose listing entry
    names the inode beneath it), else None: compare real paths."""
    try:
        return None if folder is None or os.path.ismount(folder) else os.stat(folder).st_ino
    except OSError:
        return -1  # nothing there: no folder of the walk is it


def _glob(pattern: str, excluded: str | None, files: list[Path], skipped: list[tuple[Path, str]]) -> None:
    import glob

    for m in sorted(glob.glob(pattern, recursive=True)):
        if excluded is not None and os.path.commonpath([os.path.realpath(m), excluded]) == excluded:
            continue
        if os.path.isdir(m):
            continue
        name = os.path.basename(m)
        if not name.lower().endswith(IMAGE_SUFFIXES):
            skipped.append((Path(m), OTHER_SUFFIX))
        elif not stat.S_ISREG(_mode(m)):
            skipped.append((Path(m), NOT_REGULAR))
        else:
            files.append(Path(m))


def _mode(path: str) -> int:
    try:
        return os.stat(path).st_mode
    except OSError:
        return 0


def collect_inputs(specs: Iterable[str | Path], exclude: Path | None = None,
                   skipped: list[tuple[Path, str]] | None = None) -> tuple[Path, list[Path]]:
    """The image files named by directories (walked by the module's rule), globs and file paths.

    Args:
        specs: folders, glob patterns (``photos/**/*.jpg``) and files; a file is kept whatever
            its name.
        exclude: a folder never to walk (the output folder).
        skipped: if given, receives ``(path, reason)`` for everything a walk or glob passed over.

    Returns:
        (root, files): the folder that relative output paths (drawn images) start from, and the
        files, each once, sorted by path components (the same order on every run).
    """
    # Compared by real path: an output folder inside the inputs, named through a link or
    # reached through one, is still never walked.
    excluded = os.path.realpath(exclude) if exclude is not None else None
    skipped = [] if skipped is None else skipped
    roots, files = [], []
    for spec in specs:
        text = str(spec)
        p = Path(text)
        if p.is_dir():
            roots.append(p)
            if excluded is None or os.path.realpath(p) != excluded:
                _walk(p, excluded, files, skipped)
        elif not p.exists() and _MAGIC.search(text):
            roots.append(_glob_root(text))
            _glob(text, excluded, files, skipped)
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


def skipped_summary(skipped: list[tuple[Path, str]], shown: int = 5) -> str | None:
    """One line that says what a walk skipped and why (a few paths each); None if nothing."""
    if not skipped:
        return None
    by_reason: dict[str, list[Path]] = {}
    for path, reason in skipped:
        by_reason.setdefault(reason, []).append(path)
    parts = []
    for reason, paths in by_reason.items():
        names = ", ".join(str(p) for p in paths[:shown]) + (", ..." if len(paths) > shown else "")
        parts.append(f"{len(paths)} {reason}: {names}")
    return printable(f"skipped {len(skipped)} path(s) while walking the inputs: {'; '.join(parts)}")


def result_key(image: str | Path, base: str | Path | None = None) -> str:
    """What identifies an image across runs, whatever the working directory: its absolute path
    with links resolved. A relative ``image`` is taken relative to ``base`` (default: the working
    directory; a results file records the one its relative paths were written from). A URI
    (``s3://bucket/key``, Ray runs) is its own key: there is no directory to resolve it against."""
    if "://" in str(image):
        return str(image)
    return os.path.realpath(os.path.join(os.fspath(base) if base is not None else os.getcwd(), os.fspath(image)))
