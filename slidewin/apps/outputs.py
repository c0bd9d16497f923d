"""A folder run's results in the formats other tools read: ``--format coco|yolo|csv``.

``results.jsonl`` stays the record of the run (resumable, one line per image); these files are
made from it after the run, whole or not at all, so they always describe every image the run
has recorded, resumed runs included:

- ``coco``: ``OUT/detections.coco.json``, a COCO *results* file (real COCO category ids);
- ``yolo``: ``OUT/yolo/<image stem>.txt`` (normalised xywh and the score) and ``OUT/yolo/classes.txt`` with
  ``OUT/yolo/data.yaml`` (the names as Ultralytics and supervision read them);
- ``csv``: ``OUT/detections.csv``, one row per box.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator, Sequence
from enum import StrEnum
from pathlib import Path

from slidewin.errors import SlidewinError


class Format(StrEnum):
    COCO = "coco"
    YOLO = "yolo"
    CSV = "csv"


COCO_NAME = "detections.coco.json"
CSV_NAME = "detections.csv"
YOLO_DIR = "yolo"


def check_formats(formats: Sequence[str], labels: Sequence[str], model: str | Path) -> None:
    """Refuse, before the run, a format the model cannot give (``coco`` without COCO classes)."""
    from slidewin.io.result_formats import require_coco_category_ids

    if Format.COCO in formats:
        require_coco_category_ids(labels, model)


def _records(results: Path) -> Iterator[dict]:
    """The records of ``results.jsonl``, streamed; a line that is not a record is skipped (the
    resume logic reports those)."""
    with open(results, encoding="utf-8") as f:
        for line in f:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and "image" in record:
                yield record


def write_formats(out_dir: Path, formats: Sequence[str], labels: Sequence[str]) -> list[Path]:
    """Write the asked formats from ``OUT/results.jsonl``; returns the paths written."""
    from slidewin.apps.folder.results_log import RESULTS_NAME
    from slidewin.io.files import atomic_write_text
    from slidewin.io.result_formats import (CSV_HEADER, coco_results, csv_rows, yolo_classes_txt,
                                            yolo_data_yaml, yolo_lines, yolo_txt_name)

    results = out_dir / RESULTS_NAME
    written: list[Path] = []
    if Format.COCO in formats:
        rows = coco_results(_records(results), labels=labels)
        atomic_write_text(out_dir / COCO_NAME, json.dumps(rows) + "\n")
        written.append(out_dir / COCO_NAME)
    if Format.CSV in formats:
        text = io.StringIO()
        writer = csv.writer(text)
        writer.writerow(CSV_HEADER)
        for record in _records(results):
            writer.writerows(csv_rows([record]))
        atomic_write_text(out_dir / CSV_NAME, text.getvalue())
        written.append(out_dir / CSV_NAME)
    if Format.YOLO in formats:
        folder = out_dir / YOLO_DIR
        if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
            raise SlidewinError("is not a folder of ours (a link or a file): remove it", folder)
        taken: set[str] = {"classes.txt"}  # a photo named classes.jpg gets classes.2.txt, not the names file
        for record in _records(results):
            if record.get("error") or record.get("width") is None:
                continue
            name = _unique(yolo_txt_name(record["image"]), taken)
            lines = yolo_lines(record["detections"], (record["height"], record["width"]))
            atomic_write_text(folder / name, "".join(line + "\n" for line in lines))
        atomic_write_text(folder / "classes.txt", yolo_classes_txt(labels))
        atomic_write_text(folder / "data.yaml", yolo_data_yaml(labels))
        written.append(folder)
    return written


def _unique(name: str, taken: set[str]) -> str:
    """``a.txt``, then ``a.2.txt``, ``a.3.txt``: images with one stem in two folders keep both."""
    stem, suffix = name.rsplit(".", 1)
    candidate, n = name, 1
    while candidate in taken:
        n += 1
        candidate = f"{stem}.{n}.{suffix}"
    taken.add(candidate)
    return candidate
