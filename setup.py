"""Package discovery only; everything else is in pyproject.toml.

Every subpackage of ``slidewin`` is found, never listed by hand, and ``export/`` ships as
``slidewin_export`` (a name ``[tool.setuptools.packages.find]`` cannot give a folder).
"""

from setuptools import find_packages, setup

setup(packages=[*find_packages(include=["slidewin", "slidewin.*"]), "slidewin_export"])
