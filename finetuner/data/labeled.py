"""`LabeledData`: the one in-memory form every labeled format is converted to."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

FORMATS = ("class", "session", "pair", "triplet")


@dataclass
class LabeledData:
    """N labeled items, each with a group id and a relevance (see `finetuner.data.relation`).

    Args:
        items: N items, indexable: a numpy array [N, ...] (fastest: batches are sliced), a
            list of arrays, tensors, strings or any object the model's `collate_fn` accepts.
        groups: int64 array [N]: the class id (class format) or the session / pair / triplet id.
        relevance: float32 array [N] in [0, 1], or None for class format (every item 1).
            Session format: the query 1, a relevant match 1, an irrelevant match 0.
        format: one of "class", "session", "pair", "triplet" (where the data came from; the
            losses do not need it).
        class_names: for class format with string labels, `class_names[group]` is the label.

    Raises:
        ValueError: lengths differ, the format is unknown, or relevance is outside [0, 1].
    """

    items: Any
    groups: np.ndarray
    relevance: np.ndarray | None = None
    format: str = "class"
    class_names: list | None = field(default=None)

    def __post_init__(self) -> None:
        self.groups = np.asarray(self.groups, dtype=np.int64)
        if self.format not in FORMATS:
            raise ValueError(f"format: expected one of {FORMATS}, got {self.format!r}")
        if len(self.items) != len(self.groups):
            raise ValueError(
                f"items and labels differ in length: {len(self.items)} items, {len(self.groups)} labels"
            )
        if self.relevance is not None:
            self.relevance = np.asarray(self.relevance, dtype=np.float32)
            if self.relevance.shape != self.groups.shape:
                raise ValueError(
                    f"relevance: expected shape {self.groups.shape}, got {self.relevance.shape}"
                )
            if np.isnan(self.relevance).any() or (self.relevance < 0).any() or (self.relevance > 1).any():
                raise ValueError("relevance: expected values in [0, 1] (scores, or 1 / 0 for +1 / -1 labels)")

    def __len__(self) -> int:
        return len(self.groups)

    def labels(self, index: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
        """Labels of the items at `index` (all when None): int64 [n] for class format, else
        int64 [n, 2]: the group id and the relevance's float32 bit pattern, exact for every
        int64 id (`finetuner.data.relation.split_labels` reads them; `pack_labels` writes them)."""
        idx = np.arange(len(self)) if index is None else np.asarray(index, dtype=np.int64)
        if self.relevance is None:
            return self.groups[idx]
        rel = np.ascontiguousarray(self.relevance[idx], dtype=np.float32).view(np.int32).astype(np.int64)
        return np.stack([self.groups[idx], rel], axis=1)

    def take(self, index: Sequence[int] | np.ndarray) -> Any:
        """The items at `index`: a numpy array when `items` is one, else a list."""
        idx = np.asarray(index, dtype=np.int64)
        if isinstance(self.items, np.ndarray):
            return self.items[idx]
        return [self.items[i] for i in idx]

    def subset(self, index: Sequence[int] | np.ndarray) -> "LabeledData":
        """A new `LabeledData` with the items at `index`."""
        idx = np.asarray(index, dtype=np.int64)
        return LabeledData(
            items=self.take(idx),
            groups=self.groups[idx],
            relevance=None if self.relevance is None else self.relevance[idx],
            format=self.format,
            class_names=self.class_names,
        )

    @property
    def num_groups(self) -> int:
        return int(np.unique(self.groups).size)
