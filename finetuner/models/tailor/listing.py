"""`display`: a model's layers, in the order the forward pass runs them, as rows and a table.

The table is written once, here, for torch, Keras and Paddle models (`show_layer_table`).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from ...console import is_verbose
from ...console import show as show_renderable
from .layers import check_module, framework_backend
from .probe import check_input_size, guess_input, random_batch, run_trace
from .trace import Trace, trace_model

CAPTION = "embedding: yes = the layer's output can be pooled to [B, D] (to_embedding_model)"
COLUMNS = (("name", "left"), ("type", "left"), ("output shape", "left"), ("params", "right"),
           ("trainable", "left"), ("embedding", "left"))


def display(model: nn.Module, input_size: Any = None, input: Any = None, *, depth: int | None = None,
            show: bool = True) -> list[dict]:
    """List a model's layers, in the order the forward pass runs them, as a table.

    Each row is a layer (a named submodule, nested ones included) with its full dotted name (the
    name `to_embedding_model` and `freeze` take), its type, its output shape (batch dimension
    shown as B), its parameter count (its submodules' included), whether its parameters are
    trainable, and whether its output can serve as the embedding (one floating-point tensor
    with a batch dimension, that `to_embedding_model` pools to [B, D]).

    Args:
        model: a torch module, or a Keras / Paddle model (`finetuner.models.backends.keras.display`,
            `finetuner.models.backends.paddle.display`: the same rows).
        input_size: the shape of one item without the batch dimension, e.g. (3, 224, 224) for
            images or (16,) for token ids (a model starting with an embedding table gets random
            ids); the model is run once on a random batch of 2.
        input: a real batch instead (a tensor, or a tokenizer's output for a Hugging Face model).
            With neither, an input is guessed (Hugging Face dummy inputs, a first Linear's
            width, common image sizes); if that fails, shapes are left blank.
        depth: show only names with at most `depth` dots (0: top-level layers); None: all.
        show: print the table (rich; silenced by `finetuner.console.verbosity(False)`); False
            only returns the rows.

    Returns:
        One dict per layer: name, type, output_shape (tuple with the batch dimension as None, or
        None), params (int), trainable ("yes", "frozen", "partly", "-" for none), embedding
        (True / False / None when unknown), reason (why not, or "").

    Raises:
        TypeError: `model` is not a torch module.
        ValueError: a bad `input_size`, or the model cannot run on it (the message has the
            model's own error).
    """
    if (backend := framework_backend(model)) is not None:  # Keras / Paddle (finetuner.models.backends)
        return backend.display(model, input_size, input, depth=depth, show=show)
    check_module(model)
    if depth is not None and (isinstance(depth, bool) or not isinstance(depth, int) or depth < 0):
        raise ValueError(f"depth: expected None or an int >= 0, got {depth!r}")
    if input is not None or input_size is not None:
        x = input if input is not None else random_batch(model, check_input_size(input_size))
        trace = run_trace(model, x, input_size)
    else:
        x = guess_input(model)
        trace = trace_model(model, x) if x is not None else None
    names = [n for n, _ in model.named_modules() if n]
    if trace is not None:  # forward order; a container never called itself sits where its first layer ran
        names.sort(key=lambda n: layer_order(trace, n))
    rows, texts = [], []
    for name in names:
        if depth is not None and name.count(".") > depth:
            continue
        module = model.get_submodule(name)
        rec = trace.records[name] if trace is not None else None
        reason = trace.reason(name) if trace is not None else None
        shape = None
        if rec is not None and rec.shape is not None:
            shape = tuple(None if i == 0 and s == trace.batch else s for i, s in enumerate(rec.shape))
        rows.append({
            "name": name, "type": type(module).__name__, "output_shape": shape,
            "params": sum(p.numel() for p in module.parameters()), "trainable": trainable_text(module),
            "embedding": None if trace is None else reason is None, "reason": reason or "",
        })
        texts.append(("container" if layer_order(trace, name)[0] == 0 else "not called")
                     if rec is not None and not rec.calls else (
                         _shape_text(rec.shape, trace.batch) if rec is not None and rec.shape is not None else
                         (rec.kind if rec is not None else "?")))
    if show:
        total = sum(p.numel() for p in model.parameters())
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        show_layer_table(f"{type(model).__name__}: {total:,} parameters, {trainable:,} trainable", rows, texts)
    return rows


def layer_order(trace: Trace, name: str) -> tuple[int, int]:
    """Sort key of layer `name` in forward order: called layers by their first call; a container
    never called itself just before its first layer; layers never called last."""
    r = trace.records[name]
    if r.calls:
        return 0, r.start
    starts = [c.start for n, c in trace.records.items() if c.calls and n.startswith(name + ".")]
    return (0, min(starts) - 1) if starts else (1, 0)


def trainable_text(module: nn.Module) -> str:
    """"yes", "frozen", "partly", or "-" for a module without parameters."""
    flags = [p.requires_grad for p in module.parameters()]
    if not flags:
        return "-"
    return "yes" if all(flags) else "frozen" if not any(flags) else "partly"


def _shape_text(shape: tuple | None, batch: int) -> str:
    if shape is None:
        return ""
    dims = ["B" if i == 0 and s == batch else str(s) for i, s in enumerate(shape)]
    return "[" + ", ".join(dims) + "]"


def shape_text(output_shape: tuple | None) -> str:
    """A row's `output_shape` as the table shows it: "[B, 128]" (None is the batch dimension)."""
    if output_shape is None:
        return ""
    return "[" + ", ".join("B" if s is None else str(s) for s in output_shape) + "]"


def show_layer_table(title: str, rows: list[dict], shapes: list[str] | None = None) -> None:
    """Print `display`'s rows as a table (for torch, Keras and Paddle models alike), wide enough
    that dotted names and shapes are never cut, whatever the terminal; silenced by
    `finetuner.console.verbosity(False)`.

    Args:
        title: the table's title (the model and its parameter counts).
        rows: `display`'s rows.
        shapes: the text of each row's output-shape cell; default `shape_text(output_shape)`.
    """
    if not is_verbose():
        return
    from rich.table import Table

    shapes = [shape_text(r["output_shape"]) for r in rows] if shapes is None else shapes
    cells = [(r["name"], r["type"], s, f"{r['params']:,}", r["trainable"],
              "?" if r["embedding"] is None else "yes" if r["embedding"] else "no") for r, s in zip(rows, shapes)]
    table = Table(title=title, caption=CAPTION)
    for col, justify in COLUMNS:
        table.add_column(col, justify=justify)
    for row in cells:
        table.add_row(*row)
    width = sum(max([len(c)] + [len(str(v)) for v in values]) + 3
                for (c, _), values in zip(COLUMNS, zip(*cells) if cells else [()] * len(COLUMNS))) + 6
    show_renderable(table, min_width=width)
