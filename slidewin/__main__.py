"""``python -m slidewin ...``: the same as the ``slidewin`` command."""

from slidewin.cli import entry

entry()
