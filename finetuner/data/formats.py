"""Turn what users hold into `LabeledData`: lists of tuples or dicts, numpy `(X, y)`, pandas
DataFrames, `datasets.Dataset`, CSV and JSONL files (read by `finetuner.data.readers`).

The four labeled formats and how each row may look:

| format  | tuple                         | dict keys                                               |
|---------|-------------------------------|---------------------------------------------------------|
| class   | (item, label)  label int/str  | {"item"/"text"/"image": x, "label"/"class": y}          |
| pair    | (a, b, score)  score in [0,1] | {"a"/"sentence1", "b"/"sentence2", "score"/"label"};    |
|         |                               | {"anchor", "positive"} (score 1)                        |
| triplet | (anchor, positive, negative)  | {"anchor", "positive", "negative"}                      |
| session | (query, [(match, +1/-1), ..]) | {"query", "matches": [(m, +1/-1) or {"item", "label"}]} |
|         | (query, [positives], [negatives]) | or {"query", "positives": [...], "negatives": [...]} |
|         | (query, [positives])          |                                                         |
|         | (query, positive, [negatives])|                                                         |
|         | (query, positive, negative_1, negative_2, ...) (4 or more texts)                       |

Query -> corpus data also comes as `RetrievalData` or a BEIR folder (corpus.jsonl, queries.jsonl,
qrels/train.tsv; `finetuner.data.retrieval`): each query of the split with its relevant
documents as positives and its judged non-relevant ones as negatives (session format).

A 2-tuple whose label is a string is taken as class format when labels repeat (fewer distinct
labels than half the rows), else as an (anchor, positive) pair: pass `format=` to decide.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .labeled import FORMATS, LabeledData
from .readers import RowError, is_dataframe, is_hf_dataset, locate, read_table
from .retrieval import RetrievalData, beir_eval_split, is_beir_folder, load_beir

ITEM_KEYS = ("item", "text", "image", "x", "input", "content", "sentence")
LABEL_KEYS = ("label", "class", "y", "target")
PAIR_KEYS = (("a", "b"), ("sentence1", "sentence2"), ("text1", "text2"), ("query", "document"))
SCORE_KEYS = ("score", "label", "similarity", "relevance")


def to_labeled(data: Any, format: str | None = None, name: str = "train_data") -> LabeledData:
    """Convert `data` to `LabeledData`, detecting the format unless `format` is given.

    Args:
        data: a `LabeledData`; a tuple `(X, y)` of numpy arrays (class format); a pandas
            DataFrame; a `datasets.Dataset`; a path to a .csv / .tsv / .jsonl / .json file; a
            `RetrievalData` or a BEIR folder (its "train" qrels; session format); or a
            sequence of tuples or dicts in one of the formats of this module's table.
        format: "class", "pair", "triplet" or "session"; None detects it from the first row.
        name: the argument's name, used in error messages ("train_data" or "eval_data").

    Returns:
        `LabeledData`.

    Raises:
        ValueError: empty data, rows of mixed formats, a missing label, scores outside [0, 1],
            an unknown format; each message names `name` and the offending row: for a file
            the file and its line (`readers.locate`), for a DataFrame or a `datasets.Dataset`
            its row.
        TypeError: a kind of data this function does not read.
    """
    if format is not None and format not in FORMATS:
        raise ValueError(f"format: expected one of {FORMATS} or None, got {format!r}")
    if isinstance(data, LabeledData):
        out = data
    elif isinstance(data, RetrievalData) or is_beir_folder(data) or (
            isinstance(data, (str, os.PathLike)) and Path(data).is_dir()):  # a folder: BEIR's layout, else its error
        retrieval = data if isinstance(data, RetrievalData) else load_beir(data, "train", name)
        rows = retrieval.to_rows()
        if not rows:
            raise ValueError(f"{name}: no query of {retrieval!r} has a relevant document (grade >= 1); "
                             "expected at least one to train on")
        out = _from_rows(rows, "session", name)
    else:
        if isinstance(data, (str, os.PathLike)):
            data = read_table(Path(data), name)  # a frame that knows its file and lines, for the messages
        try:
            out = _convert(data, format, name)
        except RowError as e:
            raise locate(e, data) from e
    if len(out) == 0:
        raise ValueError(f"{name}: the data is empty; expected at least two labeled items")
    return out


def to_eval_data(data: Any, name: str = "eval_data") -> LabeledData | RetrievalData:
    """Eval data as `fit` and `evaluate` score it: `RetrievalData` as it is; a BEIR folder as
    its "test" split (else "dev"), both scored query -> corpus; anything else through
    `to_labeled` (each item against the others).

    Raises:
        ValueError / TypeError: as `to_labeled` and `finetuner.data.retrieval.load_beir`.
    """
    if isinstance(data, RetrievalData):
        return data
    if is_beir_folder(data):
        return load_beir(data, beir_eval_split(data, name), name)
    return to_labeled(data, None, name)


def _convert(data: Any, format: str | None, name: str) -> LabeledData:
    if _is_xy(data):
        return _from_xy(data[0], data[1], name)
    if is_dataframe(data):
        return _from_frame(data, format, name)
    if is_hf_dataset(data):
        return _from_frame(data.to_pandas(), format, name)
    if isinstance(data, Sequence) or hasattr(data, "__iter__"):
        return _from_rows(list(data), format, name)
    raise TypeError(f"{name}: expected a list of tuples or dicts, (X, y) arrays, a DataFrame, a "
                    f"datasets.Dataset or a file path, got {type(data).__name__}")


# ---- detection helpers -----------------------------------------------------------------
def _is_xy(data) -> bool:
    return (isinstance(data, tuple) and len(data) == 2 and hasattr(data[0], "shape")
            and hasattr(data[1], "shape") and getattr(data[1], "ndim", 0) == 1)


def _is_missing(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _is_int_label(v) -> bool:
    return isinstance(v, (int, np.integer, bool, np.bool_)) or (isinstance(v, float) and float(v).is_integer())


def _is_number(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)


def _stack_items(items: list) -> Any:
    """Stack equal-shape numeric arrays into one array (batches are then one slice); else keep a list."""
    first = items[0]
    if isinstance(first, np.ndarray) and first.dtype.kind in "fiub":
        shape = first.shape
        if all(isinstance(x, np.ndarray) and x.shape == shape for x in items):
            arr = np.stack(items)
            return arr.astype(np.float32) if arr.dtype.kind == "f" else arr
    if hasattr(first, "numpy") and hasattr(first, "shape") and first.__class__.__module__.startswith("torch"):
        shape = first.shape
        if all(x.shape == shape for x in items):
            arr = np.stack([x.detach().cpu().numpy() for x in items])
            return arr.astype(np.float32) if arr.dtype.kind == "f" else arr
    return items


# ---- builders ----------------------------------------------------------------------------
def _class_data(items: list, labels: list, name: str) -> LabeledData:
    for i, y in enumerate(labels):
        if _is_missing(y):
            raise RowError(name, i, "has no label; every item of class format needs a class label")
    if all(_is_int_label(y) for y in labels):
        groups, names = np.asarray([int(y) for y in labels], dtype=np.int64), None
    else:
        keys = [str(y) for y in labels]
        names = sorted(set(keys))
        index = {k: i for i, k in enumerate(names)}
        groups = np.asarray([index[k] for k in keys], dtype=np.int64)
    items = items if isinstance(items, np.ndarray) else _stack_items(items)
    return LabeledData(items, groups, None, "class", names)


def _grouped(rows: list[list[tuple[Any, float]]], fmt: str) -> LabeledData:
    """rows: per group, its (item, relevance) members; the first member is the reference."""
    items, groups, rel = [], [], []
    for g, members in enumerate(rows):
        for item, r in members:
            items.append(item)
            groups.append(g)
            rel.append(r)
    return LabeledData(_stack_items(items), np.asarray(groups), np.asarray(rel, dtype=np.float32), fmt)


def _score(v, name: str, i: int) -> float:
    if _is_missing(v):
        raise RowError(name, i, "has no score; pair format needs a score in [0, 1]")
    s = float(v)
    if s == -1.0:  # +1 / -1 labels as in session format
        return 0.0
    if not 0.0 <= s <= 1.0:
        raise RowError(name, i, f"has score {s}; expected a score in [0, 1] (or +1/-1): rescale scores such as "
                       "STS's 0-5 first")
    return s


def _relevance(v, name: str, i: int) -> float:
    if _is_missing(v):
        raise RowError(name, i, "has a match without a label; expected +1 (relevant) or -1 (irrelevant)")
    s = float(v)
    if s in (1.0, -1.0, 0.0):
        return 1.0 if s == 1.0 else 0.0
    raise RowError(name, i, f"has a match labelled {v!r}; expected +1 (relevant) or -1 (irrelevant)")


def _from_xy(X, y, name: str) -> LabeledData:
    if len(X) != len(y):
        raise ValueError(f"{name}: X has {len(X)} rows but y has {len(y)} labels")
    X = np.asarray(X)
    if X.dtype.kind == "f":
        X = X.astype(np.float32, copy=False)
    return _class_data(list(X) if X.dtype == object else X, list(np.asarray(y).tolist()), name)


def _row_format(row, name: str, i: int) -> str:
    if isinstance(row, Mapping):
        keys = set(row)
        if "query" in keys and keys & {"matches", "positives", "negatives"}:
            return "session"
        if {"anchor", "positive", "negative"} <= keys:
            return "triplet"
        if {"anchor", "positive"} <= keys or any(set(p) <= keys for p in PAIR_KEYS):
            return "pair"
        if keys & set(LABEL_KEYS):
            return "class"
        raise RowError(name, i, f"has keys {sorted(keys)}; expected the keys of one format: class {{item, label}}, "
                       "pair {a, b, score}, triplet {anchor, positive, negative}, session {query, matches}")
    if isinstance(row, (tuple, list)):
        if len(row) == 2 and isinstance(row[1], (list, tuple)) and row[1] and isinstance(row[1][0], (tuple, list, Mapping)):
            return "session"
        if len(row) in (2, 3) and all(_is_text_list(x) for x in row[1:]) and (len(row) == 3 or row[1]):
            return "session"  # (query, [positives][, [negatives]])
        if len(row) == 3 and isinstance(row[1], str) and _is_text_list(row[2]):
            return "session"  # (query, positive, [negatives])
        if len(row) == 2:
            return "class"
        if len(row) == 3:
            return "pair" if _is_number(row[2]) else "triplet"
        if len(row) > 3 and all(isinstance(x, str) for x in row):
            return "session"  # (query, positive, negative_1, ..., negative_n)
    raise RowError(name, i, f"is a {type(row).__name__} of length {len(row) if hasattr(row, '__len__') else '?'}; "
                     "expected (item, label), (a, b, score), (anchor, positive, negative), (query, matches), "
                     "(query, [positives], [negatives]) or a dict")


def _from_rows(rows: list, format: str | None, name: str) -> LabeledData:
    if not rows:
        raise ValueError(f"{name}: the data is empty; expected at least two labeled items")
    if format is None:
        format = _row_format(rows[0], name, 0)
        for i, row in enumerate(rows):
            f = _row_format(row, name, i)
            if f != format:
                raise RowError(name, i, f"is {f} format but row 0 is {format} format (mixed formats: one per data set)")
        if format == "class" and isinstance(rows[0], (tuple, list)) and isinstance(rows[0][1], str):
            labels = [r[1] for r in rows]
            if len(set(labels)) > len(labels) / 2:
                format = "pair"  # (anchor, positive) text pairs, not class labels
    if format == "class":
        if isinstance(rows[0], Mapping):
            item_key = _pick_key(rows[0], ITEM_KEYS, exclude=LABEL_KEYS, name=name)
            label_key = _pick_key(rows[0], LABEL_KEYS, name=name)
            return _class_data([r.get(item_key) for r in rows], [r.get(label_key) for r in rows], name)
        return _class_data([r[0] for r in rows], [r[1] for r in rows], name)
    if format == "pair":
        groups = []
        for i, r in enumerate(rows):
            if isinstance(r, Mapping):
                if "anchor" in r:
                    a, b, s = r["anchor"], r["positive"], r.get("score", 1.0)
                else:
                    ka, kb = next(p for p in PAIR_KEYS if set(p) <= set(r))
                    sk = next((k for k in SCORE_KEYS if k in r), None)
                    a, b, s = r[ka], r[kb], (r[sk] if sk else 1.0)
            else:
                a, b, s = (r[0], r[1], r[2] if len(r) > 2 else 1.0)
            if _is_missing(a) or _is_missing(b):
                raise RowError(name, i, "is a pair with a missing side; expected two items and a score")
            groups.append([(a, 1.0), (b, _score(s, name, i))])
        return _grouped(groups, "pair")
    if format == "triplet":
        groups = []
        for i, r in enumerate(rows):
            a, p, n = (r["anchor"], r["positive"], r["negative"]) if isinstance(r, Mapping) else r
            groups.append([(a, 1.0), (p, 1.0), (n, 0.0)])
        return _grouped(groups, "triplet")
    # session
    groups = []
    for i, r in enumerate(rows):
        if isinstance(r, Mapping):
            members = [(r["query"], 1.0)]
            if "matches" in r:
                members += [_match(m, name, i) for m in r["matches"]]
            members += [(m, 1.0) for m in r.get("positives", [])] + [(m, 0.0) for m in r.get("negatives", [])]
        else:
            members = [(r[0], 1.0)] + _tuple_members(r, name, i)
        if len(members) < 2:
            raise RowError(name, i, "is a session without matches; expected a query with labeled matches")
        groups.append(members)
    return _grouped(groups, "session")


def _is_text_list(x) -> bool:
    return isinstance(x, (list, tuple)) and all(isinstance(t, str) for t in x)


def _tuple_members(r, name: str, i: int) -> list[tuple[Any, float]]:
    """The matches of a session row given as a tuple (see the table of this module)."""
    if len(r) == 2 and isinstance(r[1], (list, tuple)) and r[1] and isinstance(r[1][0], (tuple, list, Mapping)):
        return [_match(m, name, i) for m in r[1]]
    if len(r) in (2, 3) and all(_is_text_list(x) for x in r[1:]):
        return [(m, 1.0) for m in r[1]] + [(m, 0.0) for m in (r[2] if len(r) == 3 else ())]
    if len(r) == 3 and isinstance(r[1], str):
        return [(r[1], 1.0)] + [(m, 0.0) for m in r[2]]
    if len(r) > 3:
        return [(r[1], 1.0)] + [(m, 0.0) for m in r[2:]]
    raise ValueError(f"{name}: session {i} is {type(r).__name__} of length {len(r)}; expected (query, matches), "
                     "(query, [positives], [negatives]) or (query, positive, [negatives])")


def _match(m, name: str, i: int) -> tuple[Any, float]:
    if isinstance(m, Mapping):
        item_key = _pick_key(m, ITEM_KEYS, exclude=LABEL_KEYS, name=name)
        label_key = _pick_key(m, LABEL_KEYS + ("relevance",), name=name)
        return m[item_key], _relevance(m[label_key], name, i)
    return m[0], _relevance(m[1], name, i)


def _pick_key(row: Mapping, preferred: tuple, name: str, exclude: tuple = ()) -> str:
    for k in preferred:
        if k in row:
            return k
    rest = [k for k in row if k not in exclude]
    if exclude and len(rest) == 1:
        return rest[0]
    raise ValueError(f"{name}: cannot tell which key of {sorted(row)} is the {'label' if not exclude else 'item'}; "
                     f"expected one of {preferred}")


def _from_frame(df, format: str | None, name: str) -> LabeledData:
    cols = set(df.columns)
    pairs = PAIR_KEYS + (("anchor", "positive"),)  # the dict forms of pair rows (see the table above)
    if format is None and len(cols) == 2 and not cols & set(LABEL_KEYS) and not any(set(p) <= cols for p in pairs):
        raise ValueError(f"{name}: cannot tell the format from columns {sorted(cols)}; name the label column "
                         f"'label' or pass format=")
    if format == "class" or (format is None and cols & set(LABEL_KEYS) and len(cols) == 2):
        label_key = next(k for k in LABEL_KEYS if k in cols) if cols & set(LABEL_KEYS) else df.columns[-1]
        item_key = next((k for k in df.columns if k != label_key), None)
        return _class_data(list(df[item_key]), list(df[label_key]), name)
    return _from_rows(df.to_dict("records"), format, name)
