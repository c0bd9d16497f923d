"""A COCO-format dataset for evaluation: where its files are, and an instances file checked whole.

Two layouts are found from one folder (``--data``): slidewin's own, ``images/`` beside
``instances.json``, and COCO's, ``annotations/instances_<split>.json`` beside ``<split>/``
(``val2017``). Any other pair is given as ``--images DIR --annotations FILE``.

The instances file is checked before anything runs, so that a malformed one ends in one line
naming the file, the entry and the problem (never a traceback from the evaluator, minutes later).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from slidewin.errors import SlidewinError, printable
from slidewin.io.files import read_small_json

#: instances.json is parsed whole, and Python's objects cost ~25 bytes per byte of JSON: COCO's
#: val2017 (5000 images, 25 MB) needs ~0.6 GB. 64 MiB leaves room for 2.5 times that and bounds
#: the parse near 1.6 GB; a bigger file (train2017, 448 MB, would need ~11 GB) is refused unread.
MAX_INSTANCES_BYTES = 64 << 20


@dataclass(frozen=True)
class Dataset:
    """A COCO-format dataset: the images folder, the instances file and its (checked) contents."""

    root: Path
    images_dir: Path
    annotations: Path
    gt: dict


def load_dataset(root: str | Path) -> Dataset:
    """The dataset in folder ``root``: ``images/`` and ``instances.json``, or COCO's layout
    ``annotations/instances_<split>.json`` and ``<split>/`` (exactly one such split).

    Raises:
        SlidewinError: one line naming the folder or file and the problem.
    """
    root = Path(root)
    if not root.is_dir():
        raise SlidewinError("no such dataset folder", root)
    if (root / "instances.json").exists() or (root / "images").is_dir():
        if not (root / "instances.json").exists():
            raise SlidewinError("dataset has no instances.json (COCO format expected)", root)
        if not (root / "images").is_dir():
            load_instances(root / "instances.json")  # a malformed file is said first
            raise SlidewinError("dataset has no images/ folder", root)
        return load_coco(root / "images", root / "instances.json", root)
    splits = sorted(p for p in (root / "annotations").glob("instances_*.json")
                    if (root / p.stem[len("instances_"):]).is_dir()) if (root / "annotations").is_dir() else []
    if len(splits) == 1:
        return load_coco(root / splits[0].stem[len("instances_"):], splits[0], root)
    if len(splits) > 1:
        names = ", ".join(p.stem[len("instances_"):] for p in splits)
        raise SlidewinError(f"dataset holds several COCO splits ({names}): give --images DIR --annotations FILE", root)
    raise SlidewinError("dataset has no instances.json with images/, nor annotations/instances_<split>.json with "
                        "<split>/ (COCO format expected); or give --images DIR --annotations FILE", root)


def load_coco(images_dir: str | Path, annotations: str | Path, root: str | Path | None = None) -> Dataset:
    """The dataset of the images in ``images_dir`` (``file_name`` is relative to it) and the
    instances file ``annotations``.

    Raises:
        SlidewinError: one line naming the folder or file and the problem.
    """
    images_dir, annotations = Path(images_dir), Path(annotations)
    gt = load_instances(annotations)
    if not images_dir.is_dir():
        raise SlidewinError("no such images folder", images_dir)
    return Dataset(Path(root) if root is not None else images_dir.parent, images_dir, annotations, gt)


def load_instances(path: str | Path) -> dict:
    """A COCO instances file, read with a cap and checked entry by entry.

    Raises:
        SlidewinError: naming ``path`` and the first problem found: not JSON, a list that is not a
        list, an entry without its id, a bbox that is not 4 numbers, an id that refers to nothing,
        repeated ids, or no images at all.
    """
    gt = read_small_json(path, MAX_INSTANCES_BYTES, "COCO instances file")
    check_instances(gt, path)
    return gt


def _kind(value) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null",
            int: "a number", float: "a number"}.get(type(value), type(value).__name__)


def _shown(value, limit: int = 40) -> str:
    text = printable(repr(value))
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _entries(gt: dict, key: str, path) -> list:
    if key not in gt:
        raise SlidewinError(f'not a COCO instances file: no "{key}" list', path)
    value = gt[key]
    if not isinstance(value, list):
        raise SlidewinError(f'"{key}" is {_kind(value)}, not a list', path)
    for i, entry in enumerate(value):
        if not isinstance(entry, dict):
            raise SlidewinError(f"{key}[{i}] is {_kind(entry)}, not an object", path)
    return value


def _ids(entries: list, key: str, path) -> set:
    """The integer ``id`` of every entry, all different."""
    seen: set = set()
    repeated = []
    for i, entry in enumerate(entries):
        if "id" not in entry:
            raise SlidewinError(f'{key}[{i}] has no "id"', path)
        if not _is_int(entry["id"]):
            raise SlidewinError(f"{key}[{i}] has id {_shown(entry['id'])} ({_kind(entry['id'])}): ids are integers",
                                path)
        if entry["id"] in seen:
            repeated.append(entry["id"])
        seen.add(entry["id"])
    if repeated:
        what = {"images": "image", "annotations": "annotation", "categories": "category"}[key]
        shown = ", ".join(map(repr, sorted(set(repeated))[:5]))
        raise SlidewinError(f"{what} ids must be unique; repeated: {shown}", path)
    return seen


def check_instances(gt, path) -> None:
    """Refuse, in one line naming ``path``, an instances file faster-coco-eval would choke on or
    that would measure nothing (see `load_instances`)."""
    if not isinstance(gt, dict):
        raise SlidewinError(f"not a COCO instances file: the top level is {_kind(gt)}, not an object", path)
    images = _entries(gt, "images", path)
    annotations = _entries(gt, "annotations", path)
    categories = _entries(gt, "categories", path)
    if not images:
        raise SlidewinError("holds no images (\"images\" is empty): nothing to evaluate", path)
    image_ids = _ids(images, "images", path)
    for i, im in enumerate(images):
        name = im.get("file_name")
        if not isinstance(name, str) or not name:
            what = "no file_name" if name is None else f"file_name {_shown(name)}, not a file name"
            raise SlidewinError(f"images[{i}] (id {im['id']}) has {what}", path)
    category_ids = _ids(categories, "categories", path)
    names: dict = {}
    for i, cat in enumerate(categories):
        name = cat.get("name")
        if not isinstance(name, str) or not name:
            what = "no name" if name is None else f"name {_shown(name)}, not a string"
            raise SlidewinError(f"categories[{i}] (id {cat['id']}) has {what}", path)
        if name in names:
            raise SlidewinError(f"category names must be unique: {_shown(name)} is category {names[name]} "
                                f"and {cat['id']}", path)
        names[name] = cat["id"]
    _ids(annotations, "annotations", path)
    for i, a in enumerate(annotations):
        where = f"annotations[{i}] (id {a['id']})"
        for key, known, what, listed in (("image_id", image_ids, "image", "images"),
                                          ("category_id", category_ids, "category", "categories")):
            if key not in a:
                raise SlidewinError(f'{where} has no "{key}"', path)
            if not _is_int(a[key]) or a[key] not in known:
                raise SlidewinError(f'{where} refers to {what} {_shown(a[key])}, which is not in "{listed}"', path)
        bbox = a.get("bbox")
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(map(_is_number, bbox))):
            raise SlidewinError(f"{where} has bbox {_shown(bbox)}: not 4 numbers (x, y, width, height)", path)
        if bbox[2] < 0 or bbox[3] < 0:
            raise SlidewinError(f"{where} has bbox {_shown(bbox)}: a negative width or height", path)
        if "iscrowd" in a and a["iscrowd"] not in (0, 1):
            raise SlidewinError(f"{where} has iscrowd {_shown(a['iscrowd'])}: 0 or 1 expected", path)
        if "area" in a and not (_is_number(a["area"]) and a["area"] >= 0):
            raise SlidewinError(f"{where} has area {_shown(a['area'])}: not a number of pixels", path)
