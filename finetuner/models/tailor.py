"""Tailor: turn a general model (a classifier, a backbone) into an embedding model.

`display` lists a model's layers; `to_embedding_model` cuts it at a layer, pools that layer's
output to [B, D], freezes layers and adds a projection head; `freeze` freezes layers of any
module. The cut is a forward hook that stops the forward pass once the chosen layer has run, so
the model's own forward code (a `Sequential`, nested custom modules, a Hugging Face transformer,
EfficientNet) runs unchanged, whatever its control flow; the layers that only run after the cut
are removed. Idea and API after Jina Finetuner's Tailor (Xiao et al., 2021), with its known bugs
fixed: names with several dots work, and freezing a layer freezes its biases too.
"""

from __future__ import annotations

import difflib
import fnmatch
import inspect
import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

POOLINGS = ("auto", "mean", "max", "cls", "flatten", "none")
HEADS = ("linear", "mlp")
# module types whose train-mode output is random: never a good place to take an embedding from
_DROPOUTS = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout)
_PROBE_BATCH = 2
_GUESS_SIZES = (224, 32, 28, 64, 96, 128, 256, 299)


class _CutHere(BaseException):
    """Raised by the cut hook to stop the forward pass. A BaseException so that model code
    with `except Exception:` around its layers does not swallow it."""


class _CutOff(nn.Module):
    """Stands in for a layer that only ran after the cut: it holds no weights, and calling it
    (which the cut makes impossible) says what happened."""

    def __init__(self, name: str, type_name: str) -> None:
        super().__init__()
        self.cut_name, self.cut_type = name, type_name

    def forward(self, *args, **kwargs):
        raise RuntimeError(f"layer {self.cut_name!r} ({self.cut_type}) was removed by to_embedding_model: "
                           "it runs after the embedding layer")

    def extra_repr(self) -> str:
        return f"{self.cut_name!r}, was {self.cut_type}"


# ---- calling a model and reading its output -------------------------------------------------
def _call(model: nn.Module, x: Any) -> Any:
    """Run `model` on a batch: a mapping whose keys are arguments of `forward` (a tokenizer's
    output for a Hugging Face model) is passed as keyword arguments, anything else as one argument."""
    if isinstance(x, Mapping):
        params = inspect.signature(model.forward).parameters
        if any(k in params for k in x) and not any(p.kind == p.VAR_POSITIONAL for p in params.values()):
            return model(**x)
    return model(x)


def single_tensor(out: Any) -> torch.Tensor | None:
    """The one tensor in a layer's output: the output itself, or the only tensor inside a
    tuple / list / mapping (e.g. a Hugging Face layer's `(hidden_states,)` or `BaseModelOutput`);
    None when there is no tensor or more than one."""
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, Mapping):
        values = list(out.values())
    elif isinstance(out, (tuple, list)):
        values = list(out)
    else:
        return None
    tensors = [v for v in values if isinstance(v, torch.Tensor)]
    return tensors[0] if len(tensors) == 1 else None


def _describe(out: Any) -> str:
    if isinstance(out, torch.Tensor):
        return "tensor"
    if isinstance(out, Mapping):
        return f"{type(out).__name__} with {sum(isinstance(v, torch.Tensor) for v in out.values())} tensors"
    if isinstance(out, (tuple, list)):
        return f"{type(out).__name__} of {len(out)} ({sum(isinstance(v, torch.Tensor) for v in out)} tensors)"
    return type(out).__name__


# ---- tracing: which layer runs when, and what it returns --------------------------------------
@dataclass
class _Record:
    name: str
    module: nn.Module
    start: int = -1  # order of the first call's start
    end: int = -1  # order of the first call's end
    calls: int = 0
    shape: tuple | None = None  # of the single output tensor
    dtype: torch.dtype | None = None
    kind: str = ""  # what the output is, when it is not one tensor


@dataclass
class _Trace:
    records: dict[str, _Record]  # every named module, called or not
    batch: int
    output: Any = field(default=None, repr=False)

    def called(self) -> list[_Record]:
        return sorted((r for r in self.records.values() if r.calls), key=lambda r: r.start)

    def reason(self, name: str) -> str | None:
        """Why the output of layer `name` cannot be an embedding, or None when it can."""
        r = self.records[name]
        if not r.calls:
            if any(c.calls and n.startswith(name + ".") for n, c in self.records.items()):
                return "it is a container that is never called itself (its layers are)"
            return "it is not called in the forward pass"
        if r.calls > 1:
            return f"it is called {r.calls} times in one forward pass, so its output is ambiguous"
        if r.shape is None:
            return f"it returns {r.kind}, not one tensor"
        if r.dtype is not None and not r.dtype.is_floating_point:
            return f"its output is {r.dtype}, not floating point"
        if len(r.shape) < 2 or r.shape[0] != self.batch:
            return f"its output of shape {tuple(r.shape)} has no batch dimension of size {self.batch}"
        return None


