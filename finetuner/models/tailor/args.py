"""The tailor's arguments, checked once for torch, Keras and Paddle models: `check_tailor_args`
(before the model runs) and `resolve_tailor_args` (`fit`'s form of them: `TAILOR_ARGS`)."""

from __future__ import annotations

from typing import Any, Sequence

from .heads import HEADS

# the keyword arguments of `fit` that tailor a general model into an embedding model first
TAILOR_ARGS = ("to_embedding_model", "layer_name", "freeze", "freeze_layer", "output_dim", "projection_head",
               "input_size", "pooling")


def check_tailor_args(layer_name: Any, freeze: Any, output_dim: Any, projection_head: Any, pooling: str,
                      head_type: type, poolings: Sequence[str]) -> None:
    """Raise ValueError / TypeError for a bad `to_embedding_model` argument, before the model
    runs (one rule for torch, Keras and Paddle; `head_type`: the framework's layer class,
    `poolings`: the poolings it offers)."""
    if pooling not in poolings:
        raise ValueError(f"pooling: expected one of {tuple(poolings)}, got {pooling!r}")
    if layer_name is not None and (not isinstance(layer_name, str) or not layer_name):
        raise ValueError(f"layer_name: expected a layer's name as finetuner.display lists it, got {layer_name!r}")
    if output_dim is not None and (isinstance(output_dim, bool) or not isinstance(output_dim, int) or output_dim < 1):
        raise ValueError(f"output_dim: expected None or an int >= 1, got {output_dim!r}")
    if projection_head is not None and not isinstance(projection_head, head_type):
        if projection_head not in HEADS:
            raise TypeError(f"projection_head: expected None, {HEADS} or a {head_type.__module__.split('.')[0]} "
                            f"{head_type.__name__}, got {projection_head!r}")
        if output_dim is None:
            raise ValueError(f"projection_head: {projection_head!r} needs output_dim (its output size)")
    if isinstance(freeze, float) or (not isinstance(freeze, (bool, int, str, list, tuple, set)) and freeze is not None):
        raise ValueError(f"freeze: expected True / False, an int or a list of layer names, got {freeze!r}")


def resolve_tailor_args(tailor: dict) -> dict | None:
    """`fit`'s tailor arguments as `to_embedding_model` takes them (for every framework).

    Returns None for `to_embedding_model=False` (leave the model as it is); else a new dict in
    which the seed's `freeze_layer=N` has become `freeze=N`.

    Raises:
        ValueError: `to_embedding_model=False` with other tailor arguments, `freeze_layer` and a
            different `freeze` both given, or a `freeze_layer` that is not an int.
    """
    tailor = dict(tailor)
    if not tailor.pop("to_embedding_model", True):
        if tailor:
            raise ValueError(f"to_embedding_model: False, but tailor arguments {sorted(tailor)} were given; "
                             "drop them or set to_embedding_model=True")
        return None
    if "freeze_layer" in tailor:
        layer = tailor.pop("freeze_layer")
        if "freeze" in tailor and tailor["freeze"] not in (False, None, layer):
            raise ValueError(f"freeze_layer: {layer!r} and freeze: {tailor['freeze']!r} both given; use one of them")
        if isinstance(layer, bool) or not isinstance(layer, int):
            raise ValueError(f"freeze_layer: expected an int (freeze the first N layers; -1: all but the last), "
                             f"got {layer!r}")
        tailor["freeze"] = layer
    return tailor
