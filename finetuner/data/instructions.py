"""Instruction data for `FineTuner`: where it comes from and which format it is in.

Accepted sources: a local JSON / JSONL / CSV / Parquet file, a `datasets.Dataset` (or a
`DatasetDict`: its "train" split), a list of dicts, a pandas DataFrame. (`FineTuner` also takes
the toy-data names "lima" and "selfinstruct", which `finetuner.llm` resolves.)

Formats (detected from the columns, in this order):

- "messages": a `messages` (or ShareGPT `conversations`) column of turns `{"role", "content"}`
  (ShareGPT `{"from", "value"}` is mapped), rendered with the tokenizer's chat template;
- "alpaca": `instruction`, optional `input`, `output`, optional `history` ([[user, assistant], ...]);
- "prompt_completion": `prompt` and `completion`;
- "text": `text` only: plain language modelling, the loss on every token.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

FORMATS = {
    "messages": ("messages",),
    "alpaca": ("instruction", "output"),
    "prompt_completion": ("prompt", "completion"),
    "text": ("text",),
}
_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "model": "assistant",
          "system": "system"}


def load_dataset(source: Any, name: str = "dataset_name"):
    """A `datasets.Dataset` from any accepted source (see the module docstring).

    Raises:
        ValueError: a missing file, an unsupported file type, or an empty dataset (naming the
            argument `name`).
        TypeError: an unsupported source type.
    """
    import datasets

    if isinstance(source, datasets.DatasetDict):
        if "train" not in source:
            raise ValueError(f"{name}: a DatasetDict without a 'train' split (splits: {list(source)}); pass one split")
        source = source["train"]
    if isinstance(source, datasets.Dataset):
        dataset = source
    elif isinstance(source, list):
        dataset = datasets.Dataset.from_list(source)
    elif type(source).__name__ == "DataFrame":
        dataset = datasets.Dataset.from_pandas(source, preserve_index=False)
    elif isinstance(source, (str, os.PathLike)):
        dataset = _from_path(str(source), name)
    else:
        raise TypeError(f"{name}: expected a file path, a datasets.Dataset, a list of dicts or a DataFrame, "
                        f"got {type(source).__name__}")
    if len(dataset) == 0:
        raise ValueError(f"{name}: the dataset is empty")
    return dataset


def _from_path(spec: str, name: str):
    import datasets

    path = Path(spec).expanduser()
    if not path.exists():
        raise ValueError(f"{name}: {spec!r} is not a file (hub dataset names need the internet; pass a local "
                         "JSON/JSONL/CSV file or a datasets.Dataset)")
    kinds = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}
    kind = kinds.get(path.suffix.lower())
    if kind is None:
        raise ValueError(f"{name}: unsupported file type {path.suffix!r}; expected one of {sorted(kinds)}")
    datasets.disable_progress_bars()
    try:
        return datasets.load_dataset(kind, data_files=str(path), split="train")
    finally:
        datasets.enable_progress_bars()


def detect_format(columns: list[str], name: str = "dataset_name") -> str:
    """The format of a dataset with these columns (see the module docstring).

    Raises:
        ValueError: no format matches; the message names the columns found and the column sets
            each format expects.
    """
    cols = set(columns)
    if "conversations" in cols and "messages" not in cols:
        return "messages"
    for fmt, needed in FORMATS.items():
        if cols.issuperset(needed):
            return fmt
    expected = "; ".join(f"{fmt}: {list(needed)}" for fmt, needed in FORMATS.items())
    raise ValueError(f"{name}: no known format in columns {sorted(cols)}; expected one of: {expected} "
                     "(alpaca may add 'input' and 'history')")


def to_messages(example: dict, fmt: str) -> list[dict]:
    """One example as chat turns `[{"role", "content"}, ...]` (formats "messages" and "alpaca").

    Raises:
        ValueError: a turn without role/content, an unknown role, or no assistant turn.
    """
    if fmt == "messages":
        turns = example.get("messages") or example.get("conversations") or []
        out = []
        for turn in turns:
            role = turn.get("role", turn.get("from"))
            content = turn.get("content", turn.get("value"))
            if role not in _ROLES or content is None:
                raise ValueError(f"dataset_name: a chat turn needs a role in {sorted(_ROLES)} and a content, got {turn!r}")
            out.append({"role": _ROLES[role], "content": str(content)})
    elif fmt == "alpaca":
        out = []
        for pair in example.get("history") or []:
            out += [{"role": "user", "content": str(pair[0])}, {"role": "assistant", "content": str(pair[1])}]
        user = str(example["instruction"])
        if example.get("input"):
            user = f"{user}\n\n{example['input']}"
        out += [{"role": "user", "content": user}, {"role": "assistant", "content": str(example["output"])}]
    else:
        raise ValueError(f"to_messages: format {fmt!r} has no chat turns")
    if not any(t["role"] == "assistant" for t in out):
        raise ValueError(f"dataset_name: an example has no assistant turn to learn from: {out[:2]!r}")
    return out
