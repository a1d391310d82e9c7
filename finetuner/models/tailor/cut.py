"""The cut: `EmbeddingModel` (a model stopped after its embedding layer, pooled, with an optional
head), the `CutOff` stub for the layers removed after the cut, and the rules of where to cut,
what to remove and which layers stay in eval mode.

The cut is a forward hook that stops the forward pass once the chosen layer has run, so the
model's own forward code (a `Sequential`, nested custom modules, a Hugging Face transformer,
EfficientNet) runs unchanged, whatever its control flow.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Sequence

import torch
from torch import nn

from .heads import pool
from .layers import set_layer
from .trace import Trace, call_model, describe_output, single_tensor

# module types whose train-mode output is random: never a good place to take an embedding from
DROPOUTS = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout)


class _CutHere(BaseException):
    """Raised by the cut hook to stop the forward pass. A BaseException so that model code
    with `except Exception:` around its layers does not swallow it."""


class CutOff(nn.Module):
    """Stands in for a layer that only ran after the cut: it holds no weights, and calling it
    (which the cut makes impossible) says what happened.

    Args:
        name: the removed layer's dotted name.
        type_name: its class name.
    """

    def __init__(self, name: str, type_name: str) -> None:
        super().__init__()
        self.cut_name, self.cut_type = name, type_name

    def forward(self, *args, **kwargs):
        """Raise a RuntimeError: a removed layer never runs."""
        raise RuntimeError(f"layer {self.cut_name!r} ({self.cut_type}) was removed by to_embedding_model: "
                           "it runs after the embedding layer")

    def extra_repr(self) -> str:
        """The removed layer's name and type, for `print(model)`."""
        return f"{self.cut_name!r}, was {self.cut_type}"


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
            out = call_model(self.backbone, x)
        else:
            captured = []

            def hook(module, args, output):
                captured.append(output)
                raise _CutHere

            handle = self.backbone.get_submodule(self.layer_name).register_forward_hook(hook)
            try:
                out = call_model(self.backbone, x)
            except _CutHere:
                out = captured[0]
            finally:
                handle.remove()
        t = single_tensor(out)
        if t is None:
            raise ValueError(f"layer_name: {self.layer_name!r} returned {describe_output(out)}, not one tensor")
        mask = x.get("attention_mask") if isinstance(x, Mapping) else None
        return pool(t, self.pooling, mask)

    def forward(self, x: Any) -> torch.Tensor:
        """Embeddings [B, D'] of a batch: `features`, then the head."""
        f = self.features(x)
        return self.head(f) if self.head is not None else f

    def train(self, mode: bool = True) -> "EmbeddingModel":
        """Train / eval mode, except that the `eval_layers` stay in eval mode."""
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
        """The cut and the pooling, for `print(model)`."""
        return f"layer_name={self.layer_name!r}, pooling={self.pooling!r}"


# models saved by `finetuner.save` pickle these classes: keep the path they had before the tailor
# became a package (`finetuner.models.tailor.EmbeddingModel`), which the package re-exports
CutOff.__module__ = EmbeddingModel.__module__ = "finetuner.models.tailor"


def is_tailored(model: Any) -> bool:
    """True for a model built by `to_embedding_model`."""
    return isinstance(model, EmbeddingModel)


def default_layer(trace: Trace) -> str | None:
    """The last layer before the classifier: the classifier is the last Linear the forward pass
    calls; the embedding layer is the layer that finished last before it started (dropout
    skipped) whose output can be an embedding. None (the model's own output) without a Linear."""
    linears = [r for r in trace.called() if isinstance(r.module, nn.Linear) and r.name]
    if not linears:
        return None
    classifier = linears[-1]
    before = sorted((r for r in trace.called() if r.name and 0 <= r.end < classifier.start), key=lambda r: -r.end)
    for r in before:
        if isinstance(r.module, DROPOUTS) or "dropout" in type(r.module).__name__.lower():
            continue
        if trace.reason(r.name) is None:
            return r.name
    return None


def prune_after(model: nn.Module, trace: Trace, layer: str) -> list[str]:
    """Replace the layers that only run after `layer` has finished by `CutOff` stubs (their
    weights go away); returns their names. Layers the forward pass never called are kept."""
    end = trace.records[layer].end
    removed: list[str] = []
    for r in sorted(trace.records.values(), key=lambda r: r.name.count(".")):
        if not r.name or not r.calls or r.start < end:
            continue
        if any(r.name.startswith(p + ".") for p in removed):
            continue
        set_layer(model, r.name, CutOff(r.name, type(r.module).__name__))
        removed.append(r.name)
    return removed


def frozen_eval_layers(model: nn.Module, trace: Trace) -> list[str]:
    """Backbone layers to keep in eval mode: every layer whose parameters are all frozen, and
    every layer that finishes before the first layer with a trainable parameter starts (the
    frozen prefix: its dropout and batch norm must not change its output)."""
    names = [n for n, m in model.named_modules()
             if n and (ps := list(m.parameters())) and not any(p.requires_grad for p in ps)]
    kept = {id(m) for m in model.modules()}  # layers cut off by prune_after no longer count
    trainable_starts = [r.start for r in trace.called() if id(r.module) in kept
                        and any(p.requires_grad for p in r.module.parameters(recurse=False))]
    if not trainable_starts:  # nothing in the backbone trains: all of it is a fixed function
        return [""] + [n for n, _ in model.named_modules() if n]
    first = min(trainable_starts)
    names += [r.name for r in trace.called()
              if r.name and id(r.module) in kept and 0 <= r.end < first and r.name not in names]
    return names