def _trace(model: nn.Module, x: Any) -> _Trace:
    """Run `model` once on the batch `x` (eval mode, no gradients) and record every layer's
    order, number of calls and output. Raises whatever the forward pass raises."""
    records = {name: _Record(name, m) for name, m in model.named_modules()}
    counter = itertools.count()
    handles = []

    def pre(name):
        def hook(module, args):
            r = records[name]
            if r.calls == 0:
                r.start = next(counter)
            r.calls += 1
        return hook

    def post(name):
        def hook(module, args, out):
            r = records[name]
            if r.end < 0:
                r.end = next(counter)
                t = single_tensor(out)
                if t is not None:
                    r.shape, r.dtype = tuple(t.shape), t.dtype
                else:
                    r.kind = _describe(out)
        return hook

    for name, m in model.named_modules():
        handles.append(m.register_forward_pre_hook(pre(name)))
        handles.append(m.register_forward_hook(post(name)))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = _call(model, x)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return _Trace(records, _batch_size(x), out)


def _batch_size(x: Any) -> int:
    t = single_tensor(x) if not isinstance(x, Mapping) else next(
        (v for v in x.values() if isinstance(v, torch.Tensor)), None)
    if t is not None and t.dim() > 0:
        return int(t.shape[0])
    return len(x) if isinstance(x, (list, tuple)) else _PROBE_BATCH


# ---- the probe input ---------------------------------------------------------------------
def _is_hf(model: nn.Module) -> bool:
    return hasattr(model, "config") and hasattr(model, "main_input_name")


def _first_leaf(model: nn.Module) -> nn.Module | None:
    return next((m for m in model.modules() if any(True for _ in m.parameters(recurse=False))), None)


def _check_input_size(input_size: Any) -> tuple[int, ...]:
    if isinstance(input_size, (int,)) and not isinstance(input_size, bool):
        input_size = (input_size,)
    if (not isinstance(input_size, (tuple, list)) or not input_size
            or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in input_size)):
        raise ValueError(f"input_size: expected the shape of one item without the batch dimension, a tuple of "
                         f"positive ints such as (3, 224, 224), got {input_size!r}")
    return tuple(input_size)


def _from_size(model: nn.Module, size: tuple[int, ...]) -> Any:
    """A random batch of 2 items of shape `size`: token ids when the model starts with an
    embedding table (with an attention mask for Hugging Face models), else floats in [0, 1)."""
    g = torch.Generator().manual_seed(0)
    leaf = _first_leaf(model)
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    if isinstance(leaf, nn.Embedding):
        ids = torch.randint(0, min(leaf.num_embeddings, 1000), (_PROBE_BATCH, *size), generator=g).to(device)
        if _is_hf(model):
            return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        return ids
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    return torch.rand(_PROBE_BATCH, *size, generator=g).to(device=device, dtype=dtype)


def _guess_input(model: nn.Module) -> Any:
    """A batch the model accepts, found without help, or None: Hugging Face models bring dummy
    inputs; a model starting with Linear(n, .) takes [2, n]; one starting with a convolution
    takes the first of some common image sizes that runs."""
    if _is_hf(model):
        dummy = getattr(model, "dummy_inputs", None)
        if isinstance(dummy, Mapping) and "input_ids" in dummy:
            ids = dummy["input_ids"][:_PROBE_BATCH].to(next((p.device for p in model.parameters()), "cpu"))
            return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    leaf = _first_leaf(model)
    if isinstance(leaf, nn.Linear):
        return _from_size(model, (leaf.in_features,))
    if isinstance(leaf, nn.Embedding):
        return _from_size(model, (16,))
    if isinstance(leaf, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        dims = len(leaf.kernel_size)
        preferred = getattr(model, "input_image_size", None)
        sizes = ([preferred] if isinstance(preferred, int) else []) + list(_GUESS_SIZES)
        for s in sizes:
            x = _from_size(model, (leaf.in_channels, *([s] * dims)))
            try:
                _trace(model, x)
                return x
            except Exception:  # this size does not fit: try the next one
                continue
    return None


def _probe(model: nn.Module, input_size: Any, input: Any, what: str) -> tuple[Any, bool]:
    """(a batch to trace the model with, whether it was guessed). Raises a ValueError naming
    `input_size` when no batch can be found."""
    if input is not None:
        return input, False
    if input_size is not None:
        return _from_size(model, _check_input_size(input_size)), False
    x = _guess_input(model)
    if x is None:
        raise ValueError(f"input_size: {what} needs to run the model once, and no input could be guessed for "
                         f"{type(model).__name__}; pass input_size=(C, H, W) (one item's shape) or input=a batch")
    return x, True


def _run_trace(model: nn.Module, x: Any, input_size: Any) -> _Trace:
    try:
        return _trace(model, x)
    except Exception as e:  # the model's own error says best what does not fit
        arg = "input_size" if input_size is not None else "input"
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{arg}: {type(model).__name__} cannot run on a batch of shape {shape} "
                         f"({arg}={input_size if input_size is not None else '...'}): "
                         f"{type(e).__name__}: {e}") from e


