"""ImageNet-1k label names: read the packaged list, or regenerate it from torchvision."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

from slidewin.runtime.model_meta import LabelSet

IMAGENET1K_FILE = "imagenet1k_labels.json"
IMAGENET1K = LabelSet.IMAGENET_1K.value


def imagenet1k_labels() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names in class-index order, from ``slidewin/data``."""
    text = resources.files("slidewin").joinpath("data", IMAGENET1K_FILE).read_text(encoding="utf-8")
    labels = tuple(json.loads(text))
    if len(labels) != 1000:  # pragma: no cover - guards a hand-edited data file
        raise ValueError(f"{IMAGENET1K_FILE} holds {len(labels)} labels, expected 1000")
    return labels


def generate_imagenet1k_labels(out: Path | None = None) -> Path:
    """Write the label list from torchvision's bundled metadata (no network needed).

    Run once to (re)create ``slidewin/data/imagenet1k_labels.json``:
    ``python -c "from slidewin_export.labels import generate_imagenet1k_labels as g; g()"``.

    Args:
        out: target file; defaults to the file inside the installed ``slidewin`` package.

    Returns:
        The path written.
    """
    from torchvision.models import ResNet50_Weights

    categories = list(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])
    assert len(categories) == 1000
    if out is None:
        out = Path(str(resources.files("slidewin").joinpath("data", IMAGENET1K_FILE)))
    out.write_text(json.dumps(categories, indent=0, ensure_ascii=False) + "\n", encoding="utf-8")
    return out


def read_labels_file(path: Path) -> tuple[str, ...]:
    """One label per line; surrounding whitespace and blank lines are ignored.

    Raises:
        SlidewinError: the file cannot be read or holds no labels.
    """
    from slidewin.errors import SlidewinError

    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise SlidewinError(f"cannot read labels file: {getattr(e, 'strerror', None) or e}", path) from None
    labels = tuple(line.strip() for line in text.splitlines() if line.strip())
    if not labels:
        raise SlidewinError("labels file is empty (expected one label per line)", path)
    return labels
