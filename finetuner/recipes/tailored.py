"""The tailor and frozen-prefix glue of `fit`: `fit(model, data, freeze=..., output_dim=...)`
tailors a general torch model before a recipe sees it, and a tailored model whose frozen prefix
can be cached trains its rest on cached features (`finetuner.models.prefix_cache`)."""

from __future__ import annotations

import shutil
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from accelerate import PartialState
from torch import nn

from ..console import note, verbosity
from ..data.dataset import Collate, LabeledDataset
from ..data.formats import to_labeled
from ..engine.precision import resolve_precision
from ..engine.predict import model_device, move_to_device
from ..io import write_json
from ..models.prefix_cache import cache_features, split_frozen_prefix
from ..models.saving import save
from ..models.tailor import TAILOR_ARGS, EmbeddingModel, check_input_size, resolve_tailor_args, to_embedding_model
from .embedding import fit_embedding
from .run import recipe_arguments


def pop_tailor_args(kwargs: dict) -> dict:
    """Remove the tailor's arguments from `fit`'s keyword arguments and return them. `pooling`
    alone is not one (the text recipe has its own): it joins the tailor's only with another."""
    if not any(k in kwargs for k in TAILOR_ARGS if k != "pooling"):
        return {}
    return {k: kwargs.pop(k) for k in TAILOR_ARGS if k in kwargs}


def probe_batch(train_data: Any, fit_kwargs: dict, count: int = 2) -> tuple[list, Any]:
    """The first `count` training items and their collated batch: what the model will see in
    `fit` (its `format`, `preprocess_fn` and `collate_fn` applied), to probe the layer shapes."""
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
    tailor = resolve_tailor_args(tailor)
    if tailor is None:
        return model
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: the tailor arguments need a torch.nn.Module, got {type(model).__name__}")
    items, batch = probe_batch(train_data, fit_kwargs)
    input_size = tailor.pop("input_size", None)
    if input_size is not None:
        size = check_input_size(input_size)
        shape = tuple(np.shape(items[0])) if not isinstance(items[0], str) else None
        if shape is not None and shape != size:
            raise ValueError(f"input_size: {size} given, but the training items have shape {shape}")
    batch = move_to_device(batch, model_device(model))
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
    if cache_prefix not in (True, False, "auto"):
        raise ValueError(f"cache_prefix: expected True, False or 'auto', got {cache_prefix!r}")
    if cache_prefix is False:
        return recipe(model, train_data, eval_data, **kwargs)
    prefix, suffix, how = split_frozen_prefix(model)
    if prefix is not None and kwargs.get("preprocess_fn") is not None and cache_prefix != True:  # noqa: E712
        prefix, how = None, "a preprocess_fn is given (it may be random); pass cache_prefix=True if it is not"
    # the rest trains on feature arrays with the embedding recipe, whatever recipe the whole model got
    # (a tailored transformer goes to the text recipe, whose extra arguments the embedding one lacks)
    extra = sorted(set(kwargs) - recipe_arguments(fit_embedding))
    if prefix is not None and extra:
        prefix, how = None, f"arguments {extra} belong to {recipe.__name__}, not to the embedding recipe"
    if prefix is None:
        if cache_prefix is True:
            warnings.warn(f"cache_prefix: the frozen prefix cannot be cached: {how}", stacklevel=3)
        return recipe(model, train_data, eval_data, **kwargs)

    device = kwargs.get("device", "auto")
    args = dict(batch_size=kwargs.get("eval_batch_size", 512), preprocess_fn=kwargs.pop("preprocess_fn", None),
                collate_fn=kwargs.pop("collate_fn", None), device=device,
                precision=_cache_precision(kwargs.get("precision", "fp32"), device),
                cache_dir=Path(kwargs["output_dir"]) / "prefix_cache" if kwargs.get("output_dir") else None)
    train = to_labeled(train_data, kwargs.get("format"), "train_data")
    evald = to_labeled(eval_data, None, "eval_data") if eval_data is not None else None
    start = time.perf_counter()
    train_f = cache_features(prefix, train, **args)
    eval_f = cache_features(prefix, evald, **args) if evald is not None else None
    seconds = time.perf_counter() - start
    with verbosity(kwargs.get("verbose", True)):
        note(f"frozen prefix cached ({how}): {len(train)} train + {len(evald) if evald else 0} eval items -> "
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
            write_json(out / "metrics.json", result.to_dict())
    return result


def _cache_precision(precision: str, device: str) -> str:
    """The precision the prefix runs in: the run's ("auto" resolved as the recipe resolves it)."""
    try:
        return resolve_precision(precision, device)
    except ValueError:  # an unknown precision: the recipe names it, before training
        return "fp32"
