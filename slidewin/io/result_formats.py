"""Detections in the formats other tools read: COCO results, YOLO txt, CSV.

Pure functions from detection records (the dicts of ``results.jsonl``, `detection_record`:
``{"image", "width", "height", "detections": [{"xyxy", "score", "class_id", "label"}]}``) or
`Detections` to rows and lines; writing them is the caller's part.

- COCO results (pycocotools' ``loadRes``, faster-coco-eval, FiftyOne): one row per box,
  ``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}`` with the *COCO category id*,
  found by label name in ``slidewin/data/coco_categories.json`` (the 80 categories, ids 1-90)
  or in a mapping the caller gives (a dataset's own categories);
- YOLO: per image, one line ``class x_center y_center width height [score]`` normalised to
  [0, 1] by the image size, plus ``classes.txt`` (one label per line, line i = class i) and
  ``data.yaml`` (the same names, as Ultralytics and supervision read them);
- CSV: one row per box, `CSV_HEADER`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from functools import lru_cache
from importlib import resources
from pathlib import PurePath

import numpy as np

from slidewin.core.detections import Detections
from slidewin.errors import SlidewinError

#: Labels that stand for no class (torchvision's COCO list has them): never given a category.
PLACEHOLDER_LABELS = frozenset({"__background__", "background", "N/A", "n/a"})

#: The columns of `csv_rows`.
CSV_HEADER = ("image", "width", "height", "label", "class_id", "score", "x1", "y1", "x2", "y2")


@lru_cache(maxsize=1)
def _coco_table() -> dict:
    return json.loads(resources.files("slidewin").joinpath("data/coco_categories.json").read_text("utf-8"))


def coco_categories() -> list[dict]:
    """The 80 COCO categories: ``[{"id", "name", "supercategory"}]`` with the official ids."""
    return [dict(c) for c in _coco_table()["categories"]]


def _normal(name: str) -> str:
    return " ".join(name.lower().replace("_", " ").replace("-", " ").split())


def coco_category_id(label: str) -> int | None:
    """The COCO category id of a label name (case, ``_`` and ``-`` ignored; VOC's names such
    as ``tvmonitor`` accepted), or None when it names no COCO category."""
    table = _coco_table()
    by_name = {_normal(c["name"]): c["id"] for c in table["categories"]}
    key = _normal(label)
    key = _normal(table["aliases"].get(key.replace(" ", ""), key))
    return by_name.get(key)


def coco_category_ids(labels: Sequence[str]) -> dict[int, int] | None:
    """Class id -> COCO category id for a detector's labels, or None when they are not COCO's.

    The labels map when every one of them (placeholders such as ``N/A`` aside) names a COCO
    category: COCO-group targets of an ImageNet model (``--classes coco`` or a subset), a
    Faster R-CNN's 91-entry list, a model trained on COCO names. An ImageNet model's own 1,000
    labels do not.
    """
    out = {}
    for i, label in enumerate(labels):
        if label in PLACEHOLDER_LABELS:
            continue
        cid = coco_category_id(label)
        if cid is None:
            return None
        out[i] = cid
    return out or None


def require_coco_category_ids(labels: Sequence[str], model: str | PurePath | None = None) -> dict[int, int]:
    """`coco_category_ids`, or a one-line `SlidewinError` naming a label that is not COCO's
    (what ``--format coco`` says for a model without a COCO mapping)."""
    ids = coco_category_ids(labels)
    if ids is None:
        stray = next((lb for lb in labels if lb not in PLACEHOLDER_LABELS and coco_category_id(lb) is None), "")
        raise SlidewinError(f"COCO results need COCO classes, but the label {stray!r} is not a COCO category "
                            "(use --classes coco with an ImageNet model, or give category ids)", model)
    return ids


def _category_lookup(labels: Sequence[str], category_ids: Mapping | None):
    """A function (class_id, label) -> category id, or a one-line error for a label without one."""
    if category_ids is None:
        table = require_coco_category_ids(labels) if labels else None

        def find(class_id: int, label: str) -> int | None:
            return coco_category_id(label) if table is None else table.get(class_id)
    else:
        def find(class_id: int, label: str) -> int | None:
            value = category_ids.get(label, category_ids.get(class_id))
            return None if value is None else int(value)

    def lookup(class_id: int, label: str) -> int:
        cid = find(class_id, label)
        if cid is None:
            where = "the COCO categories" if category_ids is None else "the category ids given"
            raise SlidewinError(f"class {label!r} (id {class_id}) has no category id in {where}: "
                                "pass category_ids={label: id}")
        return cid

    return lookup


def _boxes(detections: Detections | Sequence[Mapping]) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """(xyxy float64 (N, 4), scores (N,), class_ids (N,), labels) of `Detections` or of a
    record's ``detections`` list."""
    if isinstance(detections, Detections):
        return (detections.xyxy.astype(np.float64), detections.scores.astype(np.float64),
                detections.class_ids, detections.label_names)
    rows = list(detections)
    xyxy = np.array([d["xyxy"] for d in rows], np.float64).reshape(-1, 4)
    return (xyxy, np.array([d["score"] for d in rows], np.float64), np.array([d["class_id"] for d in rows], np.int64),
            [str(d["label"]) for d in rows])


