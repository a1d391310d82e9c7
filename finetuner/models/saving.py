"""`save` and `load` for every kind of model finetuner trains: a plain torch module, a text
encoder (sentence-transformers layout), a text classifier (`save_pretrained` layout), Keras and
Paddle models (their own formats).

Saving never destroys what it did not write: an existing path that is not a finetuner model
is refused unless `overwrite=True`, and the folder is written beside the target, fsynced and
swapped in by one atomic rename (`finetuner.io.atomic_dir`). Loading runs nobody's code by
default: weights are read from safetensors, a pickled module only with `torch.load(weights_only
=True)` when it is built from `torch.nn` layers (and finetuner's own), anything else only with
`trust_pickle=True`.
"""

from __future__ import annotations

import importlib
import json
import os
import warnings
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors.torch import load_file, save_file

from ..io import FORMAT_VERSION, META, atomic_dir, is_saved_model, read_meta, replacing, untie_shared

# steps run on every saved folder after the model's files are written, inside the atomic save:
# `(model, folder) -> None` (e.g. a model card writer); add with `add_save_step`
SAVE_STEPS: list[Callable[[Any, Path], None]] = []
_SAFE_PREFIXES = ("torch.nn.modules.", "finetuner.")  # module classes a weights-only load may rebuild


def add_save_step(step: Callable[[Any, Path], None]) -> None:
    """Run `step(model, folder)` at the end of every `save`, inside the temporary folder (so what it
    writes is part of the one atomic rename)."""
    if step not in SAVE_STEPS:
        SAVE_STEPS.append(step)


