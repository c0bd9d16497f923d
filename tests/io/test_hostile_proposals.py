"""Hostile input for region proposals (issue 22): selective search had no bound on time or memory.
A 12000x9000 photo reached 8.8 GB and ended in "internal error: std::bad_alloc"; a 30000x200
strip reached 6.5 GB and ran past 400 s. It now runs on a bounded working copy, tiled for strips
(`slidewin.proposals.generators.working_plan`), and pooled scoring's levels are bounded
(`slidewin.proposals.scoring.POOLED_MAX_PIXELS`).

Each case runs the command line in a subprocess under an address-space limit and a timeout
(`run_limited`: no traceback, no internal error, peak memory from VmHWM under 1.5 GB). The time
bound: the selective-search stage within `PROPOSAL_SECONDS` (measured 5-6 s on an idle core, 23 s
on two cores shared by a dozen processes), the whole command within `TIMEOUT`.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import pytest
from skimage import data
from test_hostile_files import run_limited

from conftest import tiny_conv_model

#: Seconds the proposals stage may take on a busy 2-core machine (it took 88 s to fail, or > 400 s).
PROPOSAL_SECONDS = 60
TIMEOUT = 300

pytestmark = pytest.mark.slow  # each case decodes a large photo and runs the pipeline: 20-60 s


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    """A dense-capable classifier that runs in milliseconds: the cost measured is the proposals'."""
    return tiny_conv_model(tmp_path_factory.mktemp("hostile-ss") / "tinyconv.onnx")


def _jpeg(path: Path, w: int, h: int) -> Path:
    """A photo (scikit-image's astronaut) resized to w x h, as a JPEG."""
    bgr = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
    interpolation = cv2.INTER_LINEAR if w * h > bgr.shape[0] * bgr.shape[1] else cv2.INTER_AREA
    assert cv2.imwrite(str(path), cv2.resize(bgr, (w, h), interpolation=interpolation), [cv2.IMWRITE_JPEG_QUALITY, 85])
    return path


@pytest.fixture(scope="module")
def big_photo(tmp_path_factory) -> Path:
    return _jpeg(tmp_path_factory.mktemp("hostile-ss-img") / "big.jpg", 12000, 9000)


@pytest.fixture(scope="module")
def strip(tmp_path_factory) -> Path:
    return _jpeg(tmp_path_factory.mktemp("hostile-ss-img") / "strip.jpg", 30000, 200)


def _detect(tmp_path: Path, model: Path, image: Path) -> dict:
    out = tmp_path / "d.json"
    proc = run_limited(tmp_path, "detect", image, "--model", model, "--proposals", "selective-search-fast",
                       "--json", out, timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stderr
    record = json.loads(out.read_text())
    assert record["windows"] > 100  # proposals were found and scored
    assert record["seconds"]["proposals"] < PROPOSAL_SECONDS, record["seconds"]
    return record


def test_detect_with_proposals_on_a_12000x9000_photo_is_bounded(tmp_path, model, big_photo):
    record = _detect(tmp_path, model, big_photo)
    assert (record["width"], record["height"]) == (12000, 9000)  # scored at full resolution


def test_detect_with_proposals_on_a_30000x200_strip_is_bounded(tmp_path, model, strip):
    record = _detect(tmp_path, model, strip)
    assert (record["width"], record["height"]) == (30000, 200)


def test_compare_on_a_30000x200_strip_is_bounded(tmp_path, model, strip):
    """`compare` runs the windows and, by default, the proposals on the same photo."""
    out = tmp_path / "c.json"
    proc = run_limited(tmp_path, "compare", strip, "--model", model, "--classes", "0-3", "--json", out,
                       timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stderr
    assert "proposals" in out.read_text()
