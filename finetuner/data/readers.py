"""One way in for tables users hold: files (.csv, .tsv, .json, .jsonl, .parquet), pandas
DataFrames and `datasets.Dataset`s. Every recipe's data reader (labeled formats, classifier
rows, instruction data) starts here, so a kind of input works everywhere once it works once."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

TABLE_SUFFIXES = (".csv", ".tsv", ".jsonl", ".json", ".parquet")


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
    """A .csv, .tsv, .json, .jsonl or .parquet file as a pandas DataFrame.

    Args:
        path: the file.
        name: the argument it came from, for error messages ("train_data", ...).

    Raises:
        ValueError: the file does not exist, has another suffix, or a JSON line that does not
            parse (the message names `name`, the file and the line number).
    """
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{name}: file {str(path)!r} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return pd.read_csv(path)
    if suffix == ".tsv":
        return pd.read_csv(path, sep="\t")
    if suffix == ".jsonl":
        return pd.DataFrame(read_jsonl(path, name))
    if suffix == ".json":
        try:
            return pd.read_json(path)
        except ValueError as e:
            raise ValueError(f"{name}: {path} is not valid JSON ({e})") from e
    if suffix == ".parquet":
        return pd.read_parquet(path)
    raise ValueError(f"{name}: expected a {', '.join(TABLE_SUFFIXES)} file, got {path.name!r}")


def read_jsonl(path: str | os.PathLike, name: str) -> list[dict]:
    """The JSON objects of a JSON-lines file, one per non-empty line.

    Raises:
        ValueError: a line that is not a JSON object; the message names `name`, the file and
            the 1-based line number.
    """
    rows = []
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
    return rows
