"""One CLI vocabulary: --version, ``python -m slidewin``, --model everywhere, --out-image/--out-dir,
help texts a person can read, and `slidewin labels` for what --classes accepts."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

import slidewin
from slidewin.cli import build_parser, main


def test_version_needs_no_model(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out.strip() == f"slidewin {slidewin.__version__}"


def test_python_dash_m_slidewin_is_the_command(tmp_path):
    done = subprocess.run([sys.executable, "-m", "slidewin", "--version"], capture_output=True, text=True,
                          cwd=tmp_path, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == f"slidewin {slidewin.__version__}", done.stderr


def _subcommands():
    parser = build_parser()
    (sub,) = [a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"]
    return sub.choices


@pytest.mark.parametrize("command", ["classify", "detect", "compare", "evaluate", "labels", "demo"])
def test_help_texts_show_values_not_enum_reprs(command):
    text = _subcommands()[command].format_help()
    assert not re.search(r"\b[A-Z][A-Za-z]+\.[A-Z_]{2,}\b", text), text  # e.g. Merge.NMS
    if command == "classify":
        assert "how many labels" in text  # --top-k has a help line


def test_every_command_that_takes_one_model_calls_it_model():
    for name, parser in _subcommands().items():
        if name == "export":
            continue
        flags = {s for a in parser._actions for s in a.option_strings}
        assert "--model" in flags, name
        assert "--out" not in {s for a in parser._actions if a.help != "==SUPPRESS==" for s in a.option_strings}, name


def test_old_spellings_stay_accepted():
    args = build_parser().parse_args(["compare", "x.jpg", "--classifier", "m.onnx", "--out", "o.jpg"])
    assert str(args.model) == "m.onnx" and str(args.out_image) == "o.jpg"
    args = build_parser().parse_args(["evaluate", "--data", "d", "--model", "m.onnx", "--out", "r"])
    assert str(args.out_dir) == "r"


def test_labels_lists_classes_and_groups(effnet_onnx, capsys):
    assert main(["labels", "--model", str(effnet_onnx)]) == 0
    out = capsys.readouterr().out
    assert "1000 labels (imagenet-1k)" in out and re.search(r"^\s+281\s+tabby$", out, re.M)
    assert "preprocessing torch" in out
    assert main(["labels", "--model", str(effnet_onnx), "--groups"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^  cat: 281 tabby, 282 tiger cat", out, re.M)
    assert re.search(r"^  person: ImageNet-1k has no person class", out, re.M)


@pytest.mark.parametrize("classes, needle", [
    ("tabbby", "did you mean 'tabby'"),
    ("catt", "did you mean 'cat'"),
    ("person", "ImageNet-1k has no person class"),
    (",", "names no class"),
])
def test_unknown_classes_say_what_is_there(effnet_onnx, tmp_path, capsys, classes, needle):
    from conftest import COCO_MINI

    photo = sorted((COCO_MINI / "images").glob("*.jpg"))[0]
    code = main(["detect", str(photo), "--model", str(effnet_onnx), "--classes", classes])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and needle in err[0], err


def test_classify_and_detect_say_the_preprocessing_once(effnet_onnx, capsys):
    from conftest import COCO_MINI

    photo = sorted((COCO_MINI / "images").glob("*.jpg"))[0]
    assert main(["classify", str(photo), "--model", str(effnet_onnx), "--top-k", "2"]) == 0
    assert capsys.readouterr().out.count("preprocessing torch (RGB x/255") == 1
    assert main(["detect", str(photo), "--model", str(effnet_onnx), "--mode", "dense", "--max-levels", "1"]) == 0
    assert capsys.readouterr().out.count("preprocessing torch (RGB x/255") == 1
