"""What the command line's MODEL and --data arguments name, turned into what the library takes.

MODEL: a folder saved by `finetuner.save`, a Hugging Face or sentence-transformers model folder,
a Hugging Face model id, or "module:factory" (a function returning a torch module).
Data: a toydata name (`TOYDATA`), a file (CSV, TSV, JSON, JSONL, parquet), or a folder (a BEIR
folder: corpus.jsonl, queries.jsonl, qrels/).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Optional

from .errors import fail

# toydata names the commands take, each a `finetuner.toydata.generate_<name>`; aliases
TOYDATA = ("fashion", "mrpc", "sst2", "qa", "covid-qa", "stsb")
ALIASES = {"covid-qa": "qa"}


def is_factory(spec: str) -> bool:
    """'package.module:function' (and not an existing path, nor a Windows drive)."""
    head, sep, tail = spec.partition(":")
    return bool(sep) and bool(tail) and not Path(spec).exists() and len(head) > 1 and "/" not in head


def build_factory(spec: str, hint: str = "MODEL") -> Any:
    """Call 'module:function' and return the model it builds.

    Raises:
        typer.BadParameter: the module or function cannot be imported.
    """
    module, attr = spec.split(":", 1)
    try:
        factory = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as e:
        fail(f"cannot import {spec!r} ({type(e).__name__}: {e}); expected 'package.module:function' returning "
             "a torch module", hint)
    return factory()


def load_saved(path: str | Path, trust_pickle: bool = False) -> Any:
    """`finetuner.load(path, trust_pickle=...)` (pickled modules only when trusted)."""
    from finetuner import load

    return load(path, trust_pickle=trust_pickle)


def is_saved(spec: str) -> bool:
    """Whether `spec` is a folder written by `finetuner.save`."""
    from finetuner.io import META

    return (Path(spec) / META).is_file()


def model_for_fit(spec: str, trust_pickle: bool = False) -> Any:
    """`fit`'s model from MODEL: a built factory or a loaded finetuner folder (the engine puts it
    in train mode); a Hugging Face folder or id stays a string, for `finetuner.fit` to pick the
    text-embedding or classification recipe."""
    if is_factory(spec):
        return build_factory(spec)
    if is_saved(spec):
        return load_saved(spec, trust_pickle)
    if Path(spec).exists() and not Path(spec).is_dir():
        fail(f"{spec!r} is a file; expected a model folder, a Hugging Face model id or 'module:factory'", "MODEL")
    return spec


def model_for_use(spec: str, trust_pickle: bool = False) -> Any:
    """The model MODEL names, loaded for evaluate / embed / export (`finetuner.models.export.open_model`)."""
    if is_factory(spec):
        return build_factory(spec).eval()
    from finetuner.models.export import open_model

    if is_saved(spec):
        return load_saved(spec, trust_pickle)
    return open_model(spec, trust_pickle=trust_pickle)


def data_for(spec: Optional[str], data_dir: Optional[Path], test: bool, hint: str = "--train-data") -> Any:
    """A toydata set (its test split when `test`) for a toydata name; a file or folder path as it is.

    Raises:
        typer.BadParameter: neither a toydata name nor an existing file or folder.
    """
    if spec is None:
        return None
    if Path(spec).exists():
        return spec  # fit / evaluate read CSV / JSONL / JSON / parquet files and BEIR folders themselves
    name = ALIASES.get(spec, spec)
    if spec in TOYDATA:
        from finetuner import toydata

        loader = getattr(toydata, f"generate_{name.replace('-', '_')}")
        return loader(is_testset=test, data_dir=str(data_dir) if data_dir else None)
    fail(f"{spec!r} is not a file, a folder or a toydata name; expected a CSV / TSV / JSON / JSONL / parquet file, "
         f"a BEIR folder, or one of {list(TOYDATA)}", hint)
