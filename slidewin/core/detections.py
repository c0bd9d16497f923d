"""`Detections`: the one result type every detector returns and every tool consumes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, eq=False)
class Detections:
    """Boxes, scores and class ids as parallel arrays, in original-image pixels.

    Attributes:
        xyxy: float32 (N, 4) boxes with ``0 <= x1 < x2 <= W`` and ``0 <= y1 < y2 <= H``.
        scores: float32 (N,).
        class_ids: int64 (N,) indices into ``labels``.
        labels: the label names ``class_ids`` index into (shared, not per box).

    Empty detections are zero-length arrays of the right dtypes, never ``None``. Indexing with a
    boolean mask, a slice or an index array returns a new `Detections`::

        confident = dets[dets.scores > 0.5]
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

    def __getitem__(self, index) -> "Detections":
        if isinstance(index, (int, np.integer)):
            index = [index]
        return Detections(self.xyxy[index], self.scores[index], self.class_ids[index], self.labels)

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
