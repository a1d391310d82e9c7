"""Where `FineTuner`'s instruction data comes from: the toy-data names "lima" and
"selfinstruct" (held-out splits "lima:test", "selfinstruct:test"; `finetuner.toydata`), and
everything `finetuner.data.instructions.load_dataset` reads (files, datasets, lists, frames)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..data.instructions import load_dataset

TOYDATA = ("lima", "selfinstruct")


def load_instructions(source: Any, data_dir: str | os.PathLike | None = None, name: str = "dataset_name"):
    """A `datasets.Dataset` of instruction examples from a toy-data name or any source
    `load_dataset` accepts.

    Args:
        source: a toy-data name (with ":test" / ":train"), a file, a `datasets.Dataset`, a list
            of dicts or a DataFrame.
        data_dir: folder of the toy-data files (default env FINETUNER_DATA, else the download cache).
        name: the argument named in error messages.

    Raises:
        ValueError: a bad toy-data split, a path that is neither a file nor a toy-data name, and
            see `load_dataset`.
    """
    if isinstance(source, (str, os.PathLike)) and not Path(source).exists():
        spec = str(source)
        base, _, split = spec.partition(":")
        toy = base.lower().replace("-", "").replace("_", "")
        if toy in TOYDATA:
            from ..toydata import instructions

            if split not in ("", "train", "test"):
                raise ValueError(f"{name}: toy-data split must be 'train' or 'test', got {spec!r}")
            loader = {"lima": instructions.generate_lima, "selfinstruct": instructions.generate_selfinstruct}[toy]
            return loader(is_testset=split == "test", data_dir=data_dir)
        if not Path(spec).expanduser().exists():
            raise ValueError(f"{name}: {spec!r} is neither a file nor a toy-data name {list(TOYDATA)} (hub dataset "
                             "names need the internet; pass a local JSON/JSONL/CSV file or a datasets.Dataset)")
    return load_dataset(source, name)
