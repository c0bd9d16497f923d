"""``run.json``: what a folder run's records were made with, so that a resume cannot mix others in.

Written (atomically) beside ``results.jsonl`` when a run starts: the detection settings (the
model's sha256, the parts of the `DetectorConfig` in use, the classes, ``--convert`` and
``--max-pixels``) and the
working directory that relative image paths in the records are relative to. ``--resume``
compares the settings it is given with the recorded ones and refuses any difference in one line
that says what differs, and keys the recorded images from the recorded directory, so resuming
from another working directory neither redoes nor duplicates them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from slidewin.errors import SlidewinError
from slidewin.io.files import check_own_file

RUN_NAME = "run.json"
_FORMAT = 2


def run_settings(model: str | Path, config=None, classes=None, convert: bool = False,
                 max_pixels: int | None = None, proposals=None) -> dict:
    """The settings that decide a run's records, as plain JSON values.

    Args:
        model: the model file (recorded by its sha256: the same weights under another path
            are the same model).
        config: the `DetectorConfig` (None for a detector without one).
        classes: the ``--classes`` value in use.
        convert, max_pixels: as for `slidewin.io.images.load_image`.
        proposals: the older spelling of a selective-search config (see `build_detector`).

    Only the parts of the detector that are used are recorded (``regions``, ``scoring``,
    ``merge``: `slidewin.pipeline.factory.settings_parts`), so that a resume is refused for a
    difference that changes the records, never for a setting that plays no part.
    """
    from slidewin.io.hashing import file_sha256
    from slidewin.pipeline.factory import settings_parts
    from slidewin.runtime.sessions import check_model_file

    parts = None if config is None and proposals is None else settings_parts(config, proposals)
    settings = {
        "model_sha256": file_sha256(check_model_file(model)),  # hashed once per version of the file
        **(parts or {"regions": None, "scoring": None, "merge": None}),
        "classes": classes,
        "convert": convert,
        "max_pixels": max_pixels,
    }
    return json.loads(json.dumps(settings))  # tuples -> lists, enums -> strings: as read back


def _current(settings: dict) -> dict:
    """Recorded settings as this version records them: runs recorded before the merge part kept
    only what its kind uses also recorded ``ios`` and ``soft_sigma`` for every merge of the
    window grid (the same run, so its resume is not refused for them)."""
    merge = settings.get("merge")
    if not isinstance(merge, dict) or not isinstance(merge.get("merge"), str):
        return settings
    kind = merge["merge"]
    unused = ({"ios"} if kind not in ("nested", "nested-vote") else set()) | ({"soft_sigma"} if kind != "soft-nms" else set())
    return {**settings, "merge": {k: v for k, v in merge.items() if k not in unused}}


def _differences(old: dict, new: dict) -> list[str]:
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += [f"{key}.{d}" for d in _differences(a, b)]
        elif a != b:
            out.append(f"{key} {json.dumps(a)} -> {json.dumps(b)}")
    return out


class RunFile:
    """``OUT/run.json`` of a folder run.

    Format 2 records the run's input root (absolute, for reference), and relative to it the
    working directory the records' relative image paths start from and the output folder; no
    absolute path is used as a key. A resume from a tree that was moved or mounted elsewhere,
    with the output folder at the same place relative to the inputs (`moved_from`), matches
    records by their path relative to the root. Format 1 files (an absolute ``cwd``) are read.

    Args:
        root: the run's input root (the folder drawn paths start from); None: not known.

    Attributes:
        base: the directory the records' relative image paths are relative to.
        old_root: the recorded input root, translated to where the records were written.
        moved: whether the tree was moved (or mounted elsewhere) since: match records by their
            path relative to ``old_root`` (see `ResultsLog`).
        recorded: whether the file exists with these settings (False: `write` it).
    """

    def __init__(self, out_dir: str | Path, settings: dict | None, resume: bool, root: str | Path | None = None):
        self.path = Path(out_dir) / RUN_NAME
        self.out_dir = os.path.abspath(out_dir)
        self.settings = settings
        self.root = None if root is None else os.path.abspath(root)
        self.base = os.getcwd()
        self.old_root: str | None = None
        self.moved = False
        self.recorded = False
        check_own_file(self.path, "run record")  # never a link out of the folder, nor a FIFO
        if resume and self.path.is_file():
            self._check(self._read())

    def _read(self) -> dict:
        from slidewin.io.files import MAX_SETTINGS_BYTES, read_small_json

        data = read_small_json(self.path, MAX_SETTINGS_BYTES, "run record")
        ok = isinstance(data, dict) and isinstance(data.get("cwd"), str) and (
            data.get("format") == 1 or isinstance(data.get("root"), str) and isinstance(data.get("out"), str))
        if not ok:
            raise SlidewinError("is not a run record written by slidewin (remove it to resume without the "
                                "settings check)", self.path)
        return data

    def _check(self, recorded: dict) -> None:
        if recorded.get("format") == 1:
            self.base = recorded["cwd"]
        else:
            self._locate(recorded)
        if self.settings is None or recorded.get("settings") is None:
            return
        diff = _differences(_current(recorded["settings"]), self.settings)
        if diff:
            raise SlidewinError(f"--resume with other settings than the run recorded here ({'; '.join(diff)}): "
                                "resume with the same settings, or choose another --out-dir", self.path)
        self.recorded = True

    def _locate(self, recorded: dict) -> None:
        """Where the recorded run's paths are now: unmoved, or moved with the output folder."""
        old_root = recorded["root"]
        self.old_root = old_root
        self.base = os.path.normpath(os.path.join(old_root, recorded["cwd"]))
        if self.root is None or os.path.normpath(self.root) == os.path.normpath(old_root):
            return
        same_folder = _same(old_root, self.root)
        moved_with_out = os.path.relpath(self.out_dir, self.root) == recorded["out"] and not os.path.exists(old_root)
        self.moved = same_folder or moved_with_out

    def write(self) -> None:
        """Record the settings, the input root, and relative to it the working directory and the
        output folder (whole or not at all)."""
        from slidewin.io.files import REFUSE, atomic_write_text

        root = self.root or self.base
        payload = {"format": _FORMAT, "root": root, "cwd": os.path.relpath(self.base, root),
                   "out": os.path.relpath(self.out_dir, root), "settings": self.settings}
        atomic_write_text(self.path, json.dumps(payload, indent=2) + "\n", REFUSE, "run record")
        self.recorded = True


def _same(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False
