"""The embedding recipe: metric learning on labeled items with in-batch mining."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ..data.dataset import Collate, LabeledDataset
from ..data.formats import to_labeled
from ..data.labeled import LabeledData
from ..data.samplers import GroupBatchSampler
from ..engine.callbacks import CSVLogger, EarlyStopping, ProgressBar, TensorBoardLogger
from ..engine.trainer import Trainer, make_accelerator
from ..engine.predict import check_embeddings, embed_batches
from ..models.saving import save
from ..losses import get_loss
from ..engine.optim import build_optimizer, build_scheduler
from .result import FitResult


# fit's margin for the margin losses: with cosine distance (in [0, 2]) 0.5 beat the classes'
# 1.0 on Fashion-MNIST (mAP@10 0.798 vs 0.749 after 10 epochs, cosine schedule; see README)
DEFAULT_MARGIN = 0.5


def check_train_data(data: LabeledData, name: str = "train_data") -> None:
    """Raise before training if no batch could hold a positive and a negative pair."""
    groups, counts = np.unique(data.groups, return_counts=True)
    if data.format == "class":
        if len(groups) < 2:
            raise ValueError(f"{name}: all {len(data)} items have the same class ({groups[0]!r}); "
                             "metric learning needs at least two classes")
        if counts.max() < 2:
            raise ValueError(f"{name}: every class has a single item, so there is no positive pair; "
                             "expected at least one class with two or more items")
        return
    rel = data.relevance
    has_pos = any(((rel[data.groups == g] >= 1).sum() >= 2) for g in groups[counts >= 2][:10_000])
    if not has_pos:
        raise ValueError(f"{name}: no {data.format} has a positive pair (a query with a relevant match, "
                         "or a pair with a score above 0); expected at least one")


def fit_embedding(
    model: torch.nn.Module,
    train_data: Any,
    eval_data: Any = None,
    *,
    loss: Any = "SiameseLoss",
    epochs: int = 10,
    batch_size: int = 256,
    learning_rate: float = 1e-3,
    optimizer: Any = "adam",
    optimizer_kwargs: dict | None = None,
    scheduler: Any = "cosine",
    warmup_ratio: float = 0.0,
    miner: Any = None,
    distance: str | None = None,
    margin: float | None = None,
    num_items_per_class: int = 4,
    preprocess_fn: Callable | None = None,
    collate_fn: Callable | None = None,
    device: str = "auto",
    precision: str = "fp32",
    gradient_accumulation_steps: int = 1,
    max_grad_norm: float | None = None,
    callbacks: Sequence = (),
    early_stopping: int | dict | None = None,
    seed: int = 42,
    output_dir: str | os.PathLike | None = None,
    resume: bool | str = False,
    format: str | None = None,
    ks: Sequence[int] = (10,),
    eval_batch_size: int = 512,
    verbose: bool = True,
    report: bool = True,
    batch_sampler: Any = None,
    compute_loss: Callable | None = None,
    eval_metrics: Callable | None = None,
) -> FitResult:
    """See `finetuner.fit` (this is its recipe for embedding models).

    Hooks for recipes built on this one (e.g. `finetuner.recipes.text`): `batch_sampler`, a batch
    sampler over the train items used instead of `GroupBatchSampler`; `compute_loss`,
    `(model, (inputs, labels)) -> scalar` used instead of `loss(model(inputs), labels)`;
    `eval_metrics`, `(embeddings [N, D], eval LabeledData) -> dict` merged into the eval metrics.
    """
    from accelerate.utils import set_seed

    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module (or a text model path), got {type(model).__name__}")
    if epochs < 1:
        raise ValueError(f"epochs: expected an int >= 1, got {epochs}")
    set_seed(seed)
    train = to_labeled(train_data, format, "train_data")
    check_train_data(train)
    evald = to_labeled(eval_data, None, "eval_data") if eval_data is not None else None

    if margin is None and loss in ("SiameseLoss", "TripletLoss"):
        margin = DEFAULT_MARGIN
    loss_kwargs = {k: v for k, v in (("distance", distance), ("margin", margin), ("miner", miner)) if v is not None}
    if isinstance(loss, str) and loss in ("InfoNCELoss", "MultipleNegativesRankingLoss"):
        if "miner" in loss_kwargs or "margin" in loss_kwargs:
            raise ValueError(f"miner / margin: {loss} uses every in-batch negative and has no margin; "
                             "drop these arguments or use SiameseLoss / TripletLoss")
    elif not isinstance(loss, str) and loss_kwargs:
        raise ValueError(f"distance / margin / miner apply to a loss given by name; set them on the loss object instead")
    loss_fn = get_loss(loss, **loss_kwargs)
    metric_distance = getattr(loss_fn, "distance", None) or distance or "cosine"

    sampler = batch_sampler if batch_sampler is not None else GroupBatchSampler(
        train.groups, batch_size, num_items_per_class if train.format == "class" else None, seed=seed)
    if train.format == "class" and num_items_per_class < 2:
        raise ValueError(f"num_items_per_class: expected an int >= 2 (a batch needs positive pairs), got {num_items_per_class}")
    collate = Collate(collate_fn)
    loader = torch.utils.data.DataLoader(LabeledDataset(train, preprocess_fn), batch_sampler=sampler,
                                         collate_fn=collate, num_workers=0)

    # one real batch through model and loss before any long work: shape, batch size, pairs
    inputs, labels = collate(LabeledDataset(train, preprocess_fn).__getitems__(next(iter(sampler))))
    with torch.no_grad():
        emb = model(inputs)
        check_embeddings(emb, len(labels))
        loss_fn(emb, labels)

    last_eval: dict = {}  # the latest eval embeddings, kept for the report (before / after)

    def evaluate(m: torch.nn.Module) -> dict:
        from ..evaluation import evaluate_embeddings

        emb = embed_batches(m, evald, batch_size=eval_batch_size, preprocess_fn=preprocess_fn, collate_fn=collate_fn)
        last_eval["emb"] = emb
        labels = torch.from_numpy(evald.labels())
        metrics = {"eval_loss": _eval_loss(loss_fn, emb, labels, evald, batch_size, num_items_per_class, seed)}
        metrics.update(evaluate_embeddings(emb, labels, ks=tuple(ks), distance=metric_distance))
        if eval_metrics is not None:
            metrics.update(eval_metrics(emb, evald))
        return metrics

    metrics_before = evaluate(model) if evald is not None else {}
    emb_before = last_eval.get("emb")

    accelerator = make_accelerator(device, precision, gradient_accumulation_steps)
    opt = build_optimizer(optimizer, model, learning_rate, optimizer_kwargs)
    steps = epochs * max(len(sampler) // gradient_accumulation_steps, 1)
    sched = build_scheduler(scheduler, opt, steps, warmup_ratio)
    cbs = [ProgressBar()] if verbose else []
    if output_dir:
        cbs += [CSVLogger(), TensorBoardLogger()]
    if early_stopping:
        es = early_stopping if isinstance(early_stopping, dict) else {"patience": int(early_stopping)}
        es.setdefault("monitor", "eval_loss" if evald is not None else "train_loss")
        cbs.append(EarlyStopping(**es))
    cbs += list(callbacks or [])

    trainer = Trainer(model, loader, compute_loss or (lambda m, batch: loss_fn(m(batch[0]), batch[1])), optimizer=opt,
                      scheduler=sched, epochs=epochs, accelerator=accelerator,
                      evaluate=evaluate if evald is not None else None, callbacks=cbs,
                      output_dir=str(output_dir) if output_dir else None, save_fn=save,
                      max_grad_norm=max_grad_norm, sampler=sampler)
    trainer.resume(resume)
    state = trainer.fit()
    model = trainer.final_model()
    metrics_after = evaluate(model) if evald is not None else {}
    result = FitResult(model=model, history=state.history, metrics_before=metrics_before, metrics_after=metrics_after,
                       output_dir=str(output_dir) if output_dir else None,
                       settings={"loss": repr(loss_fn), "epochs": epochs, "batch_size": batch_size,
                                 "learning_rate": learning_rate, "num_items_per_class": num_items_per_class,
                                 "precision": precision, "seed": seed, "train_items": len(train),
                                 "train_format": train.format, "eval_items": len(evald) if evald else 0})
    if output_dir and accelerator.is_main_process:
        save(model, Path(output_dir) / "model")
        tmp = Path(output_dir) / "metrics.json.tmp"
        tmp.write_text(json.dumps(result.to_dict(), indent=2, default=float))
        os.replace(tmp, Path(output_dir) / "metrics.json")
        _save_report(output_dir, evald, emb_before, last_eval.get("emb"), metric_distance, seed, report, verbose)
    if verbose and accelerator.is_main_process:
        result.print_summary()
    return result


def _eval_loss(loss_fn, emb: torch.Tensor, labels: torch.Tensor, data: LabeledData, batch_size: int,
               num_items_per_class: int, seed: int) -> float:
    """The training loss on eval data, batched as in training (fixed order), from cached embeddings."""
    sampler = GroupBatchSampler(data.groups, batch_size, num_items_per_class if data.format == "class" else None,
                                seed=seed + 1)
    values = []
    with torch.no_grad():
        for idx in sampler._batches:
            try:
                values.append(float(loss_fn(emb[idx], labels[idx])))
            except ValueError:  # a batch with no valid pair says nothing about the loss
                continue
    return float(np.mean(values)) if values else float("nan")


def _save_report(output_dir, evald: LabeledData | None, emb_before, emb_after, distance: str, seed: int,
                 report: bool, verbose: bool) -> None:
    """Keep what `finetuner report` needs (eval items, labels, embeddings before / after) and,
    with `report`, write OUTPUT_DIR/report.html. A failing report only warns: the trained model
    and metrics are already saved."""
    from ..report import build_report, save_report_data

    if evald is not None and emb_before is not None and emb_after is not None:
        save_report_data(output_dir, evald, emb_before, emb_after, distance=distance, seed=seed)
    if report:
        try:
            path = build_report(output_dir, seed=seed)
        except Exception as e:  # noqa: BLE001
            warnings.warn(f"report: could not build the report ({type(e).__name__}: {e}); "
                          f"retry with `finetuner report {output_dir}`", stacklevel=3)
            return
        if verbose:
            print(f"report: {path}")
