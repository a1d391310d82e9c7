"""The one batched predict: run a model over batches in eval mode, without gradients, on its
device and in the run's precision, and hand each output back.

Every part that runs a model outside the training step goes through `predict_batches`: embedding
eval items (`embed_batches`), a classifier's logits, a language model's held-out loss, the frozen
prefix cache and the Labeler's neighbours.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import torch

from ..data.dataset import Collate, LabeledDataset
from ..data.labeled import LabeledData

_AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of the model's first parameter (CPU for a model without parameters)."""
    p = next(iter(model.parameters()), None)
    return p.device if p is not None else torch.device("cpu")


def move_to_device(inputs: Any, device: torch.device | str) -> Any:
    """`inputs` on `device`: a tensor (or anything with `.to`), a mapping of them (a tokenizer's
    output), or a list / tuple of tensors; anything else (a list of strings) as it is."""
    if hasattr(inputs, "to") and not isinstance(inputs, (list, tuple, dict)):
        return inputs.to(device)
    if isinstance(inputs, dict) or hasattr(inputs, "items"):
        return {k: move_to_device(v, device) for k, v in inputs.items()}
    if isinstance(inputs, (list, tuple)) and inputs and isinstance(inputs[0], torch.Tensor):
        return type(inputs)(move_to_device(v, device) for v in inputs)
    return inputs


def autocast(device: torch.device | str, precision: str):
    """`torch.autocast` for "bf16" / "fp16" on `device`, a no-op context for "fp32"."""
    dtype = _AUTOCAST.get(precision)
    if dtype is None:
        return nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)


def predict_batches(model: torch.nn.Module, batches: Iterable[Any], *,
                    forward: Callable[[torch.nn.Module, Any], Any] | None = None,
                    device: torch.device | str | None = None, precision: str = "fp32") -> Iterator[Any]:
    """Yield `forward(model, batch)` for each batch, in eval mode and without gradients.

    Args:
        model: any torch module; put back in its previous train / eval mode at the end (also
            when the caller stops early or an error is raised).
        batches: model inputs (tensors, mappings of tensors, lists of strings, ...), each moved
            to `device` first.
        forward: `(model, batch) -> output`; default `model(batch)`.
        device: where the batches go; default the model's device.
        precision: "fp32", or "bf16" / "fp16" autocast.

    Yields:
        Whatever `forward` returns, one per batch (still on the device).
    """
    device = model_device(model) if device is None else torch.device(device)
    forward = forward or (lambda m, x: m(x))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for batch in batches:
                with autocast(device, precision):
                    yield forward(model, move_to_device(batch, device))
    finally:
        model.train(was_training)


def embed_batches(model: torch.nn.Module, data: LabeledData, *, batch_size: int = 256,
                  preprocess_fn: Callable | None = None, collate_fn: Callable | None = None,
                  precision: str = "fp32") -> torch.Tensor:
    """Embeddings of every item of `data`, in order: float32 tensor [N, D] on the CPU.

    Raises:
        ValueError: the model's output is not one 2-D row per item (`check_embeddings`).
    """
    dataset, collate = LabeledDataset(data, preprocess_fn), Collate(collate_fn)
    starts = range(0, len(data), batch_size)

    def batches():
        for start in starts:
            yield collate(dataset.__getitems__(np.arange(start, min(start + batch_size, len(data)))))[0]

    out = []
    for start, emb in zip(starts, predict_batches(model, batches(), precision=precision)):
        check_embeddings(emb, min(batch_size, len(data) - start))
        out.append(emb.detach().float().cpu())
    return torch.cat(out)


def check_embeddings(emb: Any, n: int) -> None:
    """Raise a ValueError naming the model if `emb` is not a [n, D] tensor."""
    if not isinstance(emb, torch.Tensor):
        raise ValueError(f"model: expected it to return a tensor [batch, dim], got {type(emb).__name__}; "
                         "wrap it or use finetuner.to_embedding_model")
    if emb.dim() != 2:
        raise ValueError(f"model: expected a 2-D output [batch, dim] (an embedding per item), got shape "
                         f"{tuple(emb.shape)}; cut or flatten it (finetuner.to_embedding_model)")
    if emb.shape[0] != n:
        raise ValueError(f"model: returned {emb.shape[0]} embeddings for a batch of {n} items; "
                         "it must return one row per input item")