def coco_rows(detections: Detections | Sequence[Mapping], image_id: int,
              category_ids: Mapping | None = None, labels: Sequence[str] | None = None) -> list[dict]:
    """COCO results rows of one image's boxes.

    Args:
        detections: `Detections`, or a record's ``detections`` list.
        image_id: the image's id in the dataset.
        category_ids: category id per class, keyed by label name or class id; None for the
            standard COCO ids by label name.
        labels: the detector's whole label list, when known (`Detections` carry theirs), so
            that a label list with non-COCO names is refused even if this image lacks them.

    Returns:
        ``[{"image_id", "category_id", "bbox": [x, y, w, h], "score"}]``, bbox rounded to 0.01 px.
    """
    if labels is None and isinstance(detections, Detections):
        labels = detections.labels
    xyxy, scores, class_ids, names = _boxes(detections)
    lookup = _category_lookup(labels or (), category_ids)
    rows = []
    for (x1, y1, x2, y2), score, c, name in zip(xyxy.tolist(), scores.tolist(), class_ids.tolist(), names):
        rows.append({"image_id": int(image_id), "category_id": lookup(int(c), name),
                     "bbox": [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)],
                     "score": round(score, 5)})
    return rows


def default_image_ids(images: Iterable[str]) -> dict[str, int]:
    """Image ids for files that come with no dataset: the number in the file name when every
    name is one (COCO's ``000000000790.jpg`` -> 790) and no two share it, else 1..N in order."""
    images = list(dict.fromkeys(str(p) for p in images))
    stems = [PurePath(p).stem for p in images]
    if stems and all(s.isdigit() for s in stems) and len({int(s) for s in stems}) == len(stems):
        return {p: int(s) for p, s in zip(images, stems)}
    return {p: i for i, p in enumerate(images, 1)}


def coco_results(records: Iterable[Mapping], image_ids: Mapping[str, int] | None = None,
                 category_ids: Mapping | None = None, labels: Sequence[str] | None = None) -> list[dict]:
    """A COCO results file's content (``json.dump`` it) from detection records.

    Args:
        records: detection records; those with an ``"error"`` have no boxes and add nothing.
        image_ids: ``record["image"]`` -> image id (from the dataset's ``images``); None for
            `default_image_ids`.
        category_ids: see `coco_rows`.
        labels: the detector's labels (`coco_rows`).

    Raises:
        SlidewinError: an image with no id, or a class with no category id (one line).
    """
    records = list(records)
    ids = default_image_ids(r["image"] for r in records) if image_ids is None else image_ids
    rows: list[dict] = []
    for r in records:
        if not r.get("detections"):
            continue
        if str(r["image"]) not in ids:
            raise SlidewinError("no image id for this image in the dataset", r["image"])
        rows += coco_rows(r["detections"], ids[str(r["image"])], category_ids, labels)
    return rows


def yolo_lines(detections: Detections | Sequence[Mapping], hw: tuple[int, int], with_scores: bool = True) -> list[str]:
    """One image's boxes as YOLO txt lines: ``class xc yc w h [score]``, normalised to [0, 1].

    Args:
        detections: `Detections`, or a record's ``detections`` list.
        hw: the image's (height, width) in pixels.
        with_scores: add the score as a sixth column (what YOLO tools write for predictions
            and FiftyOne reads as confidence).
    """
    h, w = hw
    if h <= 0 or w <= 0:
        raise ValueError(f"image size must be positive, got {hw}")
    xyxy, scores, class_ids, _ = _boxes(detections)
    xyxy = np.clip(xyxy / [w, h, w, h], 0.0, 1.0)
    centre, size = (xyxy[:, :2] + xyxy[:, 2:]) / 2, xyxy[:, 2:] - xyxy[:, :2]
    lines = []
    for c, (xc, yc), (bw, bh), s in zip(class_ids.tolist(), centre.tolist(), size.tolist(), scores.tolist()):
        line = f"{c} {xc:.6f} {yc:.6f} {bw:.6f} {bh:.6f}"
        lines.append(f"{line} {s:.5f}" if with_scores else line)
    return lines


def yolo_classes_txt(labels: Sequence[str]) -> str:
    """``classes.txt``: the label of class i on line i (newlines in a label become spaces)."""
    return "".join(" ".join(str(label).splitlines()) + "\n" for label in labels)


def yolo_data_yaml(labels: Sequence[str]) -> str:
    """``data.yaml`` in the Ultralytics form (``nc`` and ``names: {id: name}``), which
    supervision's ``DetectionDataset.from_yolo`` and Ultralytics read. Each name is written as a
    JSON string, which is also a YAML double-quoted scalar, so no YAML library is needed."""
    names = "".join(f"  {i}: {json.dumps(' '.join(str(label).splitlines()))}\n" for i, label in enumerate(labels))
    return f"nc: {len(labels)}\nnames:\n{names}"


def yolo_txt_name(image: str | PurePath) -> str:
    """The YOLO txt file name of an image: its stem with ``.txt``."""
    return PurePath(image).stem + ".txt"


def csv_rows(records: Iterable[Mapping]) -> Iterator[list]:
    """One CSV row per box of each record (`CSV_HEADER` order); records without boxes add none."""
    for r in records:
        for d in r.get("detections") or ():
            x1, y1, x2, y2 = d["xyxy"]
            yield [str(r["image"]), r.get("width"), r.get("height"), d["label"], int(d["class_id"]),
                   d["score"], x1, y1, x2, y2]
