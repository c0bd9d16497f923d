"""Which engine a folder run uses, and the options of a Ray run: what the CLI needs to parse and
check its flags, without loading the engines (`slidewin.apps.folder.ray_engine` imports the folder
run machinery; a one-photo command needs none of it)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from slidewin.errors import SlidewinError

#: What a user without the extra is told to run.
RAY_INSTALL = "pip install 'slidewin[ray]'"


class Engine(StrEnum):
    """Where a folder run detects: in this process, or on the actors of a Ray cluster."""

    LOCAL = "local"
    RAY = "ray"


@dataclass(frozen=True)
class RayOptions:
    """The cluster and the actor pool of a Ray run.

    Attributes:
        address: the cluster to join (``ray start --head`` prints it; ``auto``: the one
            ``ray start`` made on this machine); None: ``RAY_ADDRESS`` if set (``ray job submit``
            sets it), else a new cluster on this machine for this run alone.
        workers: actors, each with one detector (None: as many as the cluster's CPUs, or GPUs,
            allow).
        cpus_per_worker: CPUs each actor reserves, and its ONNX Runtime threads.
        gpus_per_worker: GPUs each actor reserves (fractions share one GPU); with any, the
            actor's detector runs on CUDA.
    """

    address: str | None = None
    workers: int | None = None
    cpus_per_worker: int = 1
    gpus_per_worker: float = 0.0

    def __post_init__(self):
        if self.workers is not None and self.workers < 1:
            raise SlidewinError(f"--workers must be at least 1, got {self.workers}")
        if self.cpus_per_worker < 1:
            raise SlidewinError(f"--cpus-per-worker must be at least 1, got {self.cpus_per_worker}")
        if self.gpus_per_worker < 0:
            raise SlidewinError(f"--gpus-per-worker must be 0 or more, got {self.gpus_per_worker:g}")


def is_uri(source: str | Path) -> bool:
    """True for ``scheme://...`` sources (``s3://``, ``gs://``, ...), read through Ray's filesystems."""
    return "://" in str(source)
