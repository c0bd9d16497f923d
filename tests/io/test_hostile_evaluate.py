"""Hostile input (issue 22): malformed COCO instances files given to ``slidewin evaluate``.

Each case runs ``slidewin evaluate`` in a subprocess under an address-space limit and a timeout,
as the other hostile suites do, and must end in exactly one line that names the instances file
and the problem, exit code 2, and no traceback or internal error: faster-coco-eval is never
reached with a file it would choke on.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

MEMORY_LIMIT = 3 << 30
TIMEOUT = 60


def run_limited(*argv, cwd=None) -> subprocess.CompletedProcess:
    """``python -m slidewin.cli ARGV`` under MEMORY_LIMIT and TIMEOUT."""
    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))

    return subprocess.run([sys.executable, "-m", "slidewin.cli", *map(str, argv)], capture_output=True, text=True,
                          timeout=TIMEOUT, preexec_fn=limit, cwd=cwd)


def _valid() -> dict:
    return {"images": [{"id": 1, "file_name": "a.jpg", "width": 80, "height": 60}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 3, "bbox": [1, 2, 30, 20], "area": 600,
                             "iscrowd": 0}],
            "categories": [{"id": 3, "name": "car"}]}


def _with(change) -> dict:
    gt = _valid()
    change(gt)
    return gt


#: name -> (instances file contents, what the one line must say)
MALFORMED = {
    "top-level-list": ([_valid()], "the top level is a list, not an object"),
    "images-not-a-list": (_with(lambda g: g.update(images={"1": "a.jpg"})), '"images" is an object, not a list'),
    "image-not-an-object": (_with(lambda g: g["images"].append("b.jpg")), "images[1] is a string, not an object"),
    "image-without-id": (_with(lambda g: g["images"][0].pop("id")), 'images[0] has no "id"'),
    "image-id-a-string": (_with(lambda g: g["images"][0].update(id="1")), "images[0] has id '1' (a string): ids are"),
    "image-without-file-name": (_with(lambda g: g["images"][0].pop("file_name")), "(id 1) has no file_name"),
    "file-name-a-number": (_with(lambda g: g["images"][0].update(file_name=7)), "has file_name 7, not a file name"),
    "annotations-missing": (_with(lambda g: g.pop("annotations")), 'no "annotations" list'),
    "annotation-without-id": (_with(lambda g: g["annotations"][0].pop("id")), 'annotations[0] has no "id"'),
    "bbox-of-3": (_with(lambda g: g["annotations"][0].update(bbox=[1, 2, 3])), "has bbox [1, 2, 3]: not 4 numbers"),
    "bbox-of-strings": (_with(lambda g: g["annotations"][0].update(bbox=["1", "2", "3", "4"])), "not 4 numbers"),
    "bbox-not-a-list": (_with(lambda g: g["annotations"][0].update(bbox="1,2,3,4")), "not 4 numbers"),
    "bbox-negative": (_with(lambda g: g["annotations"][0].update(bbox=[1, 2, -3, 4])), "negative width or height"),
    "bbox-infinite": (_with(lambda g: g["annotations"][0].update(bbox=[1, 2, 1e999, 4])), "not 4 numbers"),
    "unknown-image-id": (_with(lambda g: g["annotations"][0].update(image_id=99)),
                         'refers to image 99, which is not in "images"'),
    "image-id-wrong-type": (_with(lambda g: g["annotations"][0].update(image_id=[1])), "refers to image [1]"),
    "annotation-without-category": (_with(lambda g: g["annotations"][0].pop("category_id")),
                                    'has no "category_id"'),
    "unknown-category-id": (_with(lambda g: g["annotations"][0].update(category_id=5)),
                            'refers to category 5, which is not in "categories"'),
    "categories-missing": (_with(lambda g: g.pop("categories")), 'no "categories" list'),
    "category-without-id": (_with(lambda g: g["categories"][0].pop("id")), 'categories[0] has no "id"'),
    "category-without-name": (_with(lambda g: g["categories"][0].pop("name")), "(id 3) has no name"),
    "category-names-repeated": (_with(lambda g: g["categories"].append({"id": 4, "name": "car"})),
                                "category names must be unique"),
    "category-ids-repeated": (_with(lambda g: g["categories"].append({"id": 3, "name": "bus"})),
                              "category ids must be unique; repeated: 3"),
    "iscrowd-a-string": (_with(lambda g: g["annotations"][0].update(iscrowd="no")), "iscrowd 'no': 0 or 1"),
    "area-a-string": (_with(lambda g: g["annotations"][0].update(area="600")), "area '600': not a number"),
}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("hostile-coco")
    (root / "images").mkdir()
    rng = np.random.default_rng(0)
    assert cv2.imwrite(str(root / "images" / "a.jpg"), rng.integers(0, 255, (60, 80, 3), np.uint8))
    return root


#: The six shapes of the hostile review, each run as a user would (a subprocess under limits);
#: every case of the table also runs in-process below.
IN_SUBPROCESS = ("images-not-a-list", "image-without-id", "bbox-of-3", "categories-missing", "unknown-image-id",
                 "image-id-a-string")


def _write(tmp_path: Path, dataset: Path, name: str) -> tuple[Path, Path, str]:
    gt, needle = MALFORMED[name]
    data = tmp_path / "data"
    data.mkdir()
    (data / "images").symlink_to(dataset / "images")
    (data / "instances.json").write_text(json.dumps(gt))
    return data, data / "instances.json", needle


def _one_line(stderr: str, ann: Path, needle: str) -> None:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr and "internal error" not in stderr, stderr
    assert lines[0].startswith(f"slidewin: error: {ann}: ") and needle in lines[0], lines[0]


@pytest.mark.parametrize("name", IN_SUBPROCESS)
def test_malformed_instances_file_is_one_line(tmp_path, dataset, name):
    data, ann, needle = _write(tmp_path, dataset, name)
    # the model does not matter: the instances file is checked before it is opened
    proc = run_limited("evaluate", "--data", data, "--model", tmp_path / "absent.onnx")
    assert proc.returncode == 2, proc.stderr
    _one_line(proc.stderr, ann, needle)


@pytest.mark.parametrize("name", list(MALFORMED))
def test_every_malformed_shape_is_one_line(tmp_path, dataset, name, capsys):
    from slidewin.cli import main

    data, ann, needle = _write(tmp_path, dataset, name)
    assert main(["evaluate", "--data", str(data), "--model", str(tmp_path / "absent.onnx")]) == 2
    _one_line(capsys.readouterr().err, ann, needle)


def test_the_valid_file_of_the_table_passes_the_checks(dataset):
    """The table's cases each break one thing of a file that is itself accepted."""
    from slidewin.apps.coco_data import check_instances

    check_instances(_valid(), "instances.json")
