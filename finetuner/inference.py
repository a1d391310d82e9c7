"""Embedding and evaluating with a model, outside training."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import torch

from .data.dataset import Collate, LabeledDataset
from .data.formats import to_labeled
from .data.labeled import LabeledData


def model_device(model: torch.nn.Module) -> torch.device:
    p = next(iter(model.parameters()), None)
    return p.device if p is not None else torch.device("cpu")


def _move(inputs: Any, device: torch.device) -> Any:
    if hasattr(inputs, "to") and not isinstance(inputs, (list, tuple, dict)):
        return inputs.to(device)
    if isinstance(inputs, dict) or hasattr(inputs, "items"):
        return {k: _move(v, device) for k, v in inputs.items()}
    if isinstance(inputs, (list, tuple)) and inputs and isinstance(inputs[0], torch.Tensor):
        return type(inputs)(_move(v, device) for v in inputs)
    return inputs


@torch.no_grad()
def embed_batches(model: torch.nn.Module, data: LabeledData, *, batch_size: int = 256,
                  preprocess_fn: Callable | None = None, collate_fn: Callable | None = None) -> torch.Tensor:
    """Embeddings of every item of `data`, in order: float32 tensor [N, D] on the CPU.

    Runs in eval mode and restores the model's previous mode afterwards.

    Raises:
        ValueError: the model's output is not one 2-D row per item.
    """
    dataset, collate = LabeledDataset(data, preprocess_fn), Collate(collate_fn)
    device, was_training = model_device(model), model.training
    model.eval()
    out = []
    try:
        for start in range(0, len(data), batch_size):
            index = np.arange(start, min(start + batch_size, len(data)))
            inputs, _ = collate(dataset.__getitems__(index))
            emb = model(_move(inputs, device))
            check_embeddings(emb, len(index))
            out.append(emb.detach().float().cpu())
    finally:
        model.train(was_training)
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


def _as_labeled(data: Any, name: str) -> LabeledData:
    """Unlabeled inputs (an array or a list of items) become class data with dummy labels."""
    if isinstance(data, LabeledData):
        return data
    if isinstance(data, np.ndarray) or (isinstance(data, torch.Tensor)):
        arr = data.detach().cpu().numpy() if isinstance(data, torch.Tensor) else data
        return LabeledData(arr.astype(np.float32) if arr.dtype.kind == "f" else arr, np.zeros(len(arr)))
    try:
        return to_labeled(data, name=name)
    except (ValueError, TypeError):
        items = list(data)
        return LabeledData(items, np.zeros(len(items)))


def _as_torch_model(model: Any) -> torch.nn.Module:
    """A Keras / Paddle model wrapped by `finetuner.backends.adapt`; a torch module as it is."""
    if isinstance(model, torch.nn.Module):
        return model
    from .backends import adapt, detect_framework

    return adapt(model) if detect_framework(model) in ("keras", "paddle") else model


def embed(model: torch.nn.Module, data: Any, *, batch_size: int = 256, preprocess_fn: Callable | None = None,
          collate_fn: Callable | None = None) -> np.ndarray:
    """Embed items with `model`.

    Args:
        model: a torch module mapping a batch to [B, D] (or a Keras / Paddle model).
        data: labeled data (any form `fit` takes), a numpy array / tensor [N, ...], or a list of items.
        batch_size: items per forward pass.
        preprocess_fn / collate_fn: as in `fit`.

    Returns:
        float32 numpy array [N, D], in the order of `data`.
    """
    return embed_batches(_as_torch_model(model), _as_labeled(data, "data"), batch_size=batch_size,
                         preprocess_fn=preprocess_fn, collate_fn=collate_fn).numpy()


def evaluate(model: torch.nn.Module, data: Any, *, ks: Sequence[int] = (10,), distance: str = "cosine",
             batch_size: int = 256, preprocess_fn: Callable | None = None,
             collate_fn: Callable | None = None) -> dict:
    """Retrieval metrics of `model` on labeled `data`: each item is a query against all the
    others (itself excluded); relevant = positive relation (same class, or a relevant match of
    the same session).

    Returns:
        dict with precision@k, recall@k, mAP@k, nDCG@k, MRR@k, hit@k for each k in `ks`, and
        num_queries.

    Raises:
        ValueError: no query has a relevant item, or the model's output is not [B, D].
    """
    from .evaluation import evaluate_embeddings

    data = to_labeled(data, name="eval_data")
    emb = embed_batches(_as_torch_model(model), data, batch_size=batch_size, preprocess_fn=preprocess_fn, collate_fn=collate_fn)
    return evaluate_embeddings(emb, torch.from_numpy(data.labels()), ks=tuple(ks), distance=distance)
