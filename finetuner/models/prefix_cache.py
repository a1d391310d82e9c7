"""Frozen-prefix caching: compute a frozen, deterministic prefix of a model once, train the rest.

When every layer below the trainable part is frozen and in eval behaviour (no train-mode dropout
or batch-norm statistics), the prefix maps each item to the same output in every epoch. So the
items are run through it once, the outputs become a new `LabeledData` of features, and the
normal embedding recipe trains only the suffix on them; the model returned is the whole model
(its suffix trained in place). Epochs then cost what the suffix costs. The same idea as
"pre-computing bottleneck features" for transfer learning (Donahue et al., 2014, DeCAF; the
TensorFlow retraining tutorial's bottleneck cache).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from accelerate import PartialState
from torch import nn

from ..data.dataset import Collate, LabeledDataset
from ..data.formats import to_labeled
from ..data.labeled import LabeledData
from ..engine.predict import move_to_device
from .tailor import EmbeddingModel, _CutOff

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
                if isinstance(child, _CutOff) or any(p.requires_grad for p in child.parameters()):
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


@torch.no_grad()
def cache_features(prefix: nn.Module, data: LabeledData, *, batch_size: int = 256,
                   preprocess_fn: Callable | None = None, collate_fn: Callable | None = None,
                   device: str = "auto", precision: str = "fp32", cache_dir: str | os.PathLike | None = None,
                   memory_limit: int = MEMORY_LIMIT) -> LabeledData:
    """Run every item of `data` through `prefix` once (eval mode, no gradients).

    Args:
        prefix: a module mapping a batch of items to a tensor [B, ...].
        data: the labeled items.
        batch_size: items per forward pass.
        preprocess_fn / collate_fn: as in `fit` (applied before the prefix).
        device: "auto", "cpu", "cuda", "mps". precision: "fp32", or "bf16" (autocast; the
            features are stored as float32 either way).
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
    was_training = prefix.training
    prefix.to(dev).eval()
    out = None
    try:
        for start in range(0, len(data), batch_size):
            index = np.arange(start, min(start + batch_size, len(data)))
            inputs, _ = collate(dataset.__getitems__(index))
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
                feats = prefix(move_to_device(inputs, dev))
            feats = feats.float().cpu().numpy()
            if out is None:
                shape = (len(data), *feats.shape[1:])
                nbytes = int(np.prod(shape)) * 4
                if nbytes > memory_limit:
                    folder = Path(cache_dir) if cache_dir else Path(tempfile.mkdtemp(prefix="finetuner-prefix-"))
                    folder.mkdir(parents=True, exist_ok=True)
                    out = np.lib.format.open_memmap(folder / "features.npy", mode="w+", dtype=np.float32, shape=shape)
                else:
                    out = np.empty(shape, dtype=np.float32)
            out[index] = feats
    finally:
        prefix.to(home).train(was_training)
    return LabeledData(out, data.groups, data.relevance, data.format, data.class_names)


def fit_with_prefix_cache(recipe: Callable, model: EmbeddingModel, train_data: Any, eval_data: Any = None, *,
                          cache_prefix: bool | str = "auto", **kwargs: Any):
    """Fit `model`, caching its frozen prefix when that is valid; else run `recipe` as usual.

    Valid when `split_frozen_prefix` finds a split and no `preprocess_fn` is given (it may be a
    random augmentation, which a cache would freeze); `cache_prefix=True` caches despite a
    `preprocess_fn` (declare it deterministic), False never caches. With a cache, the rest of
    the model trains on the cached features with the embedding recipe (`fit_embedding`: the
    features are arrays, whatever the model's input was, e.g. text for a tailored transformer,
    which `recipe` = `fit_text` would get), so every argument must be one it takes; otherwise
    `recipe` runs on the whole model. The prefix runs on the same device and precision as training.

    Returns:
        The recipe's `FitResult`, with `.model` the whole model (trained in place), the cache's
        size and time in `settings["prefix_cache"]`; OUTPUT_DIR/model holds the whole model
        (the epoch checkpoints hold the suffix, as trained).
    """
    from .saving import save

    if cache_prefix not in (True, False, "auto"):
        raise ValueError(f"cache_prefix: expected True, False or 'auto', got {cache_prefix!r}")
    import inspect

    from ..recipes.embedding import fit_embedding

    if cache_prefix is False:
        return recipe(model, train_data, eval_data, **kwargs)
    prefix, suffix, how = split_frozen_prefix(model)
    if prefix is not None and kwargs.get("preprocess_fn") is not None and cache_prefix != True:  # noqa: E712
        prefix, how = None, "a preprocess_fn is given (it may be random); pass cache_prefix=True if it is not"
    # the rest trains on feature arrays with the embedding recipe, whatever recipe the whole model got
    # (a tailored transformer goes to the text recipe, whose extra arguments the embedding one lacks)
    extra = sorted(set(kwargs) - set(inspect.signature(fit_embedding).parameters))
    if prefix is not None and extra:
        prefix, how = None, f"arguments {extra} belong to {recipe.__name__}, not to the embedding recipe"
    if prefix is None:
        if cache_prefix is True:
            warnings.warn(f"cache_prefix: the frozen prefix cannot be cached: {how}", stacklevel=3)
        return recipe(model, train_data, eval_data, **kwargs)

    verbose = kwargs.get("verbose", True)
    args = dict(batch_size=kwargs.get("eval_batch_size", 512), preprocess_fn=kwargs.pop("preprocess_fn", None),
                collate_fn=kwargs.pop("collate_fn", None), device=kwargs.get("device", "auto"),
                precision=kwargs.get("precision", "fp32"),
                cache_dir=Path(kwargs["output_dir"]) / "prefix_cache" if kwargs.get("output_dir") else None)
    train = to_labeled(train_data, kwargs.get("format"), "train_data")
    evald = to_labeled(eval_data, None, "eval_data") if eval_data is not None else None
    start = time.perf_counter()
    train_f = cache_features(prefix, train, **args)
    eval_f = cache_features(prefix, evald, **args) if evald is not None else None
    seconds = time.perf_counter() - start
    if verbose:
        print(f"frozen prefix cached ({how}): {len(train)} train + {len(evald) if evald else 0} eval items -> "
              f"features {list(train_f.items.shape[1:])} in {seconds:.1f} s; training the rest on them")

    result = fit_embedding(suffix, train_f, eval_f, **kwargs)
    head = next(iter(suffix.parameters()), None)
    if head is not None:
        model.to(head.device)
    result.model = model
    result.settings["prefix_cache"] = {"split": how, "items": len(train) + (len(evald) if evald else 0),
                                       "feature_shape": list(train_f.items.shape[1:]), "seconds": seconds}
    for data in (train_f, eval_f):  # a memory-mapped cache is only needed while training
        if data is not None and isinstance(data.items, np.memmap):
            path = Path(data.items.filename)
            data.items = None
            shutil.rmtree(path.parent, ignore_errors=True)
    if kwargs.get("output_dir") and PartialState().is_main_process:
        out = Path(kwargs["output_dir"])
        save(model, out / "model")
        if (out / "metrics.json").exists():
            tmp = out / "metrics.json.tmp"
            tmp.write_text(json.dumps(result.to_dict(), indent=2, default=float))
            os.replace(tmp, out / "metrics.json")
    return result