def check_target(path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Raise before any work if saving to `path` would destroy something finetuner did not write.

    Allowed: a path that does not exist, an empty folder, a folder written by `finetuner.save`
    (it is replaced), or anything with `overwrite=True`.

    Raises:
        FileExistsError: `path` is a file, or a folder that is not a finetuner model, and
            `overwrite` is False (the message says what is there).
    """
    path = Path(path)
    if overwrite:
        return path
    with replacing():  # another thread's save of this path cannot move it aside between the looks below
        return _check_target(path)


def _check_target(path: Path) -> Path:
    if not os.path.lexists(path) or is_saved_model(path):
        return path
    try:
        if path.is_dir() and not path.is_symlink():
            entries = sorted(p.name for p in path.iterdir())
            if not entries:
                return path
            what = f"a folder that is not a finetuner model (it holds {entries[:3]}{' ...' if len(entries) > 3 else ''})"
        elif not os.path.lexists(path):  # another save of this path had just moved its old folder aside
            return path
        else:
            what = "a file" if path.is_file() else "something that is not a folder"
    except FileNotFoundError:
        return path
    raise FileExistsError(f"path: {str(path)!r} is {what}; save writes a model folder there and would replace it. "
                          "Choose another path, or pass overwrite=True to replace it")


def save(model: Any, path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Save a tuned model to the folder `path`, atomically.

    Writes `model.safetensors` (the weights), `model.pt` (the whole module, so `load` needs no
    code from you when it is built from `torch.nn` layers) and `finetuner.json` (what it is).
    Text encoders and classifiers write their own layouts (sentence-transformers,
    `save_pretrained`) plus `finetuner.json`. The folder is written under a temporary name
    beside `path`, fsynced, and swapped in by one atomic rename: a crash or kill at any moment
    leaves the previous model or the new one at `path`, whole.

    Args:
        model: a `torch.nn.Module`, or the result of `finetuner.fit` (its `.model` is saved); a
            Keras or Paddle model is saved in its framework's format (`model.keras`;
            `model.pdparams` + `model.pkl`), see `finetuner.models.backends`.
        path: a folder. It may not exist yet, be empty, or hold a model saved by finetuner
            (which it replaces).
        overwrite: replace whatever is at `path` (a file, or a folder of other things).

    Returns:
        The folder's path.

    Raises:
        FileExistsError: `path` exists and is not a finetuner model, and `overwrite` is False
            (checked before anything is written).
        TypeError: `model` is not a torch module or a fit result.
    """
    path = check_target(path, overwrite)
    model = getattr(model, "model", model) if not isinstance(model, torch.nn.Module) else model
    from .backends import backend_for

    if (backend := backend_for(model)) is not None:  # Keras / Paddle: their native format
        write = backend.save_native
    elif getattr(model, "_finetuner_save", None) is not None:  # richer layouts (e.g. sentence-transformers)
        def write(m, folder):
            m._finetuner_save(folder)
    elif isinstance(model, torch.nn.Module):
        write = _save_module
    else:
        raise TypeError(f"model: expected a torch.nn.Module or a fit result, got {type(model).__name__}")
    with atomic_dir(path) as tmp:
        write(model, tmp)
        for step in SAVE_STEPS:
            step(model, tmp)
    return path


def _save_module(model: torch.nn.Module, folder: Path) -> None:
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(untie_shared(state), str(folder / "model.safetensors"))
    meta = {"format_version": FORMAT_VERSION, "framework": "torch", "kind": "module",
            "class": f"{type(model).__module__}.{type(model).__qualname__}", "pickled": True}
    try:
        torch.save(model, folder / "model.pt")
    except Exception as e:  # e.g. a class defined inside a function cannot be pickled
        meta["pickled"] = False
        warnings.warn(f"save: the model's class cannot be pickled ({e}); only the weights were saved: "
                      f"load them with finetuner.load(path, model=YourModel())", stacklevel=3)
    (folder / META).write_text(json.dumps(meta, indent=2))



def load(path: str | os.PathLike, model: torch.nn.Module | None = None, map_location: str = "cpu",
         trust_pickle: bool = False) -> Any:
    """Load a model saved by `finetuner.save`, without running code from the folder by default.

    Weights come from safetensors files. A plain module saved whole (`model.pt`) is rebuilt with
    `torch.load(weights_only=True)` when it is made only of `torch.nn` layers and finetuner's own
    classes; a module of any other class, and a Paddle layer (`model.pkl`), is a pickle, and
    unpickling runs whatever code the file names: it is loaded only with `trust_pickle=True`.
    Without it, pass `model=` (an instance of the same architecture) to load just the weights.

    Args:
        path: the folder `save` wrote.
        model: optional module of the same architecture to load the weights into (safe: reads
            weights only; needed when the class could not be pickled at save time).
        map_location: device for the tensors.
        trust_pickle: unpickle `model.pt` / `model.pkl` even when it names classes outside
            `torch.nn` and finetuner. **Only for folders you trust**: a crafted pickle runs any
            code with your permissions when it is loaded.

    Returns:
        The model, in eval mode.

    Raises:
        FileNotFoundError: `path` is not a folder written by `save`.
        ValueError: the weights do not fit `model`; an unknown model kind; a pickled model of
            classes outside `torch.nn` / finetuner without `trust_pickle=True` (the message
            names them).
    """
    path = Path(path)
    meta = read_meta(path)
    kind = meta.get("kind", "module")
    if kind in ("module", "keras", "paddle"):
        own = {"module": _load_module, "keras": _load_framework, "paddle": _load_framework}[kind]
        return own(path, meta, model, map_location, trust_pickle)
    loader = _loader(kind)
    if loader is None:
        raise ValueError(f"path: unknown model kind {kind!r} in {path / META}")
    return loader(path, meta, model, map_location)


def _load_module(path: Path, meta: dict, model, map_location: str, trust_pickle: bool):
    if model is None:
        if not meta.get("pickled", False):
            raise ValueError(f"path: {str(path)!r} holds weights only; pass model=YourModel() to load them into")
        model = load_pickled_module(path / "model.pt", map_location, trust_pickle)
    else:
        state = load_file(str(path / "model.safetensors"), device=map_location)
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ValueError(f"model: the saved weights do not fit it (missing {missing[:5]}, unexpected {unexpected[:5]})")
    return model.eval()


def load_pickled_module(file: str | os.PathLike, map_location: str = "cpu", trust_pickle: bool = False):
    """A whole module saved with `torch.save`: rebuilt by the weights-only unpickler when every
    class it names is a `torch.nn` layer or a finetuner module; otherwise only with `trust_pickle`.

    Raises:
        ValueError: other classes and `trust_pickle` is False (names them, and the two ways on).
    """
    names = torch.serialization.get_unsafe_globals_in_checkpoint(str(file))
    allowed = [_safe_module_class(n) for n in names]
    if all(c is not None for c in allowed):
        with torch.serialization.safe_globals(allowed):
            return torch.load(file, map_location=map_location, weights_only=True)
    if not trust_pickle:
        others = sorted({n for n, c in zip(names, allowed) if c is None})
        raise ValueError(f"path: {str(file)!r} is a pickled module naming {others[:5]}; unpickling it would run code "
                         "named in the file. Pass model=YourModel() to load only its weights (safe), or "
                         "trust_pickle=True (--trust-pickle) if you trust where the folder came from")
    return torch.load(file, map_location=map_location, weights_only=False)


def _safe_module_class(name: str):
    """The class `name` ("pkg.module.Class") when it is a torch module class of `torch.nn` or
    finetuner (imported only from those packages), else None."""
    module, _, attr = name.rpartition(".")
    if not module.startswith(_SAFE_PREFIXES) and module != "finetuner":
        return None
    try:
        cls = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError):
        return None
    return cls if isinstance(cls, type) and issubclass(cls, torch.nn.Module) else None


def _load_framework(path: Path, meta: dict, model, map_location: str, trust_pickle: bool):
    from .backends import require  # Keras / Paddle folders; a missing framework names its extra

    backend = require(meta["kind"])
    if meta["kind"] == "paddle":
        return backend.load_native(path, meta, model, trust_pickle=trust_pickle)
    return backend.load_native(path, meta, model)


def _load_text_encoder(path: Path, meta: dict, model, map_location: str):
    from .text import load_saved

    return load_saved(path, meta, model, map_location)


def _load_text_classifier(path: Path, meta: dict, model, map_location: str):
    from .classifier import load_saved

    return load_saved(path, meta, model, map_location)


_EXTRA: dict[str, Callable] = {}


def register_loader(kind: str, loader: Callable) -> None:
    """Register `loader(path, meta, model, map_location)` for folders whose finetuner.json says
    `kind` (for model kinds defined outside this package)."""
    _EXTRA[kind] = loader


def _loader(kind: str) -> Callable | None:
    table = {"sentence-transformers": _load_text_encoder, "text-classifier": _load_text_classifier}
    return table.get(kind) or _EXTRA.get(kind)


from .card import card_step  # noqa: E402  (the card reads the model kinds; it imports nothing from here)

add_save_step(card_step)  # every save writes README.md, a model card (finish adds the run's details)
