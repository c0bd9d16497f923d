"""`Detections`: the one result type every detector returns and every tool consumes."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Box:
    """One detection, as iterating over `Detections` (or ``dets[i]``) gives it.

    Attributes:
        xyxy: (x1, y1, x2, y2) in image pixels.
        score: the detector's score.
        class_id: index into the detector's labels.
        label: the class name.
    """

    xyxy: tuple[float, float, float, float]
    score: float
    class_id: int
    label: str

    @property
    def xywh(self) -> tuple[float, float, float, float]:
        """(x, y, width, height): the top-left corner and size, as COCO writes boxes."""
        x1, y1, x2, y2 = self.xyxy
        return x1, y1, x2 - x1, y2 - y1

    def __repr__(self) -> str:
        # float32 values read back as float64 print as 0.9700000286102295: show what they hold.
        box = ", ".join(f"{v:.6g}" for v in self.xyxy)
        return f"Box(xyxy=({box}), score={self.score:.6g}, class_id={self.class_id}, label={self.label!r})"


@dataclass(frozen=True, eq=False)
class Detections:
    """Boxes, scores and class ids as parallel arrays, in original-image pixels.

    Attributes:
        xyxy: float32 (N, 4) boxes with ``0 <= x1 < x2 <= W`` and ``0 <= y1 < y2 <= H``.
        scores: float32 (N,).
        class_ids: int64 (N,) indices into ``labels``.
        labels: the label names ``class_ids`` index into (shared, not per box).

    Empty detections are zero-length arrays of the right dtypes, never ``None``. Indexing with a
    boolean mask, a slice or an index array returns a new `Detections`; an integer gives one
    `Box`, and so does iterating::

        confident = dets[dets.scores > 0.5]
        best = dets.sorted()[0]                  # Box(xyxy=(...), score=0.97, class_id=2, label='cat')
        for box in dets: print(box.label, box.score, box.xyxy)
    """

    xyxy: np.ndarray
    scores: np.ndarray
    class_ids: np.ndarray
    labels: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        xyxy = np.ascontiguousarray(self.xyxy, dtype=np.float32)
        if xyxy.size == 0:
            xyxy = xyxy.reshape(0, 4)
        scores = np.ascontiguousarray(self.scores, dtype=np.float32)
        class_ids = np.ascontiguousarray(self.class_ids, dtype=np.int64)
        if xyxy.ndim != 2 or xyxy.shape[1] != 4:
            raise ValueError(f"xyxy must have shape (N, 4), got {xyxy.shape}")
        n = xyxy.shape[0]
        if scores.shape != (n,):
            raise ValueError(f"scores must have shape ({n},) to match xyxy, got {scores.shape}")
        if class_ids.shape != (n,):
            raise ValueError(f"class_ids must have shape ({n},) to match xyxy, got {class_ids.shape}")
        if self.labels and n and (class_ids.min() < 0 or class_ids.max() >= len(self.labels)):
            raise ValueError(
                f"class_ids must lie in [0, {len(self.labels)}), got [{class_ids.min()}, {class_ids.max()}]"
            )
        object.__setattr__(self, "xyxy", xyxy)
        object.__setattr__(self, "scores", scores)
        object.__setattr__(self, "class_ids", class_ids)
        object.__setattr__(self, "labels", tuple(self.labels))

    @classmethod
    def empty(cls, labels: tuple[str, ...] | list[str] = ()) -> "Detections":
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64), tuple(labels))

    @classmethod
    def concatenate(cls, parts: list["Detections"], labels: tuple[str, ...] | None = None) -> "Detections":
        """Join several results that share one label set."""
        if labels is None:
            labels = parts[0].labels if parts else ()
        if not parts:
            return cls.empty(labels)
        return cls(
            np.concatenate([p.xyxy for p in parts]),
            np.concatenate([p.scores for p in parts]),
            np.concatenate([p.class_ids for p in parts]),
            labels,
        )

    def __len__(self) -> int:
        return self.xyxy.shape[0]

    def __getitem__(self, index) -> "Detections | Box":
        if isinstance(index, (int, np.integer)) and not isinstance(index, (bool, np.bool_)):
            return self._box(int(index))
        return Detections(self.xyxy[index], self.scores[index], self.class_ids[index], self.labels)

    def _box(self, i: int) -> Box:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"box index {i} out of range for {n} detection(s)")
        c = int(self.class_ids[i])
        return Box(tuple(float(v) for v in self.xyxy[i]), float(self.scores[i]), c,
                   self.labels[c] if self.labels else str(c))

    def __iter__(self) -> Iterator[Box]:
        return (self._box(i) for i in range(len(self)))

    def __repr__(self) -> str:
        """``Detections(3 boxes: cat 2, cup 1; scores 0.52-0.97)``: count, classes, score range."""
        n = len(self)
        if n == 0:
            return "Detections(0 boxes)"
        counts = Counter(self.label_names).most_common()
        classes = ", ".join(f"{name} {k}" for name, k in counts[:6])
        if len(counts) > 6:
            classes += f", +{len(counts) - 6} more classes"
        lo, hi = float(self.scores.min()), float(self.scores.max())
        span = f"score {hi:.2f}" if n == 1 else f"scores {lo:.2f}-{hi:.2f}"
        return f"Detections({n} box{'es' if n != 1 else ''}: {classes}; {span})"

    @property
    def xywh(self) -> np.ndarray:
        """float32 (N, 4) boxes as (x, y, width, height), COCO's convention."""
        out = self.xyxy.copy()
        out[:, 2:] -= self.xyxy[:, :2]
        return out

    @property
    def is_empty(self) -> bool:
        return len(self) == 0

    @property
    def label_names(self) -> list[str]:
        """The label of each box, in order."""
        return [self.labels[i] if self.labels else str(i) for i in self.class_ids.tolist()]

    def sorted(self) -> "Detections":
        """By descending score, ties broken by box then class so that the order is stable."""
        order = np.lexsort((self.class_ids, self.xyxy[:, 3], self.xyxy[:, 2], self.xyxy[:, 1],
                            self.xyxy[:, 0], -self.scores))
        return self[order]

    def merged(self, config, min_score: float | None = None) -> "Detections":
        """One box per object: these candidates merged as a `slidewin.core.merge.MergeConfig`
        says (``min_score``: the floor of ``soft-nms``, see `slidewin.core.merge.soft_merge`)."""
        from slidewin.core.merge import merge_with  # merge builds on Detections

        return merge_with(self, config, min_score)

    def to_records(self) -> list[dict]:
        """JSON-ready list of ``{"xyxy", "score", "class_id", "label"}``."""
        names = self.label_names
        return [
            {
                "xyxy": [round(float(v), 2) for v in box],
                "score": round(float(s), 5),
                "class_id": int(c),
                "label": name,
            }
            for box, s, c, name in zip(self.xyxy, self.scores, self.class_ids, names)
        ]

    def to_coco(self, image_id: int, category_ids: Mapping | None = None) -> list[dict]:
        """COCO *results* rows: ``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}``.

        Args:
            image_id: the image's id in the COCO dataset the rows are for.
            category_ids: COCO category id per class, keyed by label name or by class id; None
                for the standard COCO ids of labels that are COCO names (``--classes coco``,
                Faster R-CNN's labels), see `slidewin.io.result_formats.coco_category_ids`.

        Raises:
            SlidewinError: a label with no category id (one line, naming it).
        """
        from slidewin.io.result_formats import coco_rows

        return coco_rows(self, image_id, category_ids)

    def to_supervision(self):
        """This result as a ``supervision.Detections`` (class names in ``data["class_name"]``,
        what supervision's label annotators show).

        Raises:
            MissingDependencyError: supervision is not installed.
        """
        sv = _supervision()
        return sv.Detections(xyxy=self.xyxy.copy(), confidence=self.scores.copy(), class_id=self.class_ids.copy(),
                             data={"class_name": np.array(self.label_names, dtype=str)})

    @classmethod
    def from_supervision(cls, detections, labels: tuple[str, ...] | list[str] | None = None) -> "Detections":
        """A ``supervision.Detections`` as `Detections`.

        Args:
            detections: the supervision result; its ``class_id`` is required, a missing
                ``confidence`` (ground truth) reads as 1.0.
            labels: the names its class ids index into; by default they are rebuilt from
                ``data["class_name"]`` (ids without a name are named by their number).

        Raises:
            ValueError: it has no ``class_id``, or names one id two ways.
        """
        n = len(detections.xyxy)
        if detections.class_id is None:
            raise ValueError("a supervision Detections without class_id has no classes to convert")
        ids = np.asarray(detections.class_id, np.int64)
        scores = np.ones(n, np.float32) if detections.confidence is None else detections.confidence
        if labels is None:
            labels = _labels_from_names(ids, (getattr(detections, "data", None) or {}).get("class_name"))
        return cls(np.asarray(detections.xyxy, np.float32), scores, ids, tuple(labels))


def _labels_from_names(ids: np.ndarray, names) -> tuple[str, ...]:
    """The label list a result's per-box names imply: ``labels[id] = name``; ids with no name
    are their number as text."""
    if names is None or not len(ids):
        return ()
    if int(ids.min()) < 0:
        raise ValueError(f"class ids must be non-negative, got {int(ids.min())}")
    table = [str(i) for i in range(int(ids.max()) + 1)]
    seen: dict[int, str] = {}
    for i, name in zip(ids.tolist(), [str(v) for v in names]):
        if seen.setdefault(i, name) != name:
            raise ValueError(f"class id {i} is named both {seen[i]!r} and {name!r}")
        table[i] = name
    return tuple(table)


def _supervision():
    try:
        import supervision
    except ImportError:
        from slidewin.errors import MissingDependencyError

        raise MissingDependencyError("converting to and from supervision needs it: pip install supervision") from None
    return supervision
