"""``detect``'s presets and defaults: ``--preset display|ap`` resolve to the library's presets,
every flag given changes them, ``--classes`` defaults by the model's labels, and the header line
says which preset ran."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from slidewin.cli import build_parser, main
from slidewin.cli.options import FLAGS, detect_config
from slidewin.core.merge import Merge
from slidewin.pipeline.config import FIELDS, Preset, preset

PHOTO = sorted((Path(__file__).parents[1] / "data" / "coco-mini" / "images").glob("*.jpg"))[0]


def _args(*flags: str):
    return build_parser().parse_args(["detect", "photo.jpg", "--model", "m.onnx", *flags])


@pytest.mark.parametrize("flags, name, method", [
    ((), Preset.DISPLAY, "windows"),                                    # one picture: display
    (("--out-dir", "out"), Preset.DISPLAY, "windows"),                  # a folder run: the same boxes as one photo
    (("--preset", "ap"), Preset.AP, "windows"),
    (("--preset", "ap", "--out-dir", "out"), Preset.AP, "windows"),
    (("--proposals", "selective-search-single"), Preset.DISPLAY, "selective-search-single"),
    (("--proposals", "selective-search-fast", "--preset", "ap"), Preset.AP, "selective-search-fast"),
])
def test_presets_resolve_to_the_library_presets(flags, name, method):
    assert detect_config(_args(*flags)) == preset(name, method)


#: flag and value -> the value its part holds afterwards (the flags of `FLAGS`, one each)
GIVEN = {
    "--window": (["160x120"], ((120, 160),)), "--reference-side": (["800"], 800), "--stride": (["64"], 64.0),
    "--scale": (["2"], 2.0), "--max-levels": (["2"], 2), "--mode": (["patch"], "patch"),
    "--dense-tile": (["0"], 0), "--batch-size": (["8"], 8), "--min-score": (["0.3"], 0.3), "--iou": (["0.4"], 0.4),
    "--merge": (["vote"], Merge.VOTE), "--max-proposals": (["50"], 50), "--min-proposal-size": (["8"], 8.0),
    "--proposal-scoring": (["crops"], "crops"), "--context": (["0.2"], 0.2), "--contrast": (["1"], 1.0),
}
SEARCH_FLAGS = {"--max-proposals", "--min-proposal-size", "--proposal-scoring", "--context", "--contrast"}


def test_every_flag_is_in_the_table():
    assert {flag for flag, _, _ in FLAGS.values()} == set(GIVEN)


@pytest.mark.parametrize("preset_name", ["display", "ap"])
@pytest.mark.parametrize("flag", sorted(GIVEN))
def test_an_explicit_flag_overrides_the_preset_in_its_part(flag, preset_name):
    values, want = GIVEN[flag]
    regions = ["--proposals", "selective-search-single"] if flag in SEARCH_FLAGS else []
    args = _args("--preset", preset_name, *regions, flag, *values)
    config = detect_config(args)
    dest = next(d for d, (f, _, _) in FLAGS.items() if f == flag and d != "input_window")
    part, field = FIELDS[FLAGS[dest][1]]
    assert getattr(getattr(config, part), field) == want
    base = preset(preset_name, regions[1] if regions else "windows")
    assert config == base.updated(**{FLAGS[dest][1]: getattr(getattr(config, part), field),
                                     **({"reference_side": None} if flag == "--window" else {})})


def test_classes_default_to_coco_for_an_imagenet_model_and_every_label_otherwise(effnet_onnx, tiny_conv, capsys):
    from slidewin.pipeline.factory import build_detector, default_classes

    imagenet = build_detector(effnet_onnx, classes=default_classes, device="cpu")
    custom = build_detector(tiny_conv.path, classes=default_classes, device="cpu")
    coco = build_detector(effnet_onnx, classes="coco", device="cpu")
    assert imagenet.labels == coco.labels and 0 < len(imagenet.labels) < 1000
    assert custom.labels == tiny_conv.labels == ("a", "b", "c", "d")
    assert default_classes(imagenet.meta) == "coco" and default_classes(custom.meta) is None
    help_text = build_parser()._subparsers._group_actions[0].choices["detect"].format_help()
    assert "ImageNet-1k" in " ".join(help_text.split()) and "every label for any other model" in " ".join(help_text.split())


def test_cli_detect_looks_for_the_model_s_default_classes(effnet_onnx, tiny_conv, tmp_path, capsys, save_rgb):
    from slidewin.core.targets import COCO_GROUPS, load_groups

    fast = ["--window", "224", "--max-levels", "1", "--min-score", "0.05", "--merge", "nms"]
    out = tmp_path / "d.json"
    assert main(["detect", str(PHOTO), "--model", str(effnet_onnx), "--json", str(out), *fast]) == 0
    labels = {d["label"] for d in json.loads(out.read_text())["detections"]}
    assert labels and labels <= set(load_groups(COCO_GROUPS))          # no 'nematode' on a COCO photo
    image = save_rgb(tmp_path / "grey.jpg", np.full((96, 128, 3), 90, np.uint8))
    assert main(["detect", str(image), "--model", str(tiny_conv.path), "--json", str(out), "--min-score", "0"]) == 0
    assert {d["label"] for d in json.loads(out.read_text())["detections"]} <= {"a", "b", "c", "d"}
    capsys.readouterr()


@pytest.mark.parametrize("flags, words", [
    ((), "preset display"),
    (("--preset", "ap"), "preset ap"),
    (("--min-score", "0.1", "--merge", "nms"), "preset display, changed by --min-score, --merge"),
])
def test_the_header_line_names_the_preset(tiny_conv, tmp_path, capsys, save_rgb, flags, words):
    image = save_rgb(tmp_path / "grey.jpg", np.full((96, 128, 3), 90, np.uint8))
    assert main(["detect", str(image), "--model", str(tiny_conv.path), *flags]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith("model: tinyconv") and first.endswith(words)


def test_a_folder_run_says_which_preset_it_ran(tiny_conv, tmp_path, capsys, save_rgb):
    (tmp_path / "in").mkdir()
    save_rgb(tmp_path / "in" / "a.jpg", np.full((96, 128, 3), 90, np.uint8))
    assert main(["detect", str(tmp_path / "in"), "--model", str(tiny_conv.path), "--out-dir", str(tmp_path / "o")]) == 0
    assert "; preset display" in capsys.readouterr().err  # the same default as one image
    assert main(["detect", str(tmp_path / "in"), "--model", str(tiny_conv.path), "--out-dir", str(tmp_path / "o2"),
                 "--preset", "ap"]) == 0
    assert "; preset ap" in capsys.readouterr().err
