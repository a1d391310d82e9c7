"""The text-embedding recipe: a sentence encoder tuned with in-batch negatives (or CoSENT for
scored pairs), fast on a CPU.

Where the speed comes from, each piece cheap on its own:
- texts are tokenised once, before the first epoch (`TextEncoder.cache_texts`);
- batches are built from groups of similar token length (`LengthGroupedBatchSampler`), and
  each batch runs in sub-batches of similar length (`models.text.length_groups`): a short
  query is not padded to its document's length, so little compute goes to padding;
- bf16 autocast where the hardware computes it natively and faster than fp32, timed once a
  process (`finetuner.engine.precision`);
- a fused AdamW step; one loop on `finetuner.engine` (accelerate), no HF Trainer.

Batches are then trained by the embedding recipe (the same engine, losses and evaluation), with
one text-specific rule: identical texts in a batch are never each other's negatives, nor
negatives of an anchor one of whose positives they duplicate (`data.relation.mask_duplicates`).
Query -> corpus data (`RetrievalData`, a BEIR folder) trains on its train qrels and is
evaluated query -> corpus; hard negatives can be mined with the model first
(`recipes.hard_negatives`); `mini_batch_size` (or a Cached* loss) trains large batches in
bounded memory (GradCache).
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Mapping
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ..config import TrainArgs
from ..data.formats import to_eval_data, to_labeled
from ..data.labeled import LabeledData
from ..data.relation import duplicate_ids, mask_duplicates, relation_matrix
from ..data.retrieval import RetrievalData, is_beir_folder, load_beir
from ..data.samplers import LengthGroupedBatchSampler
from ..engine.distributed import gather_in_batch
from ..engine.precision import resolve_precision
from ..evaluation.similarity import scored_pair_metrics
from ..losses import CoSENTLoss, InfoNCELoss, MetricLoss, get_loss
from ..models.dropout import check_attention_dropout, set_attention_dropout, use_fast_dropout
from ..models.text import TextEncoder, is_sentence_transformer
from .embedding import fit_embedding
from .hard_negatives import HardNegatives, mine_hard_negatives
from .result import FitResult

_NOT_TEXT_ARGS = ("interactive", "to_embedding_model")
DEFAULTS = TrainArgs(epochs=1, batch_size=64, learning_rate=2e-5, optimizer="adamw", scheduler="linear",
                     warmup_ratio=0.1, precision="auto", eval_batch_size=256)
POOL_BATCHES = 32  # batches per length-sorted pool when group_by_length=True


class QueryFirstSampler(LengthGroupedBatchSampler):
    """`LengthGroupedBatchSampler` whose batches list their items in data order, so each
    group's first item in a batch is its query / anchor (what `MultipleNegativesRankingLoss`
    reads as the anchor). The in-batch losses do not depend on the order otherwise."""

    def _make_batches(self) -> list[list[int]]:
        return [sorted(b) for b in super()._make_batches()]


# ---- which models this recipe takes ---------------------------------------------------------
def _wraps_transformer(model: torch.nn.Module) -> bool:
    """True when a module holds a Hugging Face `PreTrainedModel` (checked only if transformers is loaded)."""
    module = sys.modules.get("transformers")
    if module is None:
        return False
    return any(isinstance(m, module.PreTrainedModel) for m in model.modules())


def is_text_model(model: Any, kwargs: Mapping) -> bool:
    """Whether `fit` should use `fit_text`: a model path / hub id string, a `SentenceTransformer`,
    a `TextEncoder`, or a torch module that wraps a Hugging Face transformer and comes with a
    `collate_fn` (the seed's `TransformerEmbedder` form). Never raises."""
    if any(k in kwargs for k in _NOT_TEXT_ARGS):
        return False
    if isinstance(model, (str, os.PathLike)) or isinstance(model, TextEncoder) or is_sentence_transformer(model):
        return True
    return (isinstance(model, torch.nn.Module) and kwargs.get("collate_fn") is not None
            and _wraps_transformer(model))


# ---- the loss of a batch --------------------------------------------------------------------
def in_batch_loss(loss_fn: Callable, embeddings: torch.Tensor, labels: torch.Tensor,
                  ids: torch.Tensor | None) -> torch.Tensor:
    """The loss of a batch with duplicates kept out of the negatives.

    A `MetricLoss` gets the batch relation with duplicates marked unknown (`mask_duplicates`);
    a user's callable is called as it is.

    Args:
        loss_fn: the loss; embeddings: float [B, D]; labels: int [B] or float [B, 2];
        ids: int [B] from `duplicate_ids`, or None.
    """
    if ids is None or not isinstance(loss_fn, MetricLoss) or ids.unique().numel() == ids.numel():
        return loss_fn(embeddings, labels)
    if labels.shape[0] != embeddings.shape[0]:
        raise ValueError(f"the model returned {embeddings.shape[0]} embeddings for a batch of {labels.shape[0]} "
                         "items: it must return one row per input item")
    relation = mask_duplicates(relation_matrix(labels.to(embeddings.device)), ids)
    return loss_fn(embeddings, labels, relation=relation)


# ---- checks and defaults ------------------------------------------------------------------------
def check_texts(data: LabeledData, name: str) -> None:
    """Raise ValueError unless every item is a non-empty string (names the argument and the item)."""
    for i, item in enumerate(data.items):
        if not isinstance(item, str):
            raise ValueError(f"{name}: item {i} is a {type(item).__name__} ({str(item)[:40]!r}); a text model "
                             "expects every item to be a string")
        if not item.strip():
            raise ValueError(f"{name}: item {i} is an empty string; expected non-empty text")


def _default_loss(data: LabeledData) -> Any:
    """CoSENT for pairs with graded scores, else InfoNCE (in-batch negatives)."""
    rel = data.relevance
    graded = rel is not None and bool(((rel > 0) & (rel < 1)).any())
    return CoSENTLoss() if graded and data.format == "pair" else InfoNCELoss()


def _build_model(model: Any, pooling, normalize, max_length, collate_fn) -> torch.nn.Module:
    if isinstance(model, (str, os.PathLike)):
        return TextEncoder.from_pretrained(model, pooling=pooling, normalize=normalize, max_length=max_length)
    if is_sentence_transformer(model):
        return TextEncoder.from_sentence_transformer(model, pooling=pooling, normalize=normalize, max_length=max_length)
    given = [k for k, v in (("pooling", pooling), ("normalize", normalize), ("max_length", max_length)) if v is not None]
    if isinstance(model, TextEncoder):
        if given:
            raise ValueError(f"{', '.join(given)}: set on a TextEncoder when it is built, not in fit")
        return model
    if given:
        raise ValueError(f"{', '.join(given)}: apply to a model path or a SentenceTransformer; your module "
                         "brings its own tokenizer (collate_fn) and pooling")
    if collate_fn is None:
        raise ValueError("collate_fn: a torch module given for text data needs a collate_fn that turns a list "
                         "of strings into the module's input (e.g. a tokenizer call)")
    return model


# ---- the recipe -------------------------------------------------------------------------------------
def fit_text(
    model: Any,
    train_data: Any,
    eval_data: Any = None,
    *,
    loss: Any = "auto",
    pooling: str | None = None,
    normalize: bool | None = None,
    max_length: int | None = None,
    group_by_length: int | bool = True,
    hard_negatives: Any = None,
    mini_batch_size: int | None = None,
    miner: Any = None,
    distance: str | None = None,
    margin: float | None = None,
    num_items_per_class: int = 4,
    preprocess_fn: Callable | None = None,
    collate_fn: Callable | None = None,
    format: str | None = None,
    ks: Sequence[int] = (10,),
    length_grouping: int | bool | None = None,
    attention_dropout: bool = False,
    **train_args: Any,
) -> FitResult:
    """Fine-tune a text embedding model; `finetuner.fit` calls this for text models.

    Args:
        model: a local model folder or Hugging Face model id (sentence-transformers layout, or
            a plain encoder that gets `pooling`), a `sentence_transformers.SentenceTransformer`
            (trained in place), a `finetuner.models.TextEncoder`, or any torch module with a
            `collate_fn` that turns a list of strings into its input (the seed's
            `TransformerEmbedder` form).
        train_data: labeled texts in any format `fit` reads (class, pair with score, triplet,
            session, (query, [positives], [negatives]) rows: e.g. `generate_qa()`,
            `generate_stsb()`), a `RetrievalData` or a BEIR folder (its train qrels); every
            item a non-empty str.
        eval_data: labeled texts (each item a query against the others), or `RetrievalData`
            / a BEIR folder (its test split, else dev), scored query -> corpus with trec_eval's
            metrics before training, after every epoch and at the end.
        loss: "auto" (default): `CoSENTLoss` for pairs with graded scores (e.g. STS-B), else
            `InfoNCELoss` (in-batch negatives in both directions; several positives per
            anchor allowed); or any name / object / callable `fit` takes, e.g.
            "MultipleNegativesRankingLoss" (sentence-transformers' one-direction loss).
        pooling: "mean", "cls" or "max" for a path / SentenceTransformer (None: the model's
            own, "mean" for a plain encoder); normalize: add (True) / drop (False) L2
            normalisation; max_length: tokens per text (default the model's; longer texts
            are truncated with one warning).
        group_by_length: True (pools of 32 batches sorted by length; `LengthGroupedBatchSampler`),
            an int (that many batches per pool), or False (random batches).
        hard_negatives: mine negatives with the model before training
            (`finetuner.recipes.hard_negatives`): True (1 per query, 5% relative margin), an
            int (that many), a dict of `HardNegatives` settings, or None / False (off).
            Needs queries with positives (session, pair, triplet or query -> corpus data).
        mini_batch_size: embed each batch in checkpointed chunks of this many texts (GradCache:
            memory set by the chunk, not the batch; same loss and gradient); default the
            loss's own (`CachedInfoNCELoss`, `CachedMultipleNegativesRankingLoss`), else off.
        miner, distance, margin, num_items_per_class, preprocess_fn, collate_fn, format, ks: as
            in `finetuner.fit`.
        length_grouping: the former name of `group_by_length` (deprecated).
        attention_dropout: keep the model's dropout of attention probabilities in training.
            False (default): it is left out (hidden-state dropout stays), so attention runs in
            SDPA's fused kernel (`models.dropout.set_attention_dropout`): 2.3x faster steps on
            256-token texts on a 2-core CPU, with nDCG@10 within 0.002 or better on STS-B,
            Covid-QA and LIMA (benchmarks/text_vs_sentence_transformers.py).
        **train_args: `TrainArgs` fields; defaults `DEFAULTS` (1 epoch of 64 texts, AdamW at
            2e-5 fused where torch has it, linear decay after 10% warm-up, precision "auto").

    Returns:
        `FitResult`; `.model` is a `TextEncoder` for a path / SentenceTransformer (its
        `.sentence_transformer` is the trained pipeline; `finetuner.save` writes the
        sentence-transformers layout), else your module. With scored eval pairs the metrics
        include "spearman_cosine". For a `TextEncoder`, `settings` holds "train_tokens" (real
        tokens per epoch) and "padding_fraction" (of the tokens computed in training).

    Raises:
        ValueError: a model folder that does not exist or has no tokenizer; an item that is not
            a non-empty string; a bad BEIR folder or `RetrievalData` (missing ids, duplicates,
            an empty corpus); pooling / normalize / max_length with a module; an unknown
            precision; and every error of `fit_embedding` (all before training starts).
        TypeError: a model of an unsupported type; an unknown argument.
    """
    if length_grouping is not None:
        warnings.warn("length_grouping: renamed group_by_length (one name in every recipe)", DeprecationWarning,
                      stacklevel=2)
        group_by_length = length_grouping
    args = DEFAULTS.override(train_args)
    precision = resolve_precision(args.precision, args.device)
    args = args.override({"precision": precision})
    retrieval = train_data if isinstance(train_data, RetrievalData) else (
        load_beir(train_data, "train", "train_data") if is_beir_folder(train_data) else None)
    train = to_labeled(retrieval if retrieval is not None else train_data, format, "train_data")
    check_texts(train, "train_data")
    evald = to_eval_data(eval_data) if eval_data is not None else None
    if isinstance(evald, LabeledData):
        check_texts(evald, "eval_data")
    if not isinstance(model, (str, os.PathLike, torch.nn.Module)):
        raise TypeError(f"model: expected a model path or id, a SentenceTransformer or a torch module, got "
                        f"{type(model).__name__}")
    check_attention_dropout(attention_dropout)
    if train.format == "class" and num_items_per_class < 2:
        raise ValueError(f"num_items_per_class: expected an int >= 2 (a batch needs positive pairs), got {num_items_per_class}")
    mining = HardNegatives.parse(hard_negatives)
    if mining is not None and train.format == "class":
        raise ValueError("hard_negatives: class data has no queries to mine negatives for; use session, pair, "
                         "triplet or query -> corpus data, or hard_negatives=None")
    pool = _pool_batches(group_by_length)
    loss_fn = _text_loss(loss, train, distance, margin, miner)
    chunk_texts = mini_batch_size if mini_batch_size is not None else getattr(loss_fn, "mini_batch_size", None)
    encoder = _build_model(model, pooling, normalize, max_length, collate_fn)
    is_encoder = isinstance(encoder, TextEncoder)
    if is_encoder:
        use_fast_dropout(encoder)  # the same dropout, a cheaper mask (models.dropout)
        set_attention_dropout(encoder, attention_dropout)  # off: SDPA's fused kernel (models.dropout)
    if is_encoder and chunk_texts is not None:
        encoder.set_mini_batch_size(chunk_texts)
    elif chunk_texts is not None:
        raise ValueError("mini_batch_size: the chunked forward needs a model path, a SentenceTransformer or a "
                         "TextEncoder (your module runs its own forward)")
    if mining is not None:  # negatives the model itself ranks high, before it is trained
        train = mine_hard_negatives(_embedder(encoder, collate_fn, args), retrieval if retrieval is not None else train,
                                    mining)

    if is_encoder:  # tokenise every training text once, before the first epoch
        lengths = encoder.cache_texts(train.items)
    else:
        lengths = np.fromiter((len(t) for t in train.items), dtype=np.int64, count=len(train))
    chunk = num_items_per_class if train.format == "class" else None
    sampler = QueryFirstSampler(lengths, args.batch_size, groups=train.groups, chunk_size=chunk,
                                pool_batches=pool, seed=args.seed)
    if args.optimizer == "adamw" and args.optimizer_kwargs is None:
        args = args.override({"optimizer_kwargs": {"fused": True} if _fused_adamw_ok(args.device) else {}})

    def compute_loss(m: torch.nn.Module, batch) -> torch.Tensor:
        inputs, labels = batch  # on W processes: the whole global batch's loss (engine.distributed)
        return in_batch_loss(loss_fn, *gather_in_batch(m(inputs), labels, duplicate_ids(inputs, stable=True)))

    if is_encoder:
        encoder.token_counts[:] = 0
    try:
        result = fit_embedding(
            encoder, train, evald, loss=loss_fn, num_items_per_class=num_items_per_class, preprocess_fn=preprocess_fn,
            collate_fn=None if is_encoder else collate_fn, format=format, ks=ks, batch_sampler=sampler,
            compute_loss=compute_loss, eval_metrics=scored_pair_metrics, **args.as_kwargs())
    finally:
        if is_encoder:
            set_attention_dropout(encoder, True)  # the model goes back with the attention it came with
    if is_encoder:
        real, padded = (int(v) for v in encoder.token_counts)
        result.settings.update({"train_tokens": int(lengths.sum()),
                                "padding_fraction": 1.0 - real / padded if padded else 0.0,
                                "max_length": encoder.max_length, "mini_batch_size": encoder.mini_batch_size})
    result.settings.update({"task": "text", "group_by_length": pool, "attention_dropout": attention_dropout,
                            "precision": precision, "hard_negatives": repr(mining) if mining else None})
    return result


def _embedder(model: torch.nn.Module, collate_fn: Callable | None, args: TrainArgs) -> Callable:
    """texts -> float32 array [n, D] with the untrained model (for mining), in the run's precision."""
    from ..engine.predict import embed_batches

    if isinstance(model, TextEncoder):
        return lambda texts: model.encode(texts, batch_size=args.eval_batch_size, precision=args.precision)
    return lambda texts: embed_batches(model, LabeledData(list(texts), np.zeros(len(texts), np.int64)),
                                       batch_size=args.eval_batch_size, collate_fn=collate_fn,
                                       precision=args.precision).numpy()


def _pool_batches(group_by_length: int | bool) -> int:
    """Batches per length-sorted pool for `group_by_length` (True: `POOL_BATCHES`, False: 1)."""
    if group_by_length is True:
        return POOL_BATCHES
    if group_by_length is False:
        return 1
    if isinstance(group_by_length, (int, np.integer)) and group_by_length >= 1:
        return int(group_by_length)
    raise ValueError(f"group_by_length: expected True, False or an int >= 1 (batches per sorted pool), "
                     f"got {group_by_length!r}")


def _text_loss(loss: Any, train: LabeledData, distance, margin, miner) -> Callable:
    """The loss object for the text recipe's loss arguments ("auto": `_default_loss`)."""
    loss_kwargs = {k: v for k, v in (("distance", distance), ("margin", margin), ("miner", miner)) if v is not None}
    if loss == "auto":
        if "miner" in loss_kwargs or "margin" in loss_kwargs:
            raise ValueError("miner / margin: name a loss that takes them (loss='SiameseLoss' or 'TripletLoss')")
        loss_fn = _default_loss(train)
        return type(loss_fn)(**loss_kwargs) if loss_kwargs else loss_fn
    if isinstance(loss, str):
        return get_loss(loss, **loss_kwargs)
    if loss_kwargs:
        raise ValueError("distance / margin / miner apply to a loss given by name; set them on the loss object instead")
    return get_loss(loss)


def _fused_adamw_ok(device: str) -> bool:
    """torch >= 2.4 has a fused AdamW on CPU and CUDA (several times faster than the loop over
    tensors); mps and older versions keep the default."""
    major, minor = (int(x) for x in torch.__version__.split(".")[:2])
    return device != "mps" and (major, minor) >= (2, 4)
