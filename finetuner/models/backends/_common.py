"""What the Keras and Paddle tailors share: their argument check and their `freeze` rule, each
the torch tailor's one (`finetuner.models.tailor`) with the poolings and layer names of these
frameworks, and the embedding-layer rule for an output shape."""

from __future__ import annotations

import fnmatch
from typing import Any, Sequence

from ..tailor import check_tailor_args as check
from ..tailor import freeze_spec

POOLINGS = ("auto", "mean", "max", "flatten", "none")


def check_tailor_args(layer_name: Any, freeze: Any, output_dim: Any, projection_head: Any, pooling: str,
                      head_type: type) -> None:
    """Raise ValueError / TypeError for a bad `to_embedding_model` argument, before the model
    runs: `finetuner.models.tailor.check_tailor_args` with the poolings Keras / Paddle offer."""
    check(layer_name, freeze, output_dim, projection_head, pooling, head_type, POOLINGS)


def resolve_freeze(spec: Any, units: Sequence[str], names: Sequence[str], has_head: bool) -> tuple[list[str], bool]:
    """The layer names `freeze=spec` freezes, and whether the head is frozen too: the tailor's
    rule (`finetuner.models.tailor.freeze_spec`) over a Keras / Paddle model's layers.

    Args:
        spec: True (every layer in `names`: only the head trains), False / None, an int N (the
            first N of `units`, the head counting as one more unit; negative counts from the
            end), or layer names / prefixes / glob patterns.
        units: names of the layers that hold weights, in forward order.
        names: every layer name (for names and patterns).
        has_head: whether a projection head follows.

    Raises:
        ValueError: an int out of range or an unknown name / pattern.
    """

    def match(s: str) -> list[str]:
        hits = [n for n in names if fnmatch.fnmatchcase(n, s) or n == s or n.startswith(s + ".")]
        if not hits:
            raise ValueError(f"freeze: the model has no layer named {s!r}; its layers: {list(names)[:20]} "
                             "(finetuner.display(model) lists them)")
        return hits

    return freeze_spec(spec, units, match, everything=names, has_head=has_head, weights="weights")


def embedding_reason(shape: tuple | None, floating: bool) -> str | None:
    """Why a layer output of this shape cannot be an embedding, or None when it can."""
    if shape is None:
        return None
    if not floating:
        return "its output is not floating-point"
    if len(shape) < 2:
        return f"its output {tuple(shape)} has no feature dimension"
    return None
