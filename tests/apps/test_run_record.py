"""run.json records the parts of the one DetectorConfig that a folder run used; a record written
before the merge part kept only what its kind uses (``ios`` and ``soft_sigma`` for every merge of
the window grid) still resumes, and a real difference is still refused in one line."""

from __future__ import annotations

import json

import numpy as np

from slidewin.cli import main


def _run(tiny_conv, folder, out, *flags) -> int:
    # the ap preset merges by nms alone (display's nested merge records ios: the case below is nms)
    return main(["detect", str(folder), "--model", str(tiny_conv.path), "--out-dir", str(out), "--preset", "ap", *flags])


def test_an_older_record_of_the_merge_still_resumes(tiny_conv, tmp_path, capsys, save_rgb):
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(2):
        save_rgb(folder / f"{i}.jpg", np.full((96, 128, 3), 60 + 40 * i, np.uint8))
    out = tmp_path / "out"
    assert _run(tiny_conv, folder, out) == 0
    run = json.loads((out / "run.json").read_text())
    assert run["settings"]["merge"] == {"merge": "nms", "iou": 0.5}         # ios and sigma play no part in nms
    run["settings"]["merge"] |= {"ios": 0.6, "soft_sigma": 0.5}              # as the record was written before
    (out / "run.json").write_text(json.dumps(run))
    assert _run(tiny_conv, folder, out, "--resume") == 0
    capsys.readouterr()
    code = _run(tiny_conv, folder, out, "--resume", "--merge", "nested")
    err = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert code != 0 and len(err) == 1 and 'merge.merge "nms" -> "nested"' in err[0], err
