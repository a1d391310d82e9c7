"""One way in for tables users hold: files (.csv, .tsv, .json, .jsonl, .parquet), pandas
DataFrames and `datasets.Dataset`s. Every recipe's data reader (labeled formats, classifier
rows, instruction data) starts here, so a kind of input works everywhere once it works once."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

TABLE_SUFFIXES = (".csv", ".tsv", ".jsonl", ".json", ".parquet")
SOURCE = "finetuner_source"  # the DataFrame.attrs key where read_table keeps the frame's `Source`


class Source:
    """Where a DataFrame's rows came from: `path`, `kind` (the suffix: "csv", "jsonl", ...) and,
    for JSON lines, `lines` (int64 [N], the 1-based line of each row). pandas copies `attrs`
    on many operations and compares them on concat: this holder is shared, never copied, and
    compares by identity."""

    __slots__ = ("path", "kind", "lines")

    def __init__(self, path: str, kind: str, lines: np.ndarray | None = None) -> None:
        self.path, self.kind, self.lines = path, kind, lines

    def __deepcopy__(self, memo: dict) -> "Source":
        return self

    def __repr__(self) -> str:
        return f"Source({self.path!r}, {self.kind!r})"


def is_dataframe(data: Any) -> bool:
    """Whether `data` is a pandas DataFrame (without importing pandas)."""
    return type(data).__name__ == "DataFrame" and hasattr(data, "to_dict")


def is_hf_dataset(data: Any) -> bool:
    """Whether `data` is a `datasets.Dataset` (without importing datasets)."""
    return (type(data).__name__ == "Dataset" and hasattr(data, "to_pandas") and hasattr(data, "column_names")
            and hasattr(data, "features"))


def is_table_path(data: Any) -> bool:
    """Whether `data` names an existing file with a table suffix (`TABLE_SUFFIXES`)."""
    if isinstance(data, str) and (len(data) > 4096 or "\n" in data):
        return False
    return isinstance(data, (str, os.PathLike)) and Path(data).suffix.lower() in TABLE_SUFFIXES and Path(data).is_file()


def read_table(path: str | os.PathLike, name: str):
    """A .csv, .tsv, .json, .jsonl or .parquet file as a pandas DataFrame that remembers where
    it came from (`frame.attrs[SOURCE]`: the file, its kind, and for JSON lines the line of each
    row), so a problem found later in a row names the file and the line (`locate`).

    Args:
        path: the file.
        name: the argument it came from, for error messages ("train_data", ...).

    Raises:
        ValueError: the file does not exist, has another suffix, is not UTF-8 text, or does not
            parse (the message names `name`, the file, and the line when the parser knows it).
    """
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{name}: file {str(path)!r} does not exist")
    suffix = path.suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise ValueError(f"{name}: expected a {', '.join(TABLE_SUFFIXES)} file, got {path.name!r}")
    lines = None
    try:
        if suffix in (".csv", ".tsv"):
            frame = pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",")
        elif suffix == ".jsonl":
            rows, lines = read_jsonl(path, name, with_lines=True)
            frame = pd.DataFrame(rows)
        elif suffix == ".json":
            frame = _read_json(path, name)
        else:
            frame = pd.read_parquet(path)
    except UnicodeDecodeError as e:
        raise ValueError(f"{name}: {path} is not UTF-8 text (byte {e.start}: {e.reason}); save it as UTF-8") from e
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as e:  # pandas names the line, not the file
        raise ValueError(f"{name}: {path}: not a valid {suffix[1:].upper()} table ({_one_line(e)})") from e
    frame.attrs[SOURCE] = Source(str(path), suffix[1:], lines)
    return frame


def _read_json(path: Path, name: str):
    """A .json file holding a list of objects (rows) or an object of columns, as a DataFrame."""
    import pandas as pd

    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{name}: {path}, line {e.lineno}: not valid JSON ({e.msg} at column {e.colno})") from e
    if isinstance(data, list):
        bad = next((i for i, row in enumerate(data) if not isinstance(row, dict)), None)
        if bad is not None:
            raise ValueError(f"{name}: {path}, item {bad}: expected a JSON object per row, got "
                             f"{type(data[bad]).__name__}")
        return pd.DataFrame(data)
    if isinstance(data, dict):
        try:
            return pd.DataFrame(data)
        except ValueError as e:
            raise ValueError(f"{name}: {path}: expected a list of objects or an object of equal-length column "
                             f"lists ({_one_line(e)})") from e
    raise ValueError(f"{name}: {path}: expected a list of objects or an object of columns, got {type(data).__name__}")


def read_jsonl(path: str | os.PathLike, name: str, with_lines: bool = False):
    """The JSON objects of a JSON-lines file, one per non-empty line.

    Returns:
        The list of dicts; with `with_lines`, also the 1-based line number of each (int64 [N]).

    Raises:
        ValueError: a line that is not a JSON object, or text that is not UTF-8; the message
            names `name`, the file and the 1-based line number.
    """
    rows, numbers = [], []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{name}: {path}, line {number}: not valid JSON ({e.msg} at column {e.colno})") from e
            if not isinstance(row, dict):
                raise ValueError(f"{name}: {path}, line {number}: expected a JSON object, got {type(row).__name__}")
            rows.append(row)
            numbers.append(number)
    return (rows, np.asarray(numbers, dtype=np.int64)) if with_lines else rows


# ---- where a row came from, for error messages -------------------------------------------------
class RowError(ValueError):
    """A problem with one row of the data.

    `str(error)` is "NAME: row ROW PROBLEM" (ROW 0-based, as in the user's list); `locate`
    turns it into "NAME: FILE line L PROBLEM" when the rows came from a file.

    Args:
        name: the argument ("train_data", ...). row: the 0-based row index. problem: what is
            wrong and what was expected, worded to follow "row N" ("has no label; ...").
    """

    def __init__(self, name: str, row: int, problem: str) -> None:
        self.name, self.row, self.problem = name, int(row), problem
        super().__init__(f"{name}: row {row} {problem}")


def locate(error: RowError, data: Any) -> ValueError:
    """`error` with its place in `data`: the file and 1-based line for a frame from `read_table`
    (JSON lines: the line; CSV / TSV: the line the record starts on; JSON: the item; parquet:
    the row), the row and index label of another DataFrame, the row of a `datasets.Dataset`.
    Rows of a Python list keep the 0-based "row N" of `error`."""
    source = getattr(data, "attrs", {}).get(SOURCE) if is_dataframe(data) else None
    row = error.row
    if isinstance(source, Source):
        path, kind = source.path, source.kind
        if kind == "jsonl" and source.lines is not None and row < len(source.lines):
            where = f"{path}, line {int(source.lines[row])}"
        elif kind in ("csv", "tsv"):
            line = _csv_line(path, row, "\t" if kind == "tsv" else ",")
            where = f"{path}, line {line}" if line else f"{path}, data row {row} (0-based, after the header)"
        else:
            where = f"{path}, {'item' if kind == 'json' else 'row'} {row}"
    elif is_dataframe(data):
        where = f"DataFrame row {row} (index {data.index[row]!r})" if row < len(data) else f"DataFrame row {row}"
    elif is_hf_dataset(data):
        split = getattr(data, "split", None)
        where = f"datasets.Dataset{f' ({split} split)' if split else ''} row {row}"
    else:
        return error
    return ValueError(f"{error.name}: {where} {error.problem}")


def _csv_line(path: str, row: int, sep: str) -> int | None:
    """The 1-based line on which data row `row` (0-based, after the header) starts, skipping blank
    lines as pandas does and following quoted fields over line breaks. Read only on error."""
    import csv

    try:
        with open(path, encoding="utf-8", newline="") as f:
            reader, start, index = csv.reader(f, delimiter=sep), 1, -1
            for record in reader:
                if record and any(field.strip() for field in record):
                    if index == row:
                        return start
                    index += 1
                start = reader.line_num + 1
    except (OSError, csv.Error, UnicodeDecodeError):
        return None
    return None


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split())
