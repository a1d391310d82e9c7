"""Text rows for classifiers: read texts or text pairs and their labels from what users hold
(lists of tuples or dicts, DataFrames, `datasets.Dataset`, CSV / TSV / JSON(L) files,
`LabeledData`) into `TextRows`, checking every text and label on the way."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .formats import is_dataframe, is_hf_dataset, read_table
from .labeled import LabeledData

TEXT_KEYS = ("text", "sentence", "item", "content", "input", "x", "review", "document")
PAIR_KEYS = (("sentence1", "sentence2"), ("text", "text_pair"), ("text1", "text2"), ("a", "b"),
             ("question1", "question2"), ("premise", "hypothesis"), ("question", "sentence"))
LABEL_KEYS = ("label", "labels", "class", "y", "target")


@dataclass
class TextRows:
    """Texts (or text pairs) and their raw labels, as read from the user's data.

    Attributes:
        texts: N strings (the first sentence of a pair).
        pairs: N second sentences, or None for single sentences.
        labels: N labels (int or str; a list of them per row for multi-label data), or None.
        label_names: names of int labels 0..K-1 when the data carries them (a `ClassLabel`
            column, `LabeledData.class_names`), else None.
    """

    texts: list
    pairs: list | None = None
    labels: list | None = None
    label_names: list | None = None

    def __len__(self) -> int:
        return len(self.texts)

    def take(self, index) -> "TextRows":
        """The rows at `index` (a sequence of ints), in that order."""
        pick = lambda xs: None if xs is None else [xs[int(i)] for i in index]  # noqa: E731
        return TextRows(pick(self.texts), pick(self.pairs), pick(self.labels), self.label_names)


def to_text_rows(data: Any, name: str = "train_data", require_labels: bool = True) -> TextRows:
    """Read texts or text pairs, and their labels, from what users hold.

    Accepted (each row a single text or a pair; labels int or str, a list of them per row for
    multi-label data):

    - a list of tuples: `(text, label)` or `(text_a, text_b, label)`; without labels (for
      `predict`): strings, or `(text_a, text_b)` pairs;
    - a list of dicts, a pandas DataFrame, a `datasets.Dataset` (a `ClassLabel` label column
      gives the label names) or a .csv / .tsv / .jsonl / .json file, with a text column
      (`TEXT_KEYS`, e.g. "text" or "sentence") or a pair of columns (`PAIR_KEYS`, e.g.
      "sentence1" and "sentence2") and a label column (`LABEL_KEYS`, e.g. "label");
    - a tuple `(texts, labels)` of two equally long sequences;
    - a `LabeledData` of strings in class format, or in pair format (two items per group, the
      second one's relevance 0 / 1 is the label).

    Args:
        data: one of the above.
        name: the argument's name, for error messages ("train_data", "eval_data", "texts").
        require_labels: raise when there are no labels. False for prediction inputs: then a
            2-tuple is a (text_a, text_b) pair, a plain string one text, and labels are optional.

    Returns:
        `TextRows`.

    Raises:
        ValueError: empty data; a text that is missing, empty or not a string (a pair with a
            missing side); a missing label; a fractional label; columns that name no text.
        TypeError: a kind of data this function does not read.
    """
    if isinstance(data, TextRows):
        rows = data
    elif isinstance(data, LabeledData):
        rows = _from_labeled(data, name)
    elif isinstance(data, os.PathLike) or (isinstance(data, str) and (require_labels or _is_file(data))):
        df = read_table(Path(data), name)
        rows = _from_columns({c: list(df[c]) for c in df.columns}, name, require_labels)
    elif isinstance(data, str):  # predict("a single sentence")
        rows = TextRows([data])
    elif is_hf_dataset(data):
        rows = _from_columns({c: data[c] for c in data.column_names}, name, require_labels, _class_label_names(data))
    elif is_dataframe(data):
        rows = _from_columns({c: list(data[c]) for c in data.columns}, name, require_labels)
    elif (isinstance(data, tuple) and len(data) == 2 and not isinstance(data[0], str)
          and _is_column(data[0]) and _is_column(data[1]) and len(data[0]) == len(data[1])):
        rows = _from_columns({"text": list(data[0]), "label": list(data[1])}, name, require_labels)
    elif isinstance(data, tuple) and len(data) == 2 and all(isinstance(s, str) for s in data) and not require_labels:
        rows = TextRows([data[0]], [data[1]])  # predict(("sentence 1", "sentence 2"))
    elif isinstance(data, Sequence) or (hasattr(data, "__iter__") and not isinstance(data, Mapping)):
        rows = _from_rows(list(data), name, require_labels)
    else:
        raise TypeError(f"{name}: expected a list of (text, label) / (text_a, text_b, label) tuples or dicts, a "
                        f"DataFrame, a datasets.Dataset, a file path or LabeledData, got {type(data).__name__}")
    if len(rows) == 0:
        raise ValueError(f"{name}: the data is empty; expected at least one text")
    for i, t in enumerate(rows.texts):
        _check_text(t, name, i, "text" if rows.pairs is None else "first sentence")
    if rows.pairs is not None:
        for i, t in enumerate(rows.pairs):
            _check_text(t, name, i, "second sentence")
    if rows.labels is not None:
        rows.labels = [normalize_label(y, name, i) for i, y in enumerate(rows.labels)]
    elif require_labels:
        raise ValueError(f"{name}: no labels found; expected a label per row ((text, label) tuples or a "
                         f"column named one of {LABEL_KEYS})")
    return rows


def _is_file(s: str) -> bool:
    return len(s) < 4096 and "\n" not in s and Path(s).suffix.lower() in (".csv", ".tsv", ".jsonl", ".json") and Path(s).is_file()


def _is_column(x) -> bool:
    return isinstance(x, (list, np.ndarray)) or type(x).__name__ == "Series"


def _class_label_names(ds) -> list | None:
    for key in LABEL_KEYS:
        feature = ds.features.get(key) if key in ds.column_names else None
        if feature is not None and type(feature).__name__ == "ClassLabel":
            return list(feature.names)
    return None


def _from_columns(cols: dict, name: str, require_labels: bool, label_names: list | None = None) -> TextRows:
    label_key = next((k for k in LABEL_KEYS if k in cols), None)
    pair = next((p for p in PAIR_KEYS if p[0] in cols and p[1] in cols), None)
    labels = list(cols[label_key]) if label_key else None
    if pair is not None:
        return TextRows(list(cols[pair[0]]), list(cols[pair[1]]), labels, label_names)
    text_key = next((k for k in TEXT_KEYS if k in cols), None)
    if text_key is None:
        rest = [k for k in cols if k != label_key and k not in ("idx", "id")]
        if len(rest) != 1:
            raise ValueError(f"{name}: cannot tell the text column(s) among {sorted(cols)}; expected a column named "
                             f"one of {TEXT_KEYS}, or a pair of columns such as {PAIR_KEYS[:3]}")
        text_key = rest[0]
    return TextRows(list(cols[text_key]), None, labels, label_names)


def _from_rows(rows: list, name: str, require_labels: bool) -> TextRows:
    if not rows:
        return TextRows([])
    first = rows[0]
    if isinstance(first, Mapping):
        keys = list(first)
        for i, r in enumerate(rows):
            if not isinstance(r, Mapping) or list(r) != keys:
                raise ValueError(f"{name}: row {i} is not a dict with the keys of row 0 {keys}")
        return _from_columns({k: [r[k] for r in rows] for k in keys}, name, require_labels)
    if isinstance(first, str) and not require_labels:
        return TextRows(rows)
    if not isinstance(first, (tuple, list)) or len(first) not in (2, 3):
        raise ValueError(f"{name}: row 0 is {first!r}; expected (text, label) or (text_a, text_b, label)"
                         + ("" if require_labels else ", a string or a (text_a, text_b) pair"))
    width = len(first)
    for i, r in enumerate(rows):
        if not isinstance(r, (tuple, list)) or len(r) != width:
            raise ValueError(f"{name}: row {i} is {r!r}; expected a tuple of length {width} like row 0")
    if width == 3:
        return TextRows([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows])
    if require_labels:
        return TextRows([r[0] for r in rows], None, [r[1] for r in rows])
    return TextRows([r[0] for r in rows], [r[1] for r in rows])  # unlabelled pairs, for predict


def _from_labeled(data: LabeledData, name: str) -> TextRows:
    if data.format == "class":
        names = data.class_names
        if names is not None:  # string labels were turned into ids: give the strings back
            return TextRows(list(data.items), None, [names[g] for g in data.groups])
        return TextRows(list(data.items), None, [int(g) for g in data.groups])
    if data.format == "pair":
        order = np.argsort(data.groups, kind="stable")
        groups = data.groups[order]
        if len(groups) % 2 or (groups[0::2] != groups[1::2]).any():
            raise ValueError(f"{name}: pair-format LabeledData must hold exactly two items per pair")
        items = data.take(order)
        rel = data.relevance[order][1::2]
        if not np.isin(rel, (0.0, 1.0)).all():
            raise ValueError(f"{name}: pair scores must be 0 or 1 to be class labels, got e.g. "
                             f"{rel[~np.isin(rel, (0.0, 1.0))][:3].tolist()}")
        return TextRows(list(items[0::2]), list(items[1::2]), [int(r) for r in rel])
    raise ValueError(f"{name}: LabeledData in {data.format!r} format has no class label per text; "
                     "expected class format (text, label) or pair format (text_a, text_b, 0/1)")


def _check_text(t, name: str, i: int, what: str) -> None:
    if t is None or (isinstance(t, float) and math.isnan(t)) or (isinstance(t, str) and not t.strip()):
        raise ValueError(f"{name}: row {i} has no {what} (got {t!r}); every "
                         f"{'pair needs both sentences' if 'sentence' in what else 'row needs a non-empty text'}")
    if not isinstance(t, str):
        raise ValueError(f"{name}: row {i}: the {what} is a {type(t).__name__} ({t!r}); expected a string")


def normalize_label(y: Any, name: str, i: int) -> int | str | list:
    """A label as a plain int or str; a list of them for a multi-label row.

    Raises:
        ValueError: a missing, empty or fractional label, or one that is neither int nor str
            (names `name` and row `i`).
    """
    if isinstance(y, (list, tuple, set, frozenset, np.ndarray)):
        return [normalize_label(v, name, i) for v in (sorted(y, key=str) if isinstance(y, (set, frozenset)) else y)]
    if isinstance(y, (bool, np.bool_, int, np.integer)):
        return int(y)
    if isinstance(y, (float, np.floating)):
        if math.isnan(y):
            raise ValueError(f"{name}: row {i} has no label; every training row needs one")
        if float(y).is_integer():
            return int(y)
        raise ValueError(f"{name}: row {i} has label {y}; expected an int or string class label (a fractional "
                         "score is a regression target, which this recipe does not train)")
    if isinstance(y, str):
        if not y.strip():
            raise ValueError(f"{name}: row {i} has an empty label")
        return y
    if y is None:
        raise ValueError(f"{name}: row {i} has no label; every training row needs one")
    raise ValueError(f"{name}: row {i} has a label of type {type(y).__name__} ({y!r}); expected an int or a string")
