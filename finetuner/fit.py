"""`finetuner.fit`: the one entry point; it picks the recipe for the model and data."""

from __future__ import annotations

import inspect
from typing import Any

from .result import FitResult
from .tasks.embedding import fit_embedding


def fit(model: Any, train_data: Any, eval_data: Any = None, **kwargs: Any) -> FitResult:
    """Fine-tune `model` on `train_data` and report how much it improved on `eval_data`.

    The minimal call `fit(model, train_data)` trains with good defaults; every other argument
    is optional. The model is trained in place and also returned in the result.

    Args:
        model: an embedding model: a `torch.nn.Module` mapping a batch of items to a float
            tensor [B, D].
        train_data: labeled data in class, pair, triplet or session format, as a list of
            tuples or dicts, numpy `(X, y)`, a pandas DataFrame, a `datasets.Dataset`, a CSV /
            JSONL path or a `LabeledData` (see `finetuner.data.formats`). Every format works
            with every loss: pairs and triplets are mined inside each batch.
        eval_data: labeled data in the same forms; metrics are computed before training,
            after every epoch and at the end (each item a query against all others).

    Keyword Args:
        loss: "SiameseLoss" (default), "TripletLoss", "InfoNCELoss", a loss object, or any
            callable `(embeddings [B, D], labels) -> scalar`.
        distance, margin, miner: passed to a loss given by name; distance "cosine" (default),
            "euclidean", "sqeuclidean"; miner "all" (default), "hard", "semihard", "easy".
        epochs (10), batch_size (256), learning_rate (1e-3), optimizer ("adam"; "adamw", "sgd",
            a class or an instance), optimizer_kwargs, scheduler (None, "linear", "cosine" or
            a factory), warmup_ratio (0).
        num_items_per_class: items of one class per batch for class data (4).
        preprocess_fn: applied to each item; collate_fn: list of items -> model input.
        device: "auto" (GPU when there is one), "cpu", "cuda". precision: "fp32" or "bf16".
        gradient_accumulation_steps (1), max_grad_norm (None).
        callbacks: `finetuner.engine.callbacks.Callback` objects; early_stopping: patience in
            epochs, or a dict of `EarlyStopping` arguments.
        seed (42), format (None: detected), ks: cut-offs of the metrics ((10,)).
        output_dir: writes the model (output_dir/model), metrics.json, metrics.csv,
            TensorBoard logs and a checkpoint per epoch. resume: True resumes from the last
            checkpoint in output_dir, or a checkpoint folder.
        verbose: progress bar and the before/after table (True).

    Returns:
        `FitResult` with `.model`, `.history`, `.metrics_before`, `.metrics_after`.

    Raises:
        TypeError: an unknown keyword argument (the message lists the known ones), or a model
            of an unsupported type.
        ValueError: bad data or settings, raised before training starts (empty data, one
            class, mixed formats, missing labels, a model whose output is not [B, D], eval data
            where no query has a relevant item, ...).
        FloatingPointError: the loss became NaN or infinite during training.
    """
    recipe = fit_embedding
    known = set(inspect.signature(recipe).parameters) - {"model", "train_data", "eval_data"}
    unknown = sorted(set(kwargs) - known)
    if unknown:
        raise TypeError(f"fit: unknown argument(s) {unknown}; known arguments: {sorted(known)}")
    return recipe(model, train_data, eval_data, **kwargs)
