"""Tracing a forward pass: which layer runs when, how often, and what it returns.

`trace_model` runs a model once with a pre- and a post-hook on every named module and records,
for each, the order of its first call's start and end, its number of calls and its output (the
shape and dtype of its one tensor, or what it is otherwise). `Trace.reason` says why a layer's
output cannot be an embedding. `call_model` runs a model on a batch the way its forward takes it.
"""

from __future__ import annotations

import inspect
import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

PROBE_BATCH = 2  # the batch size of a probe input (and of a batch whose size cannot be read)


def call_model(model: nn.Module, x: Any) -> Any:
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


def describe_output(out: Any) -> str:
    """What a layer's output is, in a few words ("tuple of 2 (2 tensors)"), for messages."""
    if isinstance(out, torch.Tensor):
        return "tensor"
    if isinstance(out, Mapping):
        return f"{type(out).__name__} with {sum(isinstance(v, torch.Tensor) for v in out.values())} tensors"
    if isinstance(out, (tuple, list)):
        return f"{type(out).__name__} of {len(out)} ({sum(isinstance(v, torch.Tensor) for v in out)} tensors)"
    return type(out).__name__


@dataclass
class LayerRecord:
    """What one named module did in a traced forward pass."""

    name: str
    module: nn.Module
    start: int = -1  # order of the first call's start
    end: int = -1  # order of the first call's end
    calls: int = 0
    shape: tuple | None = None  # of the single output tensor
    dtype: torch.dtype | None = None
    kind: str = ""  # what the output is, when it is not one tensor


@dataclass
class Trace:
    """The records of one traced forward pass: every named module (called or not), the batch
    size of the input, and the model's output."""

    records: dict[str, LayerRecord]
    batch: int
    output: Any = field(default=None, repr=False)

    def called(self) -> list[LayerRecord]:
        """The modules the forward pass called, in the order their first call started."""
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


def trace_model(model: nn.Module, x: Any) -> Trace:
    """Run `model` once on the batch `x` (eval mode, no gradients) and record every layer's
    order, number of calls and output. Raises whatever the forward pass raises."""
    records = {name: LayerRecord(name, m) for name, m in model.named_modules()}
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
                    r.kind = describe_output(out)
        return hook

    for name, m in model.named_modules():
        handles.append(m.register_forward_pre_hook(pre(name)))
        handles.append(m.register_forward_hook(post(name)))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = call_model(model, x)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return Trace(records, batch_size_of(x), out)


def batch_size_of(x: Any) -> int:
    """The batch size of a model input: the first dimension of its (first) tensor, the length of
    a list, else `PROBE_BATCH`."""
    t = single_tensor(x) if not isinstance(x, Mapping) else next(
        (v for v in x.values() if isinstance(v, torch.Tensor)), None)
    if t is not None and t.dim() > 0:
        return int(t.shape[0])
    return len(x) if isinstance(x, (list, tuple)) else PROBE_BATCH
