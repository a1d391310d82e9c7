"""The freeze rules, written once: what `freeze=...` freezes, for torch, Keras and Paddle models.

`freeze_spec` is the one rule (True, False / None, an int N counting layers that hold weights
in forward order with a projection head as one last layer, or layer names / glob patterns); each
framework supplies its layer units and its name matching. For torch models, `resolve_freeze`
applies it to a module and `apply_freeze` sets `requires_grad=False`; `freeze` is the public call.
"""

from __future__ import annotations

import fnmatch
from typing import Any, Callable, Sequence

from torch import nn

from .layers import check_module, get_layer, unknown_layer
from .probe import check_input_size, guess_input, random_batch, run_trace
from .trace import Trace


def freeze_spec(spec: Any, units: Sequence[str], match: Callable[[str], list[str]], *,
                everything: Sequence[str], has_head: bool = False,
                weights: str = "parameters") -> tuple[list[str], bool]:
    """The layer names `freeze=spec` freezes, and whether the projection head is frozen too.

    Args:
        spec: False / None (nothing); True (`everything`: only the head trains); an int N (the
            first N of `units`, the head counting as one more unit; a negative N counts from the
            end); a layer name or pattern, or a list of them (each goes through `match`).
        units: names of the layers that hold weights themselves, in forward order.
        match: a name or glob pattern -> the names it freezes; raises ValueError for an unknown one.
        everything: what `True` freezes.
        has_head: whether a projection head follows the model.
        weights: what the framework calls its weights, for the messages.

    Raises:
        ValueError: an int out of range, a spec of another type, or an unknown name (`match`).
    """
    if spec is False or spec is None:
        return [], False
    if spec is True:
        return list(everything), False
    if isinstance(spec, int):
        total = len(units) + int(has_head)
        n = spec if spec >= 0 else total + spec
        if not 0 <= n <= total:
            raise ValueError(f"freeze: {spec} layers asked for, but the model has {total} layers that hold "
                             f"{weights}{' (the projection head counts as one)' if has_head else ''}; "
                             f"expected an int in [-{total}, {total}]")
        return list(units[:n]), n > len(units)
    if isinstance(spec, str):
        spec = [spec]
    if not isinstance(spec, (list, tuple, set)) or not all(isinstance(s, str) for s in spec):
        raise ValueError(f"freeze: expected True / False, an int (freeze the first N layers; negative counts from "
                         f"the end) or a list of layer names or prefixes, got {spec!r}")
    out: list[str] = []
    for s in spec:
        out += match(s)
    return out, False


def layer_units(model: nn.Module, trace: Trace | None) -> list[str]:
    """The layers that `freeze=N` counts: every module that holds parameters itself (a Linear,
    a convolution, a norm, an embedding table...), in forward order when traced (registration
    order otherwise; layers the forward pass never calls come last)."""
    units = [n for n, m in model.named_modules() if any(True for _ in m.parameters(recurse=False))]
    if trace is not None:
        order = {r.name: i for i, r in enumerate(trace.called())}
        units.sort(key=lambda n: order.get(n, len(order)))
    return units


def resolve_freeze(model: nn.Module, spec: Any, trace: Trace | None, has_head: bool = False,
                   cut_names: Sequence[str] = ()) -> tuple[list[str], bool]:
    """The module / parameter names that `freeze=spec` freezes in a torch `model` ("" is the
    whole model), and whether the projection head that follows it (`has_head`) is frozen too.

    Names are dotted module names, prefixes (a module freezes all under it), glob patterns over
    module names, or parameter names; `cut_names` are layers `to_embedding_model` removed, for
    a clear message."""

    def match(s: str) -> list[str]:
        if any(c in s for c in "*?["):  # a glob over dotted names, e.g. "encoder.layer.*"
            hits = [n for n, _ in model.named_modules() if n and fnmatch.fnmatchcase(n, s)]
            if not hits:
                raise unknown_layer("freeze", s, model, " (no layer matches this pattern)")
            return hits
        if s in {n for n, _ in model.named_parameters()}:
            return [s]
        if s in cut_names or any(s.startswith(c + ".") for c in cut_names):
            raise ValueError(f"freeze: layer {s!r} runs after the embedding layer, so to_embedding_model removed it; "
                             "freeze layers at or before the cut")
        get_layer(model, s, "freeze")  # raises with close matches when unknown
        return [s]

    units = layer_units(model, trace) if isinstance(spec, int) and not isinstance(spec, bool) else []
    return freeze_spec(spec, units, match, everything=[""], has_head=has_head)


def apply_freeze(model: nn.Module, names: Sequence[str]) -> list[str]:
    """Set requires_grad=False on every parameter of the named modules / parameters (biases
    included; "" is the whole model); returns the frozen parameter names."""
    frozen = []
    params = dict(model.named_parameters())
    for n in names:
        if n in params and n not in dict(model.named_modules()):
            params[n].requires_grad_(False)
            frozen.append(n)
            continue
        module = model.get_submodule(n) if n else model
        for pn, p in module.named_parameters():
            p.requires_grad_(False)
            frozen.append(f"{n}.{pn}" if n else pn)
    return frozen


def freeze(model: nn.Module, layers: Any = True, *, input_size: Any = None, input: Any = None) -> list[str]:
    """Freeze layers of a model in place: their parameters, biases included, stop training.

    Args:
        model: a torch module.
        layers: True: every parameter. A list of layer names (dotted, as `display` shows them),
            each freezing that layer and everything under it (so a name is also a prefix:
            "encoder" freezes "encoder.layer.0.attention..."); glob patterns such as
            "encoder.layer.[0-3]" and single parameter names also work. An int N: the first N
            layers that hold parameters, in forward order (when the model can be run: see
            `input_size`; registration order otherwise); a negative N counts from the end
            (-1: all but the last layer).
        input_size / input: as in `display`, to learn the forward order for an int `layers`.

    Returns:
        The names of the parameters frozen.

    Raises:
        TypeError: `model` is not a torch module.
        ValueError: an unknown layer name (the message lists close matches), an int out of
            range, or a `layers` of another type.

    Note: frozen parameters only stop getting gradients. `to_embedding_model` also keeps frozen
    layers in eval mode during training (fixed batch-norm statistics, no dropout), which this
    function does not.
    """
    check_module(model)
    trace = None
    if isinstance(layers, int) and not isinstance(layers, bool):
        x = input if input is not None else (
            random_batch(model, check_input_size(input_size)) if input_size is not None else guess_input(model))
        trace = run_trace(model, x, input_size) if x is not None else None
    names, _ = resolve_freeze(model, layers, trace)
    return apply_freeze(model, names)
