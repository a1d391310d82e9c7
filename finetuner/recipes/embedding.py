"""The embedding recipe: metric learning on labeled items with in-batch mining.

Reads top to bottom: resolve the arguments, read and check the data, build the loss, the batch
sampler and one real batch through model and loss (so a wrong shape fails before any long
work), the metrics before training, the engine's run, then `finish`.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import torch

from ..config import TrainArgs
from ..console import verbosity
from ..data.dataset import Collate, LabeledDataset
from ..data.formats import to_eval_data, to_labeled
from ..data.labeled import LabeledData
from ..data.retrieval import RetrievalData
from ..data.samplers import GroupBatchSampler
from ..engine.distributed import gather_in_batch
from ..engine.predict import check_embeddings, embed_batches
from ..losses import get_loss
from .finish import finish
from .result import FitResult
from .run import optimizer_for, prepare, standard_callbacks, train

# fit's margin for the margin losses: with cosine distance (in [0, 2]) 0.5 beat the classes'
# 1.0 on Fashion-MNIST (mAP@10 0.798 vs 0.749 after 10 epochs, cosine schedule; see README)
DEFAULT_MARGIN = 0.5
DEFAULTS = TrainArgs(epochs=10, batch_size=256, learning_rate=1e-3, optimizer="adam", scheduler="cosine",
                     precision="fp32", eval_batch_size=512)
IN_BATCH = ("InfoNCELoss", "MultipleNegativesRankingLoss", "CachedInfoNCELoss", "CachedMultipleNegativesRankingLoss")


def check_train_data(data: LabeledData, name: str = "train_data") -> None:
    """Raise ValueError before training if no batch could hold a positive and a negative pair."""
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


def build_loss(loss: Any, distance: str | None, margin: float | None, miner: Any) -> Callable:
    """The loss object for `fit`'s loss arguments: a name with distance / margin / miner (the
    margin losses get `DEFAULT_MARGIN`), or the user's object / callable as it is.

    Raises:
        ValueError: miner / margin with an in-batch-negative loss, or distance / margin / miner
            with a loss object; an unknown loss name.
    """
    if margin is None and loss in ("SiameseLoss", "TripletLoss"):
        margin = DEFAULT_MARGIN
    kwargs = {k: v for k, v in (("distance", distance), ("margin", margin), ("miner", miner)) if v is not None}
    if isinstance(loss, str) and loss in IN_BATCH and ("miner" in kwargs or "margin" in kwargs):
        raise ValueError(f"miner / margin: {loss} uses every in-batch negative and has no margin; "
                         "drop these arguments or use SiameseLoss / TripletLoss")
    if not isinstance(loss, str) and kwargs:
        raise ValueError("distance / margin / miner apply to a loss given by name; set them on the loss object instead")
    return get_loss(loss, **kwargs)


def fit_embedding(
    model: torch.nn.Module,
    train_data: Any,
    eval_data: Any = None,
    *,
    loss: Any = "SiameseLoss",
    miner: Any = None,
    distance: str | None = None,
    margin: float | None = None,
    num_items_per_class: int = 4,
    preprocess_fn: Callable | None = None,
    collate_fn: Callable | None = None,
    format: str | None = None,
    ks: Sequence[int] = (10,),
    batch_sampler: Any = None,
    compute_loss: Callable | None = None,
    eval_metrics: Callable | None = None,
    **train_args: Any,
) -> FitResult:
    """Metric learning for an embedding model; `finetuner.fit` calls this for torch modules.

    Args:
        model: a `torch.nn.Module` mapping a batch of items to a float tensor [B, D].
        train_data: labeled data in any form `finetuner.data.formats.to_labeled` reads.
        eval_data: the same, scored item against items; or `RetrievalData` / a BEIR folder,
            scored query -> corpus (`evaluate`).
        loss, miner, distance, margin, num_items_per_class, preprocess_fn, collate_fn, format,
            ks: see `finetuner.fit`.
        batch_sampler: a batch sampler over the train items used instead of `GroupBatchSampler`
            (the text recipe's length-grouped one).
        compute_loss: `(model, (inputs, labels)) -> scalar` used instead of
            `loss(model(inputs), labels)`.
        eval_metrics: `(embeddings [N, D], eval LabeledData) -> dict` merged into the metrics.
        **train_args: `finetuner.config.TrainArgs` fields; defaults `DEFAULTS` (10 epochs of 256
            items, Adam at 1e-3 with a cosine decay, fp32).

    Returns:
        `FitResult`.

    Raises:
        TypeError: a model that is not a torch module; an unknown argument.
        ValueError: bad data or settings (see `finetuner.fit`), before training starts.
        FloatingPointError: the loss became NaN or infinite during training.
    """
    args = DEFAULTS.override(train_args)
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module (or a text model path), got {type(model).__name__}")
    with verbosity(args.verbose):
        accelerator, precision = prepare(args)
        train_set = to_labeled(train_data, format, "train_data")
        check_train_data(train_set)
        evald = to_eval_data(eval_data) if eval_data is not None else None
        loss_fn = build_loss(loss, distance, margin, miner)
        metric_distance = getattr(loss_fn, "distance", None) or distance or "cosine"
        if train_set.format == "class" and num_items_per_class < 2:
            raise ValueError(f"num_items_per_class: expected an int >= 2 (a batch needs positive pairs), "
                             f"got {num_items_per_class}")
        sampler = batch_sampler if batch_sampler is not None else GroupBatchSampler(
            train_set.groups, args.batch_size, num_items_per_class if train_set.format == "class" else None,
            seed=args.seed)
        dataset, collate = LabeledDataset(train_set, preprocess_fn), Collate(collate_fn)
        loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, collate_fn=collate, num_workers=0)
        _check_first_batch(model, loss_fn, collate(dataset.__getitems__(next(iter(sampler)))))

        kept: dict = {}  # the eval embeddings before and after, for the report

        def evaluate_fn(m: torch.nn.Module) -> dict:
            metrics, emb = evaluate(m, evald, ks=ks, distance=metric_distance, batch_size=args.eval_batch_size,
                                    preprocess_fn=preprocess_fn, collate_fn=collate_fn, loss_fn=loss_fn,
                                    loss_batch_size=args.batch_size * accelerator.num_processes,  # global batch
                                    num_items_per_class=num_items_per_class,
                                    seed=args.seed, eval_metrics=eval_metrics)
            kept.setdefault("before", emb)
            kept["after"] = emb
            return metrics

        metrics_before = evaluate_fn(model) if evald is not None else {}
        optimizer, scheduler = optimizer_for(model, args, len(sampler))
        monitor = ("eval_loss" if isinstance(evald, LabeledData) else f"nDCG@{tuple(ks)[0]}") if evald is not None \
            else "train_loss"
        in_batch = lambda m, batch: loss_fn(*gather_in_batch(m(batch[0]), batch[1]))  # noqa: E731 (engine.distributed)
        run = train(model, loader, compute_loss or in_batch, args=args,
                    accelerator=accelerator, optimizer=optimizer, scheduler=scheduler,
                    callbacks=standard_callbacks(args, monitor), evaluate=evaluate_fn if evald is not None else None,
                    sampler=sampler, precision=precision)
        result = FitResult(run.model, run.state.history, metrics_before, run.metrics_after, settings={
            "task": "embedding", "table_title": "retrieval metrics on eval_data", **args.to_dict(),
            "precision": precision, "loss": repr(loss_fn), "num_items_per_class": num_items_per_class,
            "train_items": len(train_set), "train_format": train_set.format, "eval_items": len(evald) if evald else 0,
            **({"eval_corpus": len(evald.corpus), "eval_queries_without_relevant": len(evald.unjudged_queries())}
               if isinstance(evald, RetrievalData) else {})})

        def write_report(out):
            from ..report import build_report, save_report_data

            if "before" in kept:
                view, before, after = report_view(evald, kept["before"], kept["after"])
                save_report_data(out, view, before, after, distance=metric_distance, seed=args.seed)
            return build_report(out, seed=args.seed)

        return finish(result, args, is_main_process=accelerator.is_main_process, write_report=write_report)


def _check_first_batch(model: torch.nn.Module, loss_fn: Callable, batch) -> None:
    """One real batch through model and loss: a wrong output shape, batch size or a batch
    without pairs fails here, before any long work."""
    inputs, labels = batch
    with torch.no_grad():
        emb = model(inputs)
        check_embeddings(emb, len(labels))
        loss_fn(emb, labels)


def evaluate(model: torch.nn.Module, data: LabeledData | RetrievalData, *, ks: Sequence[int] = (10,),
             distance: str = "cosine", batch_size: int = 256, preprocess_fn: Callable | None = None,
             collate_fn: Callable | None = None, loss_fn: Callable | None = None, loss_batch_size: int = 256,
             num_items_per_class: int = 4, seed: int = 0, eval_metrics: Callable | None = None) -> tuple[dict, Any]:
    """The eval metrics of `model` and the embeddings they came from.

    `RetrievalData`: the queries and the corpus are embedded and scored query -> corpus with
    trec_eval's metrics (`finetuner.evaluation.evaluate_retrieval`); embeddings (queries
    [Q, D], corpus [N, D]). `LabeledData`: every item is a query against the others
    (`evaluate_embeddings`), plus "eval_loss" (the training loss, batched as in training,
    with `loss_fn`) and `eval_metrics(embeddings, data)`; embeddings [N, D].

    Returns:
        (metrics dict of floats, embeddings).
    """
    from ..evaluation import evaluate_embeddings, evaluate_retrieval

    def embed(items: Any) -> torch.Tensor:
        items = items if isinstance(items, LabeledData) else LabeledData(items, np.zeros(len(items), np.int64))
        return embed_batches(model, items, batch_size=batch_size, preprocess_fn=preprocess_fn, collate_fn=collate_fn)

    if isinstance(data, RetrievalData):
        q, c = embed(list(data.queries.values())), embed(list(data.corpus.values()))
        metrics = evaluate_retrieval(q, c, data, ks=tuple(ks), distance=distance)
        metrics.pop("queries_without_relevant")  # a property of the data: fit's settings hold it
        return metrics, (q, c)
    emb = embed(data)
    labels = torch.from_numpy(data.labels())
    metrics = {} if loss_fn is None else {
        "eval_loss": eval_loss(loss_fn, emb, labels, data, loss_batch_size, num_items_per_class, seed)}
    metrics.update(evaluate_embeddings(emb, labels, ks=tuple(ks), distance=distance))
    if eval_metrics is not None:
        metrics.update(eval_metrics(emb, data))
    return metrics, emb


def report_view(data: LabeledData | RetrievalData, before: Any, after: Any) -> tuple[LabeledData, Any, Any]:
    """What the report draws: labeled data as it is; for `RetrievalData`, each query with a
    relevant document as a session (the query, then its judged documents) and the rows of
    the query / corpus embeddings those items have."""
    if not isinstance(data, RetrievalData):
        return data, before, after
    q_pos, d_pos = {q: i for i, q in enumerate(data.queries)}, {d: i for i, d in enumerate(data.corpus)}
    items, groups, rel, rows = [], [], [], []
    for g, (q, docs) in enumerate((q, d) for q, d in data.qrels.items() if any(v >= 1 for v in d.values())):
        members = [(data.queries[q], 1.0, q_pos[q])] + [
            (data.corpus[d], float(v >= 1), len(data.queries) + d_pos[d]) for d, v in docs.items()]
        for text, r, row in members:
            items.append(text)
            groups.append(g)
            rel.append(r)
            rows.append(row)
    idx = torch.as_tensor(rows, dtype=torch.int64)
    view = LabeledData(items, np.asarray(groups), np.asarray(rel, np.float32), "session")
    return view, torch.cat(before)[idx], torch.cat(after)[idx]


def eval_loss(loss_fn: Callable, emb: torch.Tensor, labels: torch.Tensor, data: LabeledData, batch_size: int,
              num_items_per_class: int, seed: int) -> float:
    """The training loss on eval data, batched as in training (a fixed order), from embeddings
    already computed; batches without a valid pair are skipped (NaN when none has one)."""
    sampler = GroupBatchSampler(data.groups, batch_size, num_items_per_class if data.format == "class" else None,
                                seed=seed + 1)
    values = []
    with torch.no_grad():
        for idx in sampler:
            try:
                values.append(float(loss_fn(emb[idx], labels[idx])))
            except ValueError:  # a batch with no valid pair says nothing about the loss
                continue
    return float(np.mean(values)) if values else float("nan")
