"""``slidewin export`` is reached through the command registry (slidewin.cli.registry): slidewin
never imports slidewin_export at module level, and an install without it says what to install,
in one line, only when the command is used."""

import argparse
import subprocess
import sys

import pytest

from slidewin.cli.registry import ExternalCommand, add_external_commands

#: Run in a fresh interpreter in which slidewin_export cannot be imported (a wheel without it).
WITHOUT_EXPORT = "import sys\nsys.modules['slidewin_export'] = None\nfrom slidewin.cli import main\nsys.exit(main({argv!r}))"


def _without_export(argv: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", WITHOUT_EXPORT.format(argv=argv)], capture_output=True, text=True,
                          timeout=120)


def test_importing_slidewin_and_its_cli_loads_no_export_package():
    code = ("import sys, slidewin, slidewin.cli, slidewin.cli.commands, slidewin.cli.registry\n"
            "assert 'slidewin_export' not in sys.modules, 'slidewin_export imported'")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr


def test_help_lists_export_with_and_without_the_package():
    from slidewin.cli import build_parser

    assert "export" in build_parser().format_help()
    out = _without_export(["--help"])
    assert out.returncode == 0 and "export" in out.stdout and "slidewin[export]" in out.stdout


def test_export_without_the_package_is_one_line_naming_the_extra():
    out = _without_export(["export", "efficientnet-lite0", "--out", "m.onnx"])
    assert out.returncode == 6, out.stderr
    assert out.stderr.strip().splitlines() == [
        "slidewin: error: `slidewin export` needs the export extra, which is not installed: "
        "pip install 'slidewin[export]'"]


def test_other_commands_do_not_need_the_export_package(tmp_path):
    out = _without_export(["labels", "--model", str(tmp_path / "missing.onnx")])
    assert out.returncode != 0 and "slidewin[export]" not in out.stderr and "missing.onnx" in out.stderr


def test_export_with_the_package_is_its_own_parser():
    from slidewin.cli import build_parser

    args = build_parser().parse_args(["export", "efficientnet-lite0", "--out", "m.onnx"])
    assert args.export_model == "efficientnet-lite0" and callable(args.func)


def test_a_package_that_is_there_but_broken_is_not_hidden(tmp_path, monkeypatch):
    (tmp_path / "broken_plugin.py").write_text("import no_such_dependency_of_the_plugin\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    with pytest.raises(ModuleNotFoundError, match="no_such_dependency_of_the_plugin"):
        add_external_commands(sub, (ExternalCommand("x", "x", "broken_plugin:add", "x"),))
    add_external_commands(sub, (ExternalCommand("y", "y things", "no_such_plugin_package.cli:add", "y"),))
    assert parser.parse_args(["y", "a", "b"]).args == ["a", "b"]
