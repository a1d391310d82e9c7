"""The label space of a classifier: which classes the training data defines (in id order, with
their names), the labels encoded as class ids or multi-hot targets, and per-class loss weights."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from .text_rows import TextRows, normalize_label


def is_multi_label(labels: list) -> bool:
    """Whether any row has a list of labels (multi-label data)."""
    return any(isinstance(y, list) for y in labels)


def _flat(labels: list) -> list:
    return [v for y in labels for v in (y if isinstance(y, list) else [y])]


def label_space(rows: TextRows, *, multi_label: bool, labels: Sequence | None, num_labels: int | None,
                 head: tuple[list, list] | None, name: str = "train_data") -> tuple[list, list]:
    """The classes in id order (the user's own label values) and their names (`id2label`).

    Args:
        rows: the training rows (their labels, and the data's label names if it has them).
        multi_label: one class or a list of classes per row.
        labels: the classes in id order, as the user gave them, or None.
        num_labels: the number of int classes 0..K-1, or None.
        head: (classes, names) of a model that already has a trained, named head, else None.
        name: the data's argument name, for error messages.

    Returns:
        (classes, names): the C labels in class-id order and their C names.

    Raises:
        ValueError: mixed int / str labels, labels outside `labels` / `num_labels` / the head's
            `id2label`, one class only, or a `num_labels` that contradicts the data.
    """
    values = _flat(rows.labels)
    kinds = {type(v) for v in values}
    if len(kinds) > 1:
        raise ValueError(f"{name}: labels mix ints and strings (e.g. {_example(values, int)!r} and "
                         f"{_example(values, str)!r}); expected one kind")
    seen = sorted(set(values), key=lambda v: (isinstance(v, str), v))
    is_int = kinds == {int}
    if labels is not None:
        classes = [normalize_label(v, "labels", i) for i, v in enumerate(labels)]
        if len(set(classes)) != len(classes):
            raise ValueError(f"labels: expected distinct labels, got {list(labels)!r}")
        names = ([str(rows.label_names[c]) for c in classes] if rows.label_names and all(
            isinstance(c, int) and 0 <= c < len(rows.label_names) for c in classes) else [str(c) for c in classes])
        where = "`labels`"
    elif head is not None:
        classes, names = head
        if not is_int:  # string data against a named head: match by name
            classes = list(names)
        where = "the model's id2label"
    elif is_int and (rows.label_names or num_labels):
        k = len(rows.label_names) if rows.label_names else num_labels
        classes = list(range(k))
        names = [str(n) for n in rows.label_names] if rows.label_names else [str(c) for c in classes]
        where = "the label names" if rows.label_names else "range(num_labels)"
    else:
        classes, names, where = seen, [str(c) for c in seen], None
    if where is not None:
        unknown = [v for v in seen if v not in set(classes)]
        if unknown:
            raise ValueError(f"{name}: labels {unknown[:10]!r} are not in {where} {classes[:20]!r}; "
                             + ("pass labels=[...] to train a new head over all labels" if head is not None
                                else "expected every label to be one of them"))
    if num_labels is not None and num_labels != len(classes):
        raise ValueError(f"num_labels: got {num_labels}, but the data's label set has {len(classes)} labels "
                         f"{classes[:20]!r}; drop num_labels or make them agree")
    if not multi_label and len(seen) < 2:
        raise ValueError(f"{name}: all {len(rows)} rows have the same label ({seen[0]!r}); a classifier needs at "
                         "least two classes in the training data")
    return classes, names


def _example(values: list, kind: type):
    return next(v for v in values if isinstance(v, kind))


def encode_labels(labels: list, classes: list, multi_label: bool, name: str) -> np.ndarray:
    """int64 [N] class ids, or float32 [N, C] multi-hot targets for multi-label data.

    Raises:
        ValueError: a label that is not one of `classes` (names `name`).
    """
    index = {c: i for i, c in enumerate(classes)}
    unknown = sorted({v for v in _flat(labels) if v not in index}, key=str)
    if unknown:
        raise ValueError(f"{name}: labels {unknown[:10]!r} are not among the trained classes {classes[:20]!r}")
    if not multi_label:
        return np.asarray([index[y] for y in labels], dtype=np.int64)
    out = np.zeros((len(labels), len(classes)), dtype=np.float32)
    for i, y in enumerate(labels):
        out[i, [index[v] for v in (y if isinstance(y, list) else [y])]] = 1.0
    return out


def class_weights_for(spec: Any, targets: np.ndarray, classes: list, multi_label: bool) -> torch.Tensor | None:
    """Per-class loss weights, float32 [C] (None when `spec` is None).

    Args:
        spec: None; "balanced": single-label n / (C * n_c) (scikit-learn's `compute_class_weight`,
            after King & Zeng, 2001), multi-label n_negative_c / n_positive_c (the `pos_weight`
            of `torch.nn.BCEWithLogitsLoss`); a dict {label: weight} (absent labels 1.0); or a
            sequence of C weights in class-id order. Classes with no training row get 1.0.
        targets: int64 [N] class ids, or float32 [N, C] multi-hot targets.

    Raises:
        ValueError: an unknown string, a dict key that is not a label, a sequence of the wrong
            length, or a weight that is not a positive finite number.
    """
    if spec is None:
        return None
    c = len(classes)
    if isinstance(spec, str):
        if spec != "balanced":
            raise ValueError(f"class_weights: expected 'balanced', a dict {{label: weight}} or {c} weights, got {spec!r}")
        if multi_label:
            pos = targets.sum(0)
            w = np.where(pos > 0, (len(targets) - pos) / np.maximum(pos, 1), 1.0)
        else:
            counts = np.bincount(targets, minlength=c)
            w = np.where(counts > 0, len(targets) / (c * np.maximum(counts, 1)), 1.0)
    elif isinstance(spec, Mapping):
        unknown = [k for k in spec if k not in set(classes)]
        if unknown:
            raise ValueError(f"class_weights: keys {unknown!r} are not labels of the data {classes[:20]!r}")
        w = np.asarray([float(spec.get(k, 1.0)) for k in classes])
    else:
        w = np.asarray(list(spec), dtype=np.float64)
        if w.shape != (c,):
            raise ValueError(f"class_weights: expected {c} weights (one per class, in the order {classes[:20]!r}), "
                             f"got {len(w)}")
    if not np.isfinite(w).all() or (w <= 0).any():
        raise ValueError(f"class_weights: expected positive finite weights, got {w.tolist()}")
    return torch.tensor(w, dtype=torch.float32)


def stratified_sample(targets: np.ndarray, per_class: int, *, seed: int = 0) -> np.ndarray:
    """Sorted int64 positions of at most `per_class` rows of every class (all rows of a smaller
    class), drawn without replacement (numpy seed `seed`). Multi-hot targets [N, C]: a random
    `per_class` x C rows (all when there are fewer).

    Raises:
        ValueError: per_class < 1.
    """
    if per_class < 1:
        raise ValueError(f"per_class: expected an int >= 1, got {per_class!r}")
    rng = np.random.default_rng(seed)
    if targets.ndim == 2:
        n = len(targets)
        return np.sort(rng.permutation(n)[:min(n, per_class * targets.shape[1])]).astype(np.int64)
    picks = [rng.permutation(np.flatnonzero(targets == c))[:per_class] for c in np.unique(targets)]
    return np.sort(np.concatenate(picks or [np.zeros(0, np.int64)])).astype(np.int64)


def class_counts(targets: np.ndarray, num_classes: int) -> np.ndarray:
    """Training rows per class, int64 [C] (for multi-hot targets [N, C]: rows with the class)."""
    if targets.ndim == 2:
        return targets.sum(0).astype(np.int64)
    return np.bincount(targets, minlength=num_classes).astype(np.int64)


def validation_split(targets: np.ndarray, *, fraction: float = 0.1, max_rows: int = 1000,
                     seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A stratified validation split: (train positions, validation positions), int64 arrays.

    Single-label: every class with at least 2 rows gives max(1, round(fraction * n_c)) rows
    (scaled down so the split holds at most `max_rows`, never below one row per such class); a
    class with a single row keeps it in training. Multi-label (targets [N, C]): a random
    `fraction` of the rows (at most `max_rows`, at least 1). The draw is fixed by `seed`.

    Args:
        targets: int64 [N] class ids, or float32 [N, C] multi-hot targets.
        fraction: share of each class held out, in (0, 1).
        max_rows: upper bound on the validation rows (int >= 1).
    """
    rng = np.random.default_rng(seed)
    n = len(targets)
    if targets.ndim == 2:
        take = max(1, min(int(round(fraction * n)), max_rows, n - 1))
        val = np.sort(rng.permutation(n)[:take])
        return np.setdiff1d(np.arange(n), val), val
    per_class = {c: rng.permutation(np.flatnonzero(targets == c)) for c in np.unique(targets)}
    want = {c: max(1, int(round(fraction * len(ix)))) for c, ix in per_class.items() if len(ix) >= 2}
    total = sum(want.values())
    if total > max_rows:
        scale = max_rows / total
        want = {c: max(1, int(v * scale)) for c, v in want.items()}
    val = np.sort(np.concatenate([per_class[c][:k] for c, k in want.items()] or [np.zeros(0, np.int64)]))
    return np.setdiff1d(np.arange(n), val), val.astype(np.int64)
