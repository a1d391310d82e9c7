"""Frozen-prefix caching: compute a frozen, deterministic prefix of a model once, train the rest.

When every layer below the trainable part is frozen and in eval behaviour (no train-mode dropout
or batch-norm statistics), the prefix maps each item to the same output in every epoch. So the
items are run through it once (`cache_features`), the outputs become a new `LabeledData` of
features, and the rest of the model (the suffix of `split_frozen_prefix`) trains on them; the
model is trained in place. Epochs then cost what the suffix costs. The same idea as
"pre-computing bottleneck features" for transfer learning (Donahue et al., 2014, DeCAF; the
TensorFlow retraining tutorial's bottleneck cache). `fit` uses it through
`finetuner.recipes.tailored.fit_with_prefix_cache`.
"""

from __future__ import annotations

import os
import tempfile
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from ..data.dataset import Collate, LabeledDataset
from ..data.labeled import LabeledData
from ..engine.predict import predict_batches
from .tailor import CutOff, EmbeddingModel

MEMORY_LIMIT = 2 << 30  # cached features larger than this (bytes) go to a memory-mapped file


class _Features(nn.Module):
    """The frozen part of an `EmbeddingModel` whose whole backbone is frozen: its pooled
    embedding-layer output [B, D], before the head."""

    def __init__(self, model: EmbeddingModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Any) -> torch.Tensor:
        return self.model.features(x)


def _deterministic(module: nn.Module) -> bool:
    """In train mode, does `module` stay a fixed function? (every submodule in eval mode)."""
    return not any(m.training for m in module.modules())


def split_frozen_prefix(model: EmbeddingModel) -> tuple[nn.Module | None, nn.Module | None, str]:
    """Split `model` into a frozen prefix and a trainable suffix, when that is valid.

    Two splits are found: (1) the whole backbone up to the embedding layer is frozen: the prefix
    is the backbone with its pooling, the suffix the projection head; (2) the backbone is an
    `nn.Sequential` whose first k children are frozen: the prefix is those children, the suffix
    an `EmbeddingModel` over the other children (same names) with the same cut, pooling and head.
    In both, the prefix must stay in eval mode while the model trains (frozen layers do: see
    `to_embedding_model`), so its outputs are the same in every epoch.

    Args:
        model: an `EmbeddingModel` from `to_embedding_model`.

    Returns:
        (prefix, suffix, description) with `suffix(prefix(x)) == model(x)`, sharing the model's
        modules, so training the suffix trains the model; or (None, None, why not).
    """
    if not isinstance(model, EmbeddingModel):
        return None, None, "the model was not built by to_embedding_model"
    was_training = model.training
    model.train()  # the modes the layers will have during training
    try:
        backbone = model.backbone
        if model.backbone_frozen:
            if model.head is None or not any(p.requires_grad for p in model.head.parameters()):
                return None, None, "nothing after the frozen backbone trains"
            if not _deterministic(backbone):
                return None, None, "some frozen layers are in train mode (dropout / batch-norm statistics)"
            return _Features(model), model.head, "frozen backbone -> head"
        if isinstance(backbone, nn.Sequential):
            children = list(backbone.named_children())
            k = 0
            for _, child in children:
                if isinstance(child, CutOff) or any(p.requires_grad for p in child.parameters()):
                    break
                if not _deterministic(child):
                    break
                k += 1
            cut_child = model.layer_name.split(".")[0] if model.layer_name else None
            names = [n for n, _ in children]
            if (k == 0 or (cut_child is not None and names.index(cut_child) < k)
                    or not any(True for _, c in children[:k] for _ in c.parameters())):
                return None, None, "the first layer of the backbone with weights trains (nothing worth caching)"
            prefix = nn.Sequential(OrderedDict(children[:k]))
            rest = nn.Sequential(OrderedDict(children[k:]))
            kept = set(names[k:])
            suffix = EmbeddingModel(rest, model.layer_name, model.head, model.pooling,
                                    [n for n in model.eval_layers if n and n.split(".")[0] in kept])
            return prefix, suffix, f"frozen layers {names[0]}..{names[k - 1]} -> the rest"
        return None, None, "layers below the trainable ones are not all frozen (or the backbone is not a Sequential)"
    finally:
        model.train(was_training)


def _device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def cache_features(prefix: nn.Module, data: LabeledData, *, batch_size: int = 256,
                   preprocess_fn: Callable | None = None, collate_fn: Callable | None = None,
                   device: str = "auto", precision: str = "fp32", cache_dir: str | os.PathLike | None = None,
                   memory_limit: int = MEMORY_LIMIT) -> LabeledData:
    """Run every item of `data` through `prefix` once (`engine.predict.predict_batches`: eval
    mode, no gradients).

    Args:
        prefix: a module mapping a batch of items to a tensor [B, ...].
        data: the labeled items.
        batch_size: items per forward pass.
        preprocess_fn / collate_fn: as in `fit` (applied before the prefix).
        device: "auto", "cpu", "cuda", "mps" (the prefix is moved there, and back at the end).
        precision: "fp32", or "bf16" / "fp16" (autocast; the features are stored as float32
            either way).
        cache_dir: where features larger than `memory_limit` bytes are memory-mapped (default:
            a temporary folder); smaller ones stay in memory.

    Returns:
        `LabeledData` with the same labels, whose items are a float32 array [N, ...] of prefix
        outputs.
    """
    dataset, collate = LabeledDataset(data, preprocess_fn), Collate(collate_fn)
    dev = _device(device)
    first = next((p for p in prefix.parameters()), None)
    home = first.device if first is not None else torch.device("cpu")
    starts = range(0, len(data), batch_size)

    def batches():
        for start in starts:
            yield collate(dataset.__getitems__(np.arange(start, min(start + batch_size, len(data)))))[0]

    out = None
    prefix.to(dev)
    try:
        for start, feats in zip(starts, predict_batches(prefix, batches(), device=dev, precision=precision)):
            feats = feats.float().cpu().numpy()
            if out is None:
                out = _allocate((len(data), *feats.shape[1:]), cache_dir, memory_limit)
            out[start:start + len(feats)] = feats
    finally:
        prefix.to(home)
    return LabeledData(out, data.groups, data.relevance, data.format, data.class_names)


def _allocate(shape: tuple, cache_dir: str | os.PathLike | None, memory_limit: int) -> np.ndarray:
    """A float32 array of `shape`: in memory, or memory-mapped in `cache_dir` (default a new
    temporary folder) when larger than `memory_limit` bytes."""
    if int(np.prod(shape)) * 4 <= memory_limit:
        return np.empty(shape, dtype=np.float32)
    folder = Path(cache_dir) if cache_dir else Path(tempfile.mkdtemp(prefix="finetuner-prefix-"))
    folder.mkdir(parents=True, exist_ok=True)
    return np.lib.format.open_memmap(folder / "features.npy", mode="w+", dtype=np.float32, shape=shape)
