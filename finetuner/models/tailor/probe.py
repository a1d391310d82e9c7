"""Probe inputs: a batch to run a model once with, to learn its layers' order and shapes.

A batch the caller gives is used as it is; else one is made from `input_size` (random token ids
for a model that starts with an embedding table, random floats otherwise); else one is guessed
(Hugging Face dummy inputs, a first Linear's width, common image sizes for a convolution).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from .trace import PROBE_BATCH, Trace, trace_model

GUESS_SIZES = (224, 32, 28, 64, 96, 128, 256, 299)  # image sides tried for a model starting with a convolution


def is_hf_model(model: nn.Module) -> bool:
    """Whether `model` looks like a Hugging Face `PreTrainedModel` (a config and a main input name)."""
    return hasattr(model, "config") and hasattr(model, "main_input_name")


def first_leaf(model: nn.Module) -> nn.Module | None:
    """The first module (in registration order) that holds parameters itself, or None."""
    return next((m for m in model.modules() if any(True for _ in m.parameters(recurse=False))), None)


def check_input_size(input_size: Any) -> tuple[int, ...]:
    """`input_size` as a tuple of positive ints (an int is one dimension).

    Raises:
        ValueError: anything else.
    """
    if isinstance(input_size, (int,)) and not isinstance(input_size, bool):
        input_size = (input_size,)
    if (not isinstance(input_size, (tuple, list)) or not input_size
            or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in input_size)):
        raise ValueError(f"input_size: expected the shape of one item without the batch dimension, a tuple of "
                         f"positive ints such as (3, 224, 224), got {input_size!r}")
    return tuple(input_size)


def random_batch(model: nn.Module, size: tuple[int, ...]) -> Any:
    """A random batch of 2 items of shape `size`: token ids when the model starts with an
    embedding table (with an attention mask for Hugging Face models), else floats in [0, 1)."""
    g = torch.Generator().manual_seed(0)
    leaf = first_leaf(model)
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    if isinstance(leaf, nn.Embedding):
        ids = torch.randint(0, min(leaf.num_embeddings, 1000), (PROBE_BATCH, *size), generator=g).to(device)
        if is_hf_model(model):
            return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        return ids
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    return torch.rand(PROBE_BATCH, *size, generator=g).to(device=device, dtype=dtype)


def guess_input(model: nn.Module) -> Any:
    """A batch the model accepts, found without help, or None: Hugging Face models bring dummy
    inputs; a model starting with Linear(n, .) takes [2, n]; one starting with a convolution
    takes the first of some common image sizes that runs."""
    if is_hf_model(model):
        dummy = getattr(model, "dummy_inputs", None)
        if isinstance(dummy, Mapping) and "input_ids" in dummy:
            ids = dummy["input_ids"][:PROBE_BATCH].to(next((p.device for p in model.parameters()), "cpu"))
            return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    leaf = first_leaf(model)
    if isinstance(leaf, nn.Linear):
        return random_batch(model, (leaf.in_features,))
    if isinstance(leaf, nn.Embedding):
        return random_batch(model, (16,))
    if isinstance(leaf, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        dims = len(leaf.kernel_size)
        preferred = getattr(model, "input_image_size", None)
        sizes = ([preferred] if isinstance(preferred, int) else []) + list(GUESS_SIZES)
        for s in sizes:
            x = random_batch(model, (leaf.in_channels, *([s] * dims)))
            try:
                trace_model(model, x)
                return x
            except Exception:  # this size does not fit: try the next one
                continue
    return None


def probe_input(model: nn.Module, input_size: Any, input: Any, what: str) -> tuple[Any, bool]:
    """(a batch to trace the model with, whether it was guessed). Raises a ValueError naming
    `input_size` when no batch can be found; `what` names the caller in that message."""
    if input is not None:
        return input, False
    if input_size is not None:
        return random_batch(model, check_input_size(input_size)), False
    x = guess_input(model)
    if x is None:
        raise ValueError(f"input_size: {what} needs to run the model once, and no input could be guessed for "
                         f"{type(model).__name__}; pass input_size=(C, H, W) (one item's shape) or input=a batch")
    return x, True


def run_trace(model: nn.Module, x: Any, input_size: Any) -> Trace:
    """`trace_model(model, x)`, with the model's own error turned into a ValueError that names
    the argument the batch came from (`input_size` or `input`)."""
    try:
        return trace_model(model, x)
    except Exception as e:  # the model's own error says best what does not fit
        arg = "input_size" if input_size is not None else "input"
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{arg}: {type(model).__name__} cannot run on a batch of shape {shape} "
                         f"({arg}={input_size if input_size is not None else '...'}): "
                         f"{type(e).__name__}: {e}") from e
