"""Argument checks, `freeze` resolution and the layer table shared by the Keras and Paddle tailors
(the same rules as `finetuner.models.tailor` for torch models)."""

from __future__ import annotations

import fnmatch
from typing import Any, Sequence

POOLINGS = ("auto", "mean", "max", "flatten", "none")
HEADS = ("linear", "mlp")


def check_tailor_args(layer_name: Any, freeze: Any, output_dim: Any, projection_head: Any, pooling: str,
                      head_type: type) -> None:
    """Raise ValueError / TypeError for a bad `to_embedding_model` argument, before the model
    runs: `finetuner.models.tailor.check_tailor_args` with the poolings Keras / Paddle offer."""
    from ..tailor import check_tailor_args as check

    check(layer_name, freeze, output_dim, projection_head, pooling, head_type, POOLINGS)


def resolve_freeze(spec: Any, units: Sequence[str], names: Sequence[str], has_head: bool) -> tuple[list[str], bool]:
    """The layer names `freeze=spec` freezes, and whether the head is frozen too.

    Args:
        spec: True, False / None, an int N (the first N of `units`, the head counting as one more
            unit; negative counts from the end), or layer names / glob patterns.
        units: names of the layers that hold weights, in forward order.
        names: every layer name (for names and patterns).
        has_head: whether a projection head follows.

    Raises:
        ValueError: an int out of range or an unknown name / pattern.
    """
    if spec is False or spec is None:
        return [], False
    if spec is True:  # every layer of the cut model: only the head trains
        return list(names), False
    if isinstance(spec, int):
        total = len(units) + int(has_head)
        n = spec if spec >= 0 else total + spec
        if not 0 <= n <= total:
            raise ValueError(f"freeze: {spec} layers asked for, but the model has {total} layers that hold weights"
                             f"{' (the projection head counts as one)' if has_head else ''}; "
                             f"expected an int in [-{total}, {total}]")
        return list(units[:n]), n > len(units)
    out = []
    for s in [spec] if isinstance(spec, str) else spec:
        if not isinstance(s, str):
            raise ValueError(f"freeze: expected layer names, got {s!r}")
        hits = [n for n in names if fnmatch.fnmatchcase(n, s) or n == s or n.startswith(s + ".")]
        if not hits:
            raise ValueError(f"freeze: the model has no layer named {s!r}; its layers: {list(names)[:20]} "
                             "(finetuner.display(model) lists them)")
        out += hits
    return out, False


def print_rows(title: str, rows: list[dict]) -> None:
    """Print `display`'s rows as a table (the same columns as for torch models)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, caption="embedding: yes = the layer's output can be pooled to [B, D] "
                                       "(to_embedding_model)")
    for col, justify in (("name", "left"), ("type", "left"), ("output shape", "left"), ("params", "right"),
                         ("trainable", "left"), ("embedding", "left")):
        table.add_column(col, justify=justify)
    for r in rows:
        shape = "" if r["output_shape"] is None else "[" + ", ".join("B" if s is None else str(s)
                                                                   for s in r["output_shape"]) + "]"
        emb = "?" if r["embedding"] is None else "yes" if r["embedding"] else "no"
        table.add_row(r["name"], r["type"], shape, f"{r['params']:,}", r["trainable"], emb)
    Console(width=max(Console().width, 120)).print(table)


def embedding_reason(shape: tuple | None, floating: bool) -> str | None:
    """Why a layer output of this shape cannot be an embedding, or None when it can."""
    if shape is None:
        return None
    if not floating:
        return "its output is not floating-point"
    if len(shape) < 2:
        return f"its output {tuple(shape)} has no feature dimension"
    return None
