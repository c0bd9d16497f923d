"""Commands that live in other packages, named here and found when the parser is built.

``slidewin export`` is the ``slidewin_export`` package (the ``export`` extra, with TensorFlow
and torch behind it). slidewin only names where the command is (`COMMANDS`) and never imports
that package at module level. When it is not installed, the command is still listed by
``slidewin --help``, and using it says in one line what to install.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class ExternalCommand:
    """A sub-command that another package adds to the ``slidewin`` parser.

    Attributes:
        name: the sub-command (``export``).
        help: its line in ``slidewin --help`` when the package is missing (the package's own
            parser gives it otherwise).
        target: ``"module:function"``; the function takes the ``add_subparsers()`` object and
            adds the sub-command, which sets ``func(args) -> int`` (the exit code).
        extra: the pip extra that installs the package.
    """

    name: str
    help: str
    target: str
    extra: str

    @property
    def install_hint(self) -> str:
        return f"pip install 'slidewin[{self.extra}]'"


COMMANDS: tuple[ExternalCommand, ...] = (
    ExternalCommand("export", "export a classifier to a self-describing ONNX model (needs slidewin[export])",
                    "slidewin_export.cli:add_export_parser", "export"),
)


def add_external_commands(subparsers, commands: tuple[ExternalCommand, ...] = COMMANDS) -> None:
    """Add each of ``commands`` to ``subparsers``: its package's own parser, or, when that package
    is not installed, a stand-in that refuses in one line naming the extra to install."""
    for command in commands:
        add = _adder(command)
        if add is None:
            _add_missing(subparsers, command)
        else:
            add(subparsers)


def _adder(command: ExternalCommand) -> Callable | None:
    """The function that adds ``command``'s parser, or None when its package is not installed.

    A package that is there but fails to import (one of *its* dependencies missing) is not
    hidden: that error propagates.
    """
    module, _, attr = command.target.partition(":")
    package = module.split(".")[0]
    try:
        loaded = importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name in (package, module):
            return None
        raise
    return getattr(loaded, attr)


def _add_missing(subparsers, command: ExternalCommand) -> None:
    p = subparsers.add_parser(command.name, help=command.help,
                              description=f"{command.help}. Not installed: {command.install_hint}.")
    p.add_argument("args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    p.set_defaults(func=lambda args: _refuse(command))


def _refuse(command: ExternalCommand) -> int:
    from slidewin.errors import MissingDependencyError

    raise MissingDependencyError(f"`slidewin {command.name}` needs the {command.extra} extra, which is not "
                                 f"installed: {command.install_hint}")
