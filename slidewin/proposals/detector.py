"""The old home of the proposal detector's settings and class, kept for code that imports them
from here: both now live in `slidewin.pipeline`, above this package, and are imported on first use.

- ``ProposalConfig``: `slidewin.pipeline.config.ProposalConfig`, a `DetectorConfig` whose regions
  are selective search (the one config, in three parts: regions, scoring, merge);
- ``ProposalDetector``: `slidewin.pipeline.proposal.ProposalDetector`, a `ClassifierDetector`.
"""

from __future__ import annotations

_MOVED = {"ProposalConfig": "slidewin.pipeline.config", "ProposalDetector": "slidewin.pipeline.proposal"}


def __getattr__(name: str):
    if name in _MOVED:
        from importlib import import_module

        return getattr(import_module(_MOVED[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
