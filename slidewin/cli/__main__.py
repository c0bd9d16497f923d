from slidewin.cli import entry

entry()
