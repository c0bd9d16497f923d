"""What a detector looks for: target classes as single classifier labels or label groups.

A target is a named set of classifier class ids; its score for a window is the sum of its
members' probabilities (COCO ``cat`` = ImageNet 281-285). Groups live in data files in the
package (``slidewin/data/*_groups.json``), not in code.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import numpy as np

from slidewin.errors import SlidewinError
from slidewin.core.contract import LabelSet

#: The packaged group file that maps COCO categories to ImageNet-1k classes; also the
#: ``--classes`` item that means "one target per COCO category".
COCO_GROUPS = "coco"
#: The ``--classes`` item that means "every label of the model".
ALL_LABELS = "all"
# ASCII digits only: str.isdigit() also accepts "²", which int() then refuses.
_INDEX_OR_RANGE = re.compile(r"([0-9]+)(?:-([0-9]+))?")


def class_items(spec: str | list[str] | None) -> list[str] | None:
    """The items of a ``--classes`` value: comma-separated (or a list), stripped, empty ones
    dropped; None stays None."""
    if spec is None:
        return None
    return [s.strip() for s in (spec.split(",") if isinstance(spec, str) else map(str, spec)) if s.strip()]


@lru_cache(maxsize=None)
def load_groups(name: str) -> dict[str, tuple[int, ...]]:
    """A packaged group file ``data/<name>_groups.json``: ``{"groups": {target: [ids...]}}``."""
    try:
        text = resources.files("slidewin").joinpath(f"data/{name}_groups.json").read_text()
    except FileNotFoundError:
        raise SlidewinError(f"no label-group file named {name!r}") from None
    return {k: tuple(int(i) for i in v) for k, v in json.loads(text)["groups"].items()}


def load_group_notes(name: str) -> dict[str, str]:
    """Why each category of a group file has no counterpart (``no_counterpart`` section)."""
    text = resources.files("slidewin").joinpath(f"data/{name}_groups.json").read_text()
    return dict(json.loads(text).get("no_counterpart", {}))


def _range_name(m: re.Match, labels: tuple[str, ...]) -> str:
    """The target name of an index (``281``) or range (``281-285``), checked before anything
    is allocated for it."""
    lo, hi = int(m[1]), int(m[2] or m[1])
    if hi < lo:
        raise SlidewinError(f"class range {m[0]!r} is empty (write the smaller index first)")
    if hi >= len(labels):
        raise SlidewinError(f"class index {hi} out of range (model has {len(labels)} labels: 0-{len(labels) - 1})")
    return labels[lo] if lo == hi else f"{labels[lo]}..{labels[hi]}"


@dataclass(frozen=True, eq=False)
class Targets:
    """Target classes over a classifier's labels.

    Attributes:
        names: one name per target (the labels of the resulting `Detections`).
        members: float32 (num_labels, num_targets) 0/1 membership matrix, or None when every
            classifier label is its own target (scores are then the probabilities as they are).
    """

    names: tuple[str, ...]
    members: np.ndarray | None

    def score(self, probs: np.ndarray) -> np.ndarray:
        """(B, num_labels) probabilities -> (B, num_targets) target scores: each target's
        members' probabilities summed."""
        return probs if self.members is None else probs @ self.members

    def score_top1(self, probs: np.ndarray) -> np.ndarray:
        """The tutorial's scoring: only the top-1 label counts, for the target it belongs to.

        Returns:
            (B, num_targets) zeros except, for each window whose top-1 label is a member of a
            target, that label's probability in that target's column.
        """
        top = probs.argmax(axis=1)
        top_p = probs[np.arange(len(probs)), top]
        out = np.zeros((len(probs), len(self.names)), np.float32)
        if self.members is None:
            out[np.arange(len(probs)), top] = top_p
            return out
        rows, cols = np.nonzero(self.members[top])
        out[rows, cols] = top_p[rows]
        return out

    @classmethod
    def all_labels(cls, labels: tuple[str, ...]) -> "Targets":
        return cls(tuple(labels), None)

    @classmethod
    def parse(cls, spec: str | list[str] | None, labels: tuple[str, ...],
              label_set: str = LabelSet.CUSTOM) -> "Targets":
        """Resolve a ``--classes`` value against a classifier's labels.

        Items (comma-separated or a list) are class indices (``281``), ranges (``281-285``),
        label names (``tabby``), the name of a label group (``cat``), or the name of a whole
        group file (``coco``: one target per group). ``None`` or ``all``: every label.
        """
        items = class_items(spec)
        if items is None or items == [ALL_LABELS]:
            return cls.all_labels(labels)
        if not items:
            raise SlidewinError(f"--classes {spec!r} names no class (see `slidewin labels --model M`)")
        groups: dict[str, tuple[int, ...]] = {}
        if label_set == LabelSet.IMAGENET_1K:
            groups = dict(load_groups(COCO_GROUPS))
        lower = {name.lower(): i for i, name in enumerate(labels)}
        names: list[str] = []
        columns: list = []
        for item in items:
            if item == COCO_GROUPS:
                if label_set != LabelSet.IMAGENET_1K:
                    raise SlidewinError("--classes coco needs an ImageNet-1k classifier")
                for g, ids in groups.items():
                    names.append(g)
                    columns.append(ids)
            elif (m := _INDEX_OR_RANGE.fullmatch(item)) is not None:
                names.append(_range_name(m, labels))
                columns.append(range(int(m[1]), int(m[2] or m[1]) + 1))
            elif item.lower() in groups:
                names.append(item.lower())
                columns.append(groups[item.lower()])
            elif item.lower() in lower:
                i = lower[item.lower()]
                names.append(labels[i])
                columns.append((i,))
            else:
                raise SlidewinError(unknown_class_message(item, labels, groups, label_set))
        members = np.zeros((len(labels), len(columns)), np.float32)
        for j, ids in enumerate(columns):
            members[list(ids), j] = 1.0
        return cls(tuple(names), members)


def unknown_class_message(item: str, labels: tuple[str, ...], groups: dict[str, tuple[int, ...]],
                          label_set: str = LabelSet.CUSTOM) -> str:
    """Why ``item`` names nothing, in one line: the COCO category this model has no class for,
    or the nearest label and group names (``did you mean ...``)."""
    import difflib

    key = item.lower()
    if label_set == LabelSet.IMAGENET_1K:
        note = load_group_notes(COCO_GROUPS).get(key)
        if note:
            return f"unknown class {item!r}: {note.rstrip('.')} (COCO category without a counterpart)"
    names = list(dict.fromkeys([*groups, *labels]))
    by_lower = {n.lower(): n for n in names}
    close = difflib.get_close_matches(key, list(by_lower), n=4, cutoff=0.7)
    close += [by_lower[n] for n in by_lower if key in n and by_lower[n] not in close][: max(0, 4 - len(close))]
    hint = f"; did you mean {', '.join(repr(by_lower.get(c, c)) for c in close)}?" if close else ""
    return (f"unknown class {item!r}: not an index, a label of the model or a group name{hint} "
            "(`slidewin labels --model M` lists them)")
