"""`save` and `load` for every kind of model finetuner trains: a plain torch module, a text
encoder (sentence-transformers layout), a text classifier (`save_pretrained` layout), Keras and
Paddle models (their own formats). Every save is atomic (`finetuner.io.atomic_dir`)."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors.torch import load_file, save_file

from ..io import FORMAT_VERSION, META, atomic_dir, read_meta


def save(model: Any, path: str | os.PathLike) -> Path:
    """Save a tuned model to the folder `path`, atomically.

    Writes `model.safetensors` (the weights), `model.pt` (the whole module, so `load` needs no
    code from you when the model's class is importable) and `finetuner.json` (what it is).
    Text encoders and classifiers write their own layouts (sentence-transformers,
    `save_pretrained`) plus `finetuner.json`.

    Args:
        model: a `torch.nn.Module`, or the result of `finetuner.fit` (its `.model` is saved); a
            Keras or Paddle model is saved in its framework's format (`model.keras`;
            `model.pdparams` + `model.pkl`), see `finetuner.models.backends`.
        path: a folder; replaced as a whole if it exists.

    Returns:
        The folder's path.

    Raises:
        TypeError: `model` is not a torch module or a fit result.
    """
    model = getattr(model, "model", model) if not isinstance(model, torch.nn.Module) else model
    from .backends import backend_for

    if (backend := backend_for(model)) is not None:  # Keras / Paddle: their native format
        with atomic_dir(path) as tmp:
            backend.save_native(model, tmp)
        return Path(path)
    saver = getattr(model, "_finetuner_save", None)
    if saver is not None:  # models that know a richer layout (e.g. sentence-transformers)
        with atomic_dir(path) as tmp:
            saver(tmp)
        return Path(path)
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module or a fit result, got {type(model).__name__}")
    with atomic_dir(path) as tmp:
        state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
        save_file(_untie(state), str(tmp / "model.safetensors"))
        meta = {"format_version": FORMAT_VERSION, "framework": "torch", "kind": "module",
                "class": f"{type(model).__module__}.{type(model).__qualname__}", "pickled": True}
        try:
            torch.save(model, tmp / "model.pt")
        except Exception as e:  # e.g. a class defined inside a function cannot be pickled
            meta["pickled"] = False
            warnings.warn(f"save: the model's class cannot be pickled ({e}); only the weights were saved: "
                          f"load them with finetuner.load(path, model=YourModel())", stacklevel=2)
        (tmp / META).write_text(json.dumps(meta, indent=2))
    return Path(path)


def _untie(state: dict) -> dict:
    """safetensors refuses tensors sharing memory (tied weights): give each its own copy."""
    seen, out = set(), {}
    for k, v in state.items():
        key = (v.untyped_storage().data_ptr(), v.storage_offset(), tuple(v.shape)) if v.numel() else None
        out[k] = v.clone() if key in seen else v
        seen.add(key)
    return out


def load(path: str | os.PathLike, model: torch.nn.Module | None = None, map_location: str = "cpu") -> Any:
    """Load a model saved by `finetuner.save`.

    Args:
        path: the folder `save` wrote.
        model: optional module of the same architecture to load the weights into (needed when
            the class could not be pickled at save time).
        map_location: device for the tensors.

    Returns:
        The model, in eval mode.

    Raises:
        FileNotFoundError: `path` is not a folder written by `save`.
        ValueError: the weights do not fit `model`, or an unknown model kind.
    """
    path = Path(path)
    meta = read_meta(path)
    loader = _loader(meta.get("kind", "module"))
    if loader is None:
        raise ValueError(f"path: unknown model kind {meta.get('kind')!r} in {path / META}")
    return loader(path, meta, model, map_location)


def _load_module(path: Path, meta: dict, model, map_location: str):
    if model is None:
        if not meta.get("pickled", False):
            raise ValueError(f"path: {str(path)!r} holds weights only; pass model=YourModel() to load them into")
        model = torch.load(path / "model.pt", map_location=map_location, weights_only=False)
    else:
        state = load_file(str(path / "model.safetensors"), device=map_location)
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ValueError(f"model: the saved weights do not fit it (missing {missing[:5]}, unexpected {unexpected[:5]})")
    return model.eval()


def _load_framework(path: Path, meta: dict, model, map_location: str):
    from .backends import require  # Keras / Paddle folders; a missing framework names its extra

    return require(meta["kind"]).load_native(path, meta, model)


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
    table = {"module": _load_module, "keras": _load_framework, "paddle": _load_framework,
             "sentence-transformers": _load_text_encoder, "text-classifier": _load_text_classifier}
    return table.get(kind) or _EXTRA.get(kind)
