"""ImageNet-1k label names: read the packaged list, or regenerate it from torchvision."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

from slidewin.core.contract import LabelSet

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


MAX_LABELS_BYTES = 8 << 20  # 8 MiB: far above any real label list (21k ImageNet classes ~ 0.5 MiB)


def read_labels_file(path: Path) -> tuple[str, ...]:
    """One label per line; surrounding whitespace and blank lines are ignored.

    Only a regular file is read, and at most `MAX_LABELS_BYTES`: a FIFO, a device or a socket
    given as ``--labels`` is refused before it is opened (it would block or never end), and the
    file is opened non-blocking and checked again, so one swapped in meanwhile cannot hang either.

    Raises:
        SlidewinError: the file is missing, special, too big, unreadable, or holds no labels.
    """
    from slidewin.errors import SlidewinError
    from slidewin.io.files import read_small_file

    path = Path(path)
    data = read_small_file(path, MAX_LABELS_BYTES, "labels file")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise SlidewinError(f"labels file is not UTF-8 text (byte {e.start})", path) from None
    labels = tuple(line.strip() for line in text.splitlines() if line.strip())
    if not labels:
        raise SlidewinError("labels file is empty (expected one label per line)", path)
    return labels


def labels_for(num_classes: int, labels_file: Path | None, source: Path | str) -> tuple[tuple[str, ...], str]:
    """``(labels, label_set)`` for a model with ``num_classes`` outputs.

    A labels file must hold exactly one label per output; without one, a 1000-output model gets
    the ImageNet-1k names and any other count is refused.

    Raises:
        SlidewinError: counts differ, or no labels for a non-ImageNet model (one line).
    """
    from slidewin.errors import SlidewinError

    if labels_file is not None:
        labels = read_labels_file(Path(labels_file))
        if len(labels) != num_classes:
            raise SlidewinError(f"labels file has {len(labels)} labels but the model has {num_classes} outputs",
                                labels_file)
        return labels, LabelSet.CUSTOM.value
    if num_classes == 1000:
        return imagenet1k_labels(), IMAGENET1K
    raise SlidewinError(f"model has {num_classes} outputs, not ImageNet's 1000: pass --labels FILE "
                        "with one label per line", source)