# ---- display ----------------------------------------------------------------------------
def _trainable(module: nn.Module) -> str:
    flags = [p.requires_grad for p in module.parameters()]
    if not flags:
        return "-"
    return "yes" if all(flags) else "frozen" if not any(flags) else "partly"


def _shape_text(shape: tuple | None, batch: int) -> str:
    if shape is None:
        return ""
    dims = ["B" if i == 0 and s == batch else str(s) for i, s in enumerate(shape)]
    return "[" + ", ".join(dims) + "]"


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
        show: print the table (rich); False only returns the rows.

    Returns:
        One dict per layer: name, type, output_shape (tuple with the batch dimension as None, or
        None), params (int), trainable ("yes", "frozen", "partly", "-" for none), embedding
        (True / False / None when unknown), reason (why not, or "").

    Raises:
        TypeError: `model` is not a torch module.
        ValueError: a bad `input_size`, or the model cannot run on it (the message has the
            model's own error).
    """
    if (backend := _framework_backend(model)) is not None:  # Keras / Paddle (finetuner.models.backends)
        return backend.display(model, input_size, input, depth=depth, show=show)
    _check_module(model)
    if depth is not None and (isinstance(depth, bool) or not isinstance(depth, int) or depth < 0):
        raise ValueError(f"depth: expected None or an int >= 0, got {depth!r}")
    if input is not None or input_size is not None:
        x = input if input is not None else _from_size(model, _check_input_size(input_size))
        trace = _run_trace(model, x, input_size)
    else:
        x = _guess_input(model)
        trace = _trace(model, x) if x is not None else None
    names = [n for n, _ in model.named_modules() if n]
    if trace is not None:  # forward order; a container never called itself sits where its first layer ran
        names.sort(key=lambda n: _order_key(trace, n))
    rows = []
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
            "params": sum(p.numel() for p in module.parameters()), "trainable": _trainable(module),
            "embedding": None if trace is None else reason is None, "reason": reason or "",
            "_text": ("container" if _order_key(trace, name)[0] == 0 else "not called")
            if rec is not None and not rec.calls else (
                _shape_text(rec.shape, trace.batch) if rec is not None and rec.shape is not None else
                (rec.kind if rec is not None else "?")),
        })
    if show:
        _print_rows(model, rows)
    for r in rows:
        del r["_text"]
    return rows


def _order_key(trace: _Trace, name: str) -> tuple[int, int]:
    r = trace.records[name]
    if r.calls:
        return 0, r.start
    starts = [c.start for n, c in trace.records.items() if c.calls and n.startswith(name + ".")]
    return (0, min(starts) - 1) if starts else (1, 0)


def _print_rows(model: nn.Module, rows: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    table = Table(title=f"{type(model).__name__}: {total:,} parameters, {trainable:,} trainable",
                  caption="embedding: yes = the layer's output can be pooled to [B, D] (to_embedding_model)")
    for col, justify in (("name", "left"), ("type", "left"), ("output shape", "left"), ("params", "right"),
                         ("trainable", "left"), ("embedding", "left")):
        table.add_column(col, justify=justify)
    for r in rows:
        emb = "?" if r["embedding"] is None else "yes" if r["embedding"] else "no"
        table.add_row(r["name"], r["type"], r["_text"], f"{r['params']:,}", r["trainable"], emb)
    # wide enough that dotted names and shapes are never cut, whatever the terminal
    width = sum(max([len(c)] + [len(str(r[k])) for r in rows]) + 3 for c, k in (
        ("name", "name"), ("type", "type"), ("output shape", "_text"), ("params", "params"),
        ("trainable", "trainable"), ("embedding", "embedding"))) + 6
    console = Console()
    Console(width=max(console.width, width)).print(table)


# ---- names ------------------------------------------------------------------------------
def _framework_backend(model: Any):
    from .backends import backend_for

    return backend_for(model)


def _check_module(model: Any) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")


def _unknown(arg: str, name: str, model: nn.Module, extra: str = "") -> ValueError:
    names = [n for n, _ in model.named_modules() if n]
    close = difflib.get_close_matches(name, names, n=5, cutoff=0.6)
    close += [n for n in names if name and (n.endswith("." + name) or name in n) and n not in close][: 5 - len(close)]
    hint = f"close matches: {', '.join(repr(c) for c in close)}" if close else f"it has {len(names)} layers"
    return ValueError(f"{arg}: {type(model).__name__} has no layer named {name!r}{extra}; {hint} "
                      "(finetuner.display(model) lists every layer)")


def _get_layer(model: nn.Module, name: Any, arg: str = "layer_name") -> nn.Module:
    if not isinstance(name, str) or not name:
        raise ValueError(f"{arg}: expected a layer's dotted name such as 'encoder.layer.3' "
                         f"(finetuner.display(model) lists them), got {name!r}")
    try:
        return model.get_submodule(name)
    except AttributeError:
        raise _unknown(arg, name, model) from None


def _set_layer(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, new)


# ---- freezing ---------------------------------------------------------------------------
def _layer_units(model: nn.Module, trace: _Trace | None) -> list[str]:
    """The layers that `freeze=N` counts: every module that holds parameters itself (a Linear,
    a convolution, a norm, an embedding table...), in forward order when traced (registration
    order otherwise; layers the forward pass never calls come last)."""
    units = [n for n, m in model.named_modules() if any(True for _ in m.parameters(recurse=False))]
    if trace is not None:
        order = {r.name: i for i, r in enumerate(trace.called())}
        units.sort(key=lambda n: order.get(n, len(order)))
    return units


def _resolve_freeze(model: nn.Module, spec: Any, trace: _Trace | None, extra_units: int = 0,
                    cut_names: Sequence[str] = ()) -> list[str]:
    """The module / parameter names that `freeze=spec` freezes in `model`.

    `extra_units` counts layers that follow the model (a projection head, one unit) for an int
    spec; an int reaching into them is reported by the caller."""
    if spec is False or spec is None:
        return []
    if spec is True:
        return [""]
    if isinstance(spec, int):
        units = _layer_units(model, trace)
        total = len(units) + extra_units
        n = spec if spec >= 0 else total + spec
        if not 0 <= n <= total:
            raise ValueError(f"freeze: {spec} layers asked for, but the model has {total} layers that hold "
                             f"parameters{' (the projection head counts as one)' if extra_units else ''}; "
                             f"expected an int in [-{total}, {total}]")
        return units[: min(n, len(units))] + ["<head>"] * max(0, n - len(units))
    if isinstance(spec, str):
        spec = [spec]
    if not isinstance(spec, (list, tuple, set)) or not all(isinstance(s, str) for s in spec):
        raise ValueError(f"freeze: expected True / False, an int (freeze the first N layers; negative counts from "
                         f"the end) or a list of layer names or prefixes, got {spec!r}")
    modules = [n for n, _ in model.named_modules() if n]
    params = {n for n, _ in model.named_parameters()}
    out = []
    for s in spec:
        if any(c in s for c in "*?["):  # a glob over dotted names, e.g. "encoder.layer.*"
            hits = [n for n in modules if fnmatch.fnmatchcase(n, s)]
            if not hits:
                raise _unknown("freeze", s, model, " (no layer matches this pattern)")
            out += hits
        elif s in params:
            out.append(s)
        elif s in cut_names or any(s.startswith(c + ".") for c in cut_names):
            raise ValueError(f"freeze: layer {s!r} runs after the embedding layer, so to_embedding_model removed it; "
                             "freeze layers at or before the cut")
        else:
            _get_layer(model, s, "freeze")  # raises with close matches when unknown
            out.append(s)
    return out


def _apply_freeze(model: nn.Module, names: Sequence[str]) -> list[str]:
    """Set requires_grad=False on every parameter of the named modules / parameters (biases
    included); returns the frozen parameter names."""
    frozen = []
    params = dict(model.named_parameters())
    for n in names:
        if n == "<head>":
            continue
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
    _check_module(model)
    trace = None
    if isinstance(layers, int) and not isinstance(layers, bool):
        x = input if input is not None else (
            _from_size(model, _check_input_size(input_size)) if input_size is not None else _guess_input(model))
        trace = _run_trace(model, x, input_size) if x is not None else None
    return _apply_freeze(model, _resolve_freeze(model, layers, trace))


# ---- pooling and heads --------------------------------------------------------------------
def pool(t: torch.Tensor, pooling: str = "auto", attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Reduce a layer's output [B, ...] to embeddings [B, D].

    Args:
        t: float tensor [B, D], [B, T, H] (tokens) or [B, C, H, W...] (feature maps).
        pooling: "auto": [B, D] as is; [B, T, H] mean over the tokens the attention mask
            keeps (plain mean without a mask: mean pooling as in Sentence-BERT, Reimers &
            Gurevych, 2019); [B, C, H, W...] mean over the spatial dimensions (global average
            pooling, Lin et al., 2014), so D = C whatever the image size. "mean" / "max": the
            same reduction with mean / max. "cls": the first token of [B, T, H]. "flatten":
            [B, prod(rest)]. "none": the output itself, which must be [B, D].
        attention_mask: int/bool [B, T], 1 for real tokens, or None.

    Raises:
        ValueError: an unknown pooling, or a shape it cannot reduce.
    """
    if pooling not in POOLINGS:
        raise ValueError(f"pooling: expected one of {POOLINGS}, got {pooling!r}")
    if pooling == "none" or (pooling == "auto" and t.dim() == 2):
        return t
    if pooling == "flatten" or t.dim() == 2:
        return t.flatten(1)
    if t.dim() == 3:
        if pooling == "cls":
            return t[:, 0]
        if attention_mask is not None and attention_mask.shape == t.shape[:2]:
            m = attention_mask.to(t.dtype).unsqueeze(-1)
            if pooling == "max":
                return t.masked_fill(m == 0, torch.finfo(t.dtype).min).amax(1)
            return (t * m).sum(1) / m.sum(1).clamp(min=1)
        return t.amax(1) if pooling == "max" else t.mean(1)
    if pooling == "cls":
        raise ValueError(f"pooling: 'cls' takes the first token of a [B, T, H] output, got shape {tuple(t.shape)}")
    dims = tuple(range(2, t.dim()))
    return t.amax(dims) if pooling == "max" else t.mean(dims)


def projection_head(in_dim: int, output_dim: int, kind: str = "linear") -> nn.Module:
    """A projection head from [B, in_dim] to [B, output_dim].

    kind "linear": one Linear layer. "mlp": Linear(in_dim, in_dim), ReLU, Linear(in_dim,
    output_dim), the non-linear projection head of SimCLR (Chen et al., 2020).
    """
    if kind == "linear":
        return nn.Linear(in_dim, output_dim)
    if kind == "mlp":
        return nn.Sequential(nn.Linear(in_dim, in_dim), nn.ReLU(), nn.Linear(in_dim, output_dim))
    raise ValueError(f"projection_head: expected {HEADS} or a torch module, got {kind!r}")


# ---- the embedding model -------------------------------------------------------------------
class EmbeddingModel(nn.Module):
    """A general model cut at a layer, pooled to [B, D], with an optional projection head.

    Built by `to_embedding_model`. `forward(x)` runs the backbone's own forward on `x` until
    `layer_name` has run (the rest never runs: a hook stops the pass), pools that layer's
    output with `pooling`, and applies `head`. Layers listed in `eval_layers` stay in eval mode
    when the model trains (they are frozen: fixed batch-norm statistics, no dropout).

    Args:
        backbone: the general model (changed in place by `to_embedding_model`).
        layer_name: dotted name of the embedding layer in `backbone`; None: its own output.
        head: a module [B, D] -> [B, D'], or None.
        pooling: see `pool`.
        eval_layers: names of backbone layers kept in eval mode ("" is the backbone itself).

    Inputs:
        x: what the backbone takes: a tensor, or a mapping (a tokenizer's output) passed as
        keyword arguments when its keys are arguments of the backbone's forward.

    Outputs:
        float tensor [B, D'] (D without a head).
    """

    def __init__(self, backbone: nn.Module, layer_name: str | None = None, head: nn.Module | None = None,
                 pooling: str = "auto", eval_layers: Sequence[str] = ()) -> None:
        super().__init__()
        self.backbone, self.head = backbone, head
        self.layer_name, self.pooling = layer_name, pooling
        self.eval_layers = list(eval_layers)

    def features(self, x: Any) -> torch.Tensor:
        """The pooled output of the embedding layer: [B, D], before the head."""
        if self.layer_name is None:
            out = _call(self.backbone, x)
        else:
            captured = []

            def hook(module, args, output):
                captured.append(output)
                raise _CutHere

            handle = self.backbone.get_submodule(self.layer_name).register_forward_hook(hook)
            try:
                out = _call(self.backbone, x)
            except _CutHere:
                out = captured[0]
            finally:
                handle.remove()
        t = single_tensor(out)
        if t is None:
            raise ValueError(f"layer_name: {self.layer_name!r} returned {_describe(out)}, not one tensor")
        mask = x.get("attention_mask") if isinstance(x, Mapping) else None
        return pool(t, self.pooling, mask)

    def forward(self, x: Any) -> torch.Tensor:
        f = self.features(x)
        return self.head(f) if self.head is not None else f

    def train(self, mode: bool = True) -> "EmbeddingModel":
        super().train(mode)
        if mode:
            for name in self.eval_layers:
                (self.backbone.get_submodule(name) if name else self.backbone).eval()
        return self

    @property
    def backbone_frozen(self) -> bool:
        """True when no backbone parameter trains (what frozen-prefix caching needs)."""
        return not any(p.requires_grad for p in self.backbone.parameters())

    def extra_repr(self) -> str:
        return f"layer_name={self.layer_name!r}, pooling={self.pooling!r}"


def _default_layer(trace: _Trace) -> str | None:
    """The last layer before the classifier: the classifier is the last Linear the forward pass
    calls; the embedding layer is the layer that finished last before it started (dropout
    skipped) whose output can be an embedding. None (the model's own output) without a Linear."""
    linears = [r for r in trace.called() if isinstance(r.module, nn.Linear) and r.name]
    if not linears:
        return None
    classifier = linears[-1]
    before = sorted((r for r in trace.called() if r.name and 0 <= r.end < classifier.start), key=lambda r: -r.end)
    for r in before:
        if isinstance(r.module, _DROPOUTS) or "dropout" in type(r.module).__name__.lower():
            continue
        if trace.reason(r.name) is None:
            return r.name
    return None


def _prune_after(model: nn.Module, trace: _Trace, layer: str) -> list[str]:
    """Replace the layers that only run after `layer` has finished by `_CutOff` stubs (their
    weights go away); returns their names. Layers the forward pass never called are kept."""
    end = trace.records[layer].end
    removed: list[str] = []
    for r in sorted(trace.records.values(), key=lambda r: r.name.count(".")):
        if not r.name or not r.calls or r.start < end:
            continue
        if any(r.name.startswith(p + ".") for p in removed):
            continue
        _set_layer(model, r.name, _CutOff(r.name, type(r.module).__name__))
        removed.append(r.name)
    return removed


def _eval_layers(model: nn.Module, trace: _Trace, layer: str | None) -> list[str]:
    """Backbone layers to keep in eval mode: every layer whose parameters are all frozen, and
    every layer that finishes before the first layer with a trainable parameter starts (the
    frozen prefix: its dropout and batch norm must not change its output)."""
    names = [n for n, m in model.named_modules()
             if n and (ps := list(m.parameters())) and not any(p.requires_grad for p in ps)]
    kept = {id(m) for m in model.modules()}  # layers cut off by _prune_after no longer count
    trainable_starts = [r.start for r in trace.called() if id(r.module) in kept
                        and any(p.requires_grad for p in r.module.parameters(recurse=False))]
    if not trainable_starts:  # nothing in the backbone trains: all of it is a fixed function
        return [""] + [n for n, _ in model.named_modules() if n]
    first = min(trainable_starts)
    names += [r.name for r in trace.called()
              if r.name and id(r.module) in kept and 0 <= r.end < first and r.name not in names]
    return names


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


def to_embedding_model(model: nn.Module, layer_name: str | None = None, freeze: Any = False,
                       output_dim: int | None = None, projection_head: Any = None, *,
                       input_size: Any = None, input: Any = None, pooling: str = "auto") -> EmbeddingModel:
    """Turn a general model (a classifier, a backbone) into an embedding model [B, D].

    The model is cut after `layer_name`: its forward pass stops there, and the layers that only
    run after it are removed (their weights too). The layer's output is pooled to [B, D]
    (`pool`), frozen layers are set, and a projection head is added.

    Args:
        model: a torch module: an `nn.Sequential`, nested custom modules, a Hugging Face
            transformer (`AutoModel`; cut e.g. after "encoder.layer.3", mean-pooled over the
            attention mask), a CNN such as EfficientNet. Changed in place (cut layers are
            replaced by stubs, frozen parameters get requires_grad=False); pass
            `copy.deepcopy(model)` to keep the original. A Keras or Paddle model gets a model of
            its own framework (`finetuner.models.backends.keras.to_embedding_model`, `...paddle...`).
        layer_name: dotted name of the embedding layer as `display` lists it, nested names
            included ("_blocks.15", "encoder.layer.3.output"). None: the last layer before the
            classifier (the last Linear the forward pass calls), dropout skipped; the model's own
            output if it has no Linear.
        freeze: False; True (every layer of the cut model: only the head trains); a list of
            layer names or prefixes (each freezes that layer and all under it, biases included;
            glob patterns work); or an int N: freeze the first N layers that hold parameters, in
            forward order, the projection head counting as one last layer; a negative N counts
            from the end, so -1 freezes everything but the head (or, without a head, all but the
            last layer). Frozen layers stay in eval mode while training.
        output_dim: add a projection head to this size (int >= 1): one Linear, or the MLP of
            `projection_head="mlp"`.
        projection_head: "linear" (default with `output_dim`), "mlp" (SimCLR's Linear-ReLU-
            Linear; needs `output_dim`), or your own module taking [B, D] to [B, D'].
        input_size: shape of one item without the batch dimension, e.g. (3, 224, 224), to run
            the model once (on a random batch of 2) and find the layers' order and shapes.
        input: a real batch instead (e.g. a tokenizer's output). With neither, an input is
            guessed (see `display`).
        pooling: "auto" (default), "mean", "max", "cls", "flatten" or "none"; see `pool`.

    Returns:
        `EmbeddingModel` mapping a batch to float [B, D'].

    Raises:
        TypeError: `model` or `projection_head` is of the wrong type.
        ValueError, before any training: an unknown `layer_name` (with the close matches), a
            layer whose output cannot be an embedding (not one floating tensor with a batch
            dimension, or called more than once), an `input_size` the model cannot run on (with
            the model's error), a bad `freeze` / `output_dim` / `pooling`, or a head that does not
            fit the layer's output. Everything frozen with no head is a valid (fixed) embedding
            model; `fit` refuses to train it, before training starts.
    """
    if (backend := _framework_backend(model)) is not None:  # Keras / Paddle (finetuner.models.backends)
        return backend.to_embedding_model(model, layer_name, freeze, output_dim, projection_head,
                                          input_size=input_size, input=input, pooling=pooling)
    _check_module(model)
    check_tailor_args(layer_name, freeze, output_dim, projection_head, pooling, nn.Module, POOLINGS)
    if layer_name is not None:
        _get_layer(model, layer_name)  # unknown names fail before the model runs

    x, _ = _probe(model, input_size, input, "to_embedding_model")
    trace = _run_trace(model, x, input_size)
    if layer_name is None:
        layer_name = _default_layer(trace)
    elif (why := trace.reason(layer_name)) is not None:
        raise ValueError(f"layer_name: the output of {layer_name!r} ({type(model.get_submodule(layer_name)).__name__}) "
                         f"cannot be an embedding: {why}; finetuner.display(model) marks the layers that can")
    removed = _prune_after(model, trace, layer_name) if layer_name is not None else []

    emb = EmbeddingModel(model, layer_name, None, pooling)
    was_training = model.training
    emb.eval()
    with torch.no_grad():
        try:
            feats = emb.features(x)
        except ValueError as e:
            raise ValueError(f"pooling: {e}") from e
    if feats.dim() != 2 or feats.shape[0] != trace.batch:
        raise ValueError(f"pooling: {pooling!r} gives shape {tuple(feats.shape)} from layer {layer_name!r}, "
                         f"not [batch, dim]; use pooling='auto', 'mean' or 'flatten'")
    in_dim = int(feats.shape[1])

    head = None
    if isinstance(projection_head, nn.Module):
        head = projection_head
    elif output_dim is not None:
        head = _make_head(in_dim, output_dim, projection_head or "linear")
    if head is not None:
        with torch.no_grad():
            was = head.training
            head.eval()
            try:
                out = head(feats.to(next(iter(head.parameters()), feats).dtype))
            except Exception as e:
                raise ValueError(f"projection_head: it must take the layer's pooled output [B, {in_dim}], "
                                 f"but it failed on it: {type(e).__name__}: {e}") from e
            finally:
                head.train(was)
        if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != feats.shape[0]:
            raise ValueError(f"projection_head: expected it to map [B, {in_dim}] to [B, D], got "
                             f"{tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__}")
        if output_dim is not None and out.shape[1] != output_dim:
            raise ValueError(f"output_dim: {output_dim} asked for, but projection_head gives {out.shape[1]}")
        emb.head = head

    names = _resolve_freeze(model, freeze, trace, extra_units=int(head is not None), cut_names=removed)
    if "<head>" in names and head is not None:
        names.remove("<head>")
        _apply_freeze(head, [""])
    _apply_freeze(model, names)
    emb.eval_layers = _eval_layers(model, trace, layer_name)
    emb.train(was_training)
    return emb


def _make_head(in_dim: int, output_dim: int, kind: str) -> nn.Module:
    return projection_head(in_dim, output_dim, kind)


def is_tailored(model: Any) -> bool:
    """True for a model built by `to_embedding_model`."""
    return isinstance(model, EmbeddingModel)


# ---- `fit(..., to_embedding_model=True, layer_name=..., freeze=..., output_dim=...)` -------------
TAILOR_ARGS = ("to_embedding_model", "layer_name", "freeze", "freeze_layer", "output_dim", "projection_head",
               "input_size", "pooling")


def pop_tailor_args(kwargs: dict) -> dict:
    """Remove the tailor's arguments from `fit`'s keyword arguments and return them. `pooling`
    alone is not one (the text recipe has its own): it joins the tailor's only with another."""
    if not any(k in kwargs for k in TAILOR_ARGS if k != "pooling"):
        return {}
    return {k: kwargs.pop(k) for k in TAILOR_ARGS if k in kwargs}


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


def probe_batch(train_data: Any, fit_kwargs: dict, count: int = 2) -> tuple[list, Any]:
    """The first `count` training items and their collated batch: what the model will see in
    `fit` (its `format`, `preprocess_fn` and `collate_fn` applied), to probe the layer shapes."""
    from ..data.dataset import Collate, LabeledDataset
    from ..data.formats import to_labeled

    data = to_labeled(train_data, fit_kwargs.get("format"), "train_data")
    items, labels = LabeledDataset(data, fit_kwargs.get("preprocess_fn")).__getitems__(np.arange(min(count, len(data))))
    batch, _ = Collate(fit_kwargs.get("collate_fn"))((items, labels))
    return items, batch


def tailor_for_fit(model: Any, train_data: Any, tailor: dict, fit_kwargs: dict) -> EmbeddingModel:
    """Apply `fit`'s tailor arguments: `to_embedding_model` on `model`, probed with two real
    training items (after `preprocess_fn` / `collate_fn`), so no `input_size` is needed.

    A new projection head is initialised from `fit`'s `seed`, so a fit is reproducible.
    `freeze_layer` is the seed's name for an int `freeze` (`fit(model, data, freeze_layer=-1,
    output_dim=128)`: everything but the new head is frozen). `input_size`, when given, must
    be the shape of one training item.

    Raises:
        TypeError: `model` is not a torch module.
        ValueError: contradictory arguments (`to_embedding_model=False` with other tailor
            arguments, `freeze` and `freeze_layer` both), an `input_size` that differs from the
            items' shape, or any error of `to_embedding_model`.
    """
    from ..engine.predict import move_to_device

    tailor = resolve_tailor_args(tailor)
    if tailor is None:
        return model
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: the tailor arguments need a torch.nn.Module, got {type(model).__name__}")
    items, batch = probe_batch(train_data, fit_kwargs)
    input_size = tailor.pop("input_size", None)
    if input_size is not None:
        size = _check_input_size(input_size)
        shape = tuple(np.shape(items[0])) if not isinstance(items[0], str) else None
        if shape is not None and shape != size:
            raise ValueError(f"input_size: {size} given, but the training items have shape {shape}")
    batch = move_to_device(batch, next((p.device for p in model.parameters()), torch.device("cpu")))
    with torch.random.fork_rng(devices=[]):  # a new head's weights follow fit's seed, not the global RNG
        torch.manual_seed(fit_kwargs.get("seed", 42))
        emb = to_embedding_model(model, input=batch, **tailor)
    check_trainable(emb, tailor.get("freeze"))
    return emb


def check_trainable(model: nn.Module, freeze: Any = None) -> None:
    """Raise before training when no parameter of `model` would train."""
    if not any(p.requires_grad for p in model.parameters()):
        raise ValueError(f"freeze: freeze={freeze!r} freezes every parameter and there is no projection head, so "
                         "nothing would train; add a head (output_dim=... or projection_head=...) or freeze fewer layers")
