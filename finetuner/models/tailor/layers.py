"""Layers by name: the model checks, looking a dotted layer name up (an unknown one fails with
the close matches), replacing a layer, and the Keras / Paddle backend a model belongs to."""

from __future__ import annotations

import difflib
from typing import Any

from torch import nn


def framework_backend(model: Any):
    """The Keras / Paddle backend module for `model` (`finetuner.models.backends`), or None for
    a torch module and anything else."""
    from ..backends import backend_for

    return backend_for(model)


def check_module(model: Any) -> None:
    """Raise a TypeError unless `model` is a torch module."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")


def unknown_layer(arg: str, name: str, model: nn.Module, extra: str = "") -> ValueError:
    """The ValueError for a layer name `model` does not have: it names the argument and lists
    the close matches."""
    names = [n for n, _ in model.named_modules() if n]
    close = difflib.get_close_matches(name, names, n=5, cutoff=0.6)
    close += [n for n in names if name and (n.endswith("." + name) or name in n) and n not in close][: 5 - len(close)]
    hint = f"close matches: {', '.join(repr(c) for c in close)}" if close else f"it has {len(names)} layers"
    return ValueError(f"{arg}: {type(model).__name__} has no layer named {name!r}{extra}; {hint} "
                      "(finetuner.display(model) lists every layer)")


def get_layer(model: nn.Module, name: Any, arg: str = "layer_name") -> nn.Module:
    """The submodule `name` (dotted, as `display` lists it).

    Raises:
        ValueError: `name` is not a non-empty string, or no such layer (with the close matches).
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"{arg}: expected a layer's dotted name such as 'encoder.layer.3' "
                         f"(finetuner.display(model) lists them), got {name!r}")
    try:
        return model.get_submodule(name)
    except AttributeError:
        raise unknown_layer(arg, name, model) from None


def set_layer(model: nn.Module, name: str, new: nn.Module) -> None:
    """Replace the submodule `name` (dotted) of `model` by `new`."""
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, new)
