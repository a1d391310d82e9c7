"""`to_embedding_model`: a general model (a classifier, a backbone) becomes an `EmbeddingModel`.

In order: check the arguments, run the model once (a probe batch) to learn its layers' order and
outputs, cut after the embedding layer (the layers that only run after it are removed), pool its
output to [B, D], add and check the projection head, freeze, and keep frozen layers in eval mode.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .args import check_tailor_args
from .cut import EmbeddingModel, default_layer, frozen_eval_layers, prune_after
from .freezing import apply_freeze, resolve_freeze
from .heads import POOLINGS
from .heads import projection_head as make_head
from .layers import check_module, framework_backend, get_layer
from .probe import probe_input, run_trace


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
    if (backend := framework_backend(model)) is not None:  # Keras / Paddle (finetuner.models.backends)
        return backend.to_embedding_model(model, layer_name, freeze, output_dim, projection_head,
                                          input_size=input_size, input=input, pooling=pooling)
    check_module(model)
    check_tailor_args(layer_name, freeze, output_dim, projection_head, pooling, nn.Module, POOLINGS)
    if layer_name is not None:
        get_layer(model, layer_name)  # unknown names fail before the model runs

    x, _ = probe_input(model, input_size, input, "to_embedding_model")
    trace = run_trace(model, x, input_size)
    if layer_name is None:
        layer_name = default_layer(trace)
    elif (why := trace.reason(layer_name)) is not None:
        raise ValueError(f"layer_name: the output of {layer_name!r} ({type(model.get_submodule(layer_name)).__name__}) "
                         f"cannot be an embedding: {why}; finetuner.display(model) marks the layers that can")
    removed = prune_after(model, trace, layer_name) if layer_name is not None else []

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

    head = None
    if isinstance(projection_head, nn.Module):
        head = projection_head
    elif output_dim is not None:
        head = make_head(int(feats.shape[1]), output_dim, projection_head or "linear")
    if head is not None:
        _check_head(head, feats, output_dim)
        emb.head = head

    names, head_frozen = resolve_freeze(model, freeze, trace, has_head=head is not None, cut_names=removed)
    if head_frozen:
        apply_freeze(head, [""])
    apply_freeze(model, names)
    emb.eval_layers = frozen_eval_layers(model, trace)
    emb.train(was_training)
    return emb


def _check_head(head: nn.Module, feats: torch.Tensor, output_dim: int | None) -> None:
    """Run `head` on the pooled features once (eval mode, no gradients); raise a ValueError when
    it fails or does not give [B, output_dim]."""
    in_dim = int(feats.shape[1])
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
