"""The text-embedding recipe: a sentence encoder tuned with in-batch negatives (or CoSENT for
scored pairs), fast on a CPU.

Where the speed comes from, each piece cheap on its own:
- texts are tokenised once, before the first epoch (`TextEncoder.cache_texts`);
- batches are built from groups of similar token length (`LengthGroupedBatchSampler`) and
  padded only to their longest text, so little compute goes to padding;
- bf16 autocast on CPUs with native bf16 (AVX512-BF16 / AMX) and on GPUs that have it;
- a fused AdamW step; one loop on `finetuner.engine` (accelerate), no HF Trainer.

Batches are then trained as in `finetuner.recipes.embedding` (the same engine, losses and
evaluation), with one text-specific rule: identical texts in a batch are never each other's
negatives, nor negatives of an anchor one of whose positives they duplicate (`mask_duplicates`).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ..data.formats import to_labeled
from ..data.labeled import LabeledData
from ..data.relation import UNKNOWN, relation_matrix
from ..data.samplers import GroupBatchSampler
from ..losses import CoSENTLoss, InfoNCELoss, MetricLoss, get_loss
from ..losses.distances import pairwise_distance
from ..models.text import TextEncoder, is_sentence_transformer
from .result import FitResult

_NOT_TEXT_ARGS = ("interactive", "to_embedding_model")


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


# ---- batches of similar length ------------------------------------------------------------
class LengthGroupedBatchSampler(GroupBatchSampler):
    """`GroupBatchSampler` whose batches hold groups of similar length, so padding is small.

    Each epoch: chunks (whole groups, or `chunk_size` items of a class) are shuffled, cut into
    pools of about `pool_batches` batches, sorted by length inside a pool (a chunk's length is
    its longest item), packed into batches, and the batches are shuffled. This is the
    "mega-batch" order of transformers' `LengthGroupedSampler` (HF `get_length_grouped_indices`),
    applied to whole groups so pairs and sessions stay together for in-batch mining.

    Args:
        groups: int array [N], the group of each item.
        lengths: int array [N], the length of each item (tokens, or characters as a proxy).
        batch_size, chunk_size, shuffle, seed: as in `GroupBatchSampler`.
        pool_batches: batches per sorted pool (>= 1); 1 gives random batches, a large value
            sorts the whole epoch (least padding, most length-alike batches).

    Raises:
        ValueError: lengths and groups differ in length, or pool_batches < 1 (and see
            `GroupBatchSampler`).
    """

    def __init__(self, groups: np.ndarray, lengths: np.ndarray, batch_size: int, chunk_size: int | None = None,
                 pool_batches: int = 32, shuffle: bool = True, seed: int = 0) -> None:
        self.lengths = np.asarray(lengths, dtype=np.int64)
        if len(self.lengths) != len(groups):
            raise ValueError(f"lengths: expected one per item ({len(groups)}), got {len(self.lengths)}")
        if isinstance(pool_batches, bool) or not isinstance(pool_batches, (int, np.integer)) or pool_batches < 1:
            raise ValueError(f"length_grouping: expected an int >= 1 (batches per sorted pool), got {pool_batches!r}")
        self.pool_batches = int(pool_batches)
        super().__init__(groups, batch_size, chunk_size, shuffle, seed)

    def _make_batches(self) -> list[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        chunks = self._chunks(rng)
        pool_size = self.pool_batches * self.batch_size
        batches: list[list[int]] = []
        start = 0
        while start < len(chunks):
            stop, size = start, 0
            while stop < len(chunks) and size < pool_size:
                size += len(chunks[stop])
                stop += 1
            pool = chunks[start:stop]
            pool.sort(key=lambda c: int(self.lengths[c].max()))
            batches += _pack(pool, self.batch_size)
            start = stop
        if len(batches) > 1 and len({int(self.groups[i]) for i in batches[-1]}) == 1:
            last = batches.pop()  # a lone group has nothing to contrast with
            batches[-1].extend(last)
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        return batches


def _pack(chunks: list[np.ndarray], batch_size: int) -> list[list[int]]:
    """Pack chunks in order into batches of at most `batch_size` items (a chunk is never split)."""
    batches, current = [], []
    for chunk in chunks:
        if current and len(current) + len(chunk) > batch_size:
            batches.append(current)
            current = []
        current.extend(chunk.tolist())
    if current:
        batches.append(current)
    return batches


# ---- duplicates are never negatives -------------------------------------------------------
def duplicate_ids(inputs: Any) -> torch.Tensor | None:
    """int64 [B]: equal values for identical inputs of a batch, or None when unknown.

    A list of strings compares the strings; tokenizer outputs (a mapping with "input_ids") or an
    int tensor [B, L] compare the token rows (texts identical after truncation are identical
    to the model too); other inputs give None.
    """
    if isinstance(inputs, (list, tuple)) and inputs and all(isinstance(t, str) for t in inputs):
        index: dict[str, int] = {}
        return torch.tensor([index.setdefault(t, len(index)) for t in inputs], dtype=torch.int64)
    rows = inputs.get("input_ids") if isinstance(inputs, Mapping) or hasattr(inputs, "keys") else inputs
    if isinstance(rows, torch.Tensor) and rows.dim() == 2 and not rows.is_floating_point():
        return torch.unique(rows.detach().cpu(), dim=0, return_inverse=True)[1]
    return None


def mask_duplicates(relation: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Mark as UNKNOWN the negatives that are copies of the anchor or of one of its positives.

    Args:
        relation: float [B, B] from `relation_matrix` (1 positive, 0 negative, -1 unknown).
        ids: int [B], equal for identical items (`duplicate_ids`).

    Returns:
        float [B, B]: `relation` where entry (a, j) == 0 becomes UNKNOWN when item j is identical
        to a (j != a), or identical to an item k with relation(a, k) > 0. Without duplicates it
        is `relation` itself.
    """
    ids = ids.to(relation.device)
    same = ids[:, None] == ids[None, :]
    b = relation.shape[0]
    if int(same.sum()) == b:  # no duplicates: nothing to do
        return relation
    copy_of_positive = ((relation > 0).float() @ same.float()) > 0
    copy_of_anchor = same & ~torch.eye(b, dtype=torch.bool, device=relation.device)
    return torch.where((relation == 0) & (copy_of_positive | copy_of_anchor),
                       torch.full_like(relation, UNKNOWN), relation)


def in_batch_loss(loss_fn: Callable, embeddings: torch.Tensor, labels: torch.Tensor,
                  ids: torch.Tensor | None) -> torch.Tensor:
    """The loss of a batch with duplicates kept out of the negatives.

    For the project's pairwise losses (a `MetricLoss` using the base `forward`: Siamese,
    Triplet, InfoNCE) the batch relation goes through `mask_duplicates` first; other losses
    (CoSENT, which only uses given pairs, or a user's callable) are called as they are.

    Args:
        loss_fn: the loss; embeddings: float [B, D]; labels: int [B] or float [B, 2];
        ids: int [B] from `duplicate_ids`, or None.
    """
    plain = isinstance(loss_fn, MetricLoss) and type(loss_fn).forward is MetricLoss.forward
    if ids is None or not plain or ids.unique().numel() == ids.numel():
        return loss_fn(embeddings, labels)
    if labels.shape[0] != embeddings.shape[0]:
        raise ValueError(f"the model returned {embeddings.shape[0]} embeddings for a batch of {labels.shape[0]} "
                         "items: it must return one row per input item")
    relation = mask_duplicates(relation_matrix(labels.to(embeddings.device)), ids)
    return loss_fn.compute(pairwise_distance(embeddings, distance=loss_fn.distance), relation, embeddings)


# ---- evaluation of scored pairs -------------------------------------------------------------
def scored_pair_metrics(embeddings: torch.Tensor, data: LabeledData) -> dict:
    """Spearman correlation between the cosine similarity of each pair and its gold score.

    The standard STS evaluation (Cer et al., 2017; Reimers & Gurevych, 2019). Applies to
    pair-format data whose scores vary (e.g. `generate_stsb()`); gives {} for other data.

    Args:
        embeddings: float [N, D], one row per item of `data`.
        data: the evaluated `LabeledData`.

    Returns:
        {"spearman_cosine": float in [-1, 1]} or {}.
    """
    if data.format != "pair" or data.relevance is None:
        return {}
    groups = data.groups
    first = np.flatnonzero(np.r_[True, groups[1:] != groups[:-1]])
    sizes = np.diff(np.r_[first, len(groups)])
    keep = first[sizes == 2]
    scores = data.relevance[keep + 1]
    if len(keep) < 3 or np.unique(scores).size < 2:
        return {}
    from scipy.stats import spearmanr

    a, b = embeddings[torch.from_numpy(keep)], embeddings[torch.from_numpy(keep + 1)]
    cosine = torch.nn.functional.cosine_similarity(a.float(), b.float(), dim=-1).numpy()
    return {"spearman_cosine": float(spearmanr(cosine, scores).statistic)}


# ---- checks and defaults ------------------------------------------------------------------------
def check_texts(data: LabeledData, name: str) -> None:
    """Raise ValueError unless every item is a non-empty string (names the argument and the item)."""
    for i, item in enumerate(data.items):
        if not isinstance(item, str):
            raise ValueError(f"{name}: item {i} is a {type(item).__name__} ({str(item)[:40]!r}); a text model "
                             "expects every item to be a string")
        if not item.strip():
            raise ValueError(f"{name}: item {i} is an empty string; expected non-empty text")


def default_precision(device: str) -> str:
    """"bf16" where the hardware computes it natively (a GPU with bf16, a CPU with AVX512-BF16
    or AMX), else "fp32": bf16 emulated on an older CPU is slower than fp32."""
    if device in ("auto", "cuda") and torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if device == "mps":
        return "fp32"
    cpu = getattr(torch, "cpu", None)
    native = any(getattr(cpu, f, lambda: False)() for f in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))
    return "bf16" if native else "fp32"


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
    epochs: int = 1,
    batch_size: int = 64,
    learning_rate: float = 2e-5,
    optimizer: Any = "adamw",
    optimizer_kwargs: dict | None = None,
    scheduler: Any = "linear",
    warmup_ratio: float = 0.1,
    pooling: str | None = None,
    normalize: bool | None = None,
    max_length: int | None = None,
    length_grouping: int | bool = 32,
    miner: Any = None,
    distance: str | None = None,
    margin: float | None = None,
    num_items_per_class: int = 4,
    preprocess_fn: Callable | None = None,
    collate_fn: Callable | None = None,
    device: str = "auto",
    precision: str = "auto",
    gradient_accumulation_steps: int = 1,
    max_grad_norm: float | None = None,
    callbacks: Sequence = (),
    early_stopping: int | dict | None = None,
    seed: int = 42,
    output_dir: str | os.PathLike | None = None,
    resume: bool | str = False,
    format: str | None = None,
    ks: Sequence[int] = (10,),
    eval_batch_size: int = 256,
    verbose: bool = True,
    report: bool = True,
) -> FitResult:
    """Fine-tune a text embedding model; `finetuner.fit` calls this for text models.

    Args:
        model: a local model folder or Hugging Face model id (sentence-transformers layout, or
            a plain encoder that gets `pooling`), a `sentence_transformers.SentenceTransformer`
            (trained in place), a `finetuner.models.TextEncoder`, or any torch module with a
            `collate_fn` that turns a list of strings into its input (the seed's
            `TransformerEmbedder` form).
        train_data / eval_data: labeled texts in any format `fit` reads (class, pair with score,
            triplet, session: e.g. `generate_qa()`, `generate_stsb()`); every item a non-empty str.

    Keyword Args:
        loss: "auto" (default): `CoSENTLoss` for pairs with graded scores (e.g. STS-B), else
            `InfoNCELoss` (in-batch negatives; several positives per anchor allowed); or any
            name / object / callable `fit` takes.
        epochs (1), batch_size (64 items, e.g. 32 pairs), learning_rate (2e-5), optimizer
            ("adamw", fused where torch supports it), optimizer_kwargs, scheduler ("linear"
            decay), warmup_ratio (0.1).
        pooling: "mean", "cls" or "max" for a path / SentenceTransformer (None: the model's
            own, "mean" for a plain encoder); normalize: add (True) / drop (False) L2
            normalisation; max_length: tokens per text (default the model's; longer texts
            are truncated with one warning).
        length_grouping: batches per length-sorted pool (`LengthGroupedBatchSampler`); False or
            1 gives random batches.
        precision: "auto" (bf16 where the hardware has it, else fp32), "bf16" or "fp32".
        The other arguments are those of `finetuner.fit` (see there); eval_batch_size is the
        number of texts per evaluation call.

    Returns:
        `FitResult`; `.model` is a `TextEncoder` for a path / SentenceTransformer (its
        `.sentence_transformer` is the trained pipeline; `finetuner.save` writes the
        sentence-transformers layout), else your module. With scored eval pairs the metrics
        include "spearman_cosine". For a `TextEncoder`, `settings` holds "train_tokens" (real
        tokens per epoch) and "padding_fraction" (of the tokens computed in training).

    Raises:
        ValueError: a model folder that does not exist or has no tokenizer; an item that is not
            a non-empty string; pooling / normalize / max_length with a module; an unknown
            precision; and every error of `fit_embedding` (all before training starts).
        TypeError: a model of an unsupported type.
    """
    from ..engine.trainer import PRECISIONS
    from .embedding import fit_embedding

    if precision == "auto":
        precision = default_precision(device)
    if precision not in PRECISIONS:
        raise ValueError(f"precision: expected 'auto' or one of {sorted(PRECISIONS)}, got {precision!r}")
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs: expected an int >= 1, got {epochs!r}")
    train = to_labeled(train_data, format, "train_data")
    check_texts(train, "train_data")
    evald = to_labeled(eval_data, None, "eval_data") if eval_data is not None else None
    if evald is not None:
        check_texts(evald, "eval_data")
    if not isinstance(model, (str, os.PathLike, torch.nn.Module)):
        raise TypeError(f"model: expected a model path or id, a SentenceTransformer or a torch module, got "
                        f"{type(model).__name__}")
    encoder = _build_model(model, pooling, normalize, max_length, collate_fn)
    is_encoder = isinstance(encoder, TextEncoder)

    if is_encoder:  # tokenise every training text once, before the first epoch
        lengths = encoder.cache_texts(train.items)
    else:
        lengths = np.fromiter((len(t) for t in train.items), dtype=np.int64, count=len(train))
    chunk = num_items_per_class if train.format == "class" else None
    if train.format == "class" and num_items_per_class < 2:
        raise ValueError(f"num_items_per_class: expected an int >= 2 (a batch needs positive pairs), got {num_items_per_class}")
    pool = 1 if length_grouping is False else (32 if length_grouping is True else length_grouping)
    sampler = LengthGroupedBatchSampler(train.groups, lengths, batch_size, chunk, pool_batches=pool, seed=seed)

    loss_kwargs = {k: v for k, v in (("distance", distance), ("margin", margin), ("miner", miner)) if v is not None}
    if loss == "auto":
        if "miner" in loss_kwargs or "margin" in loss_kwargs:
            raise ValueError("miner / margin: name a loss that takes them (loss='SiameseLoss' or 'TripletLoss')")
        loss_fn = _default_loss(train)
        loss_fn = type(loss_fn)(**loss_kwargs) if loss_kwargs else loss_fn
    elif isinstance(loss, str):
        loss_fn = get_loss(loss, **loss_kwargs)
    elif loss_kwargs:
        raise ValueError("distance / margin / miner apply to a loss given by name; set them on the loss object instead")
    else:
        loss_fn = get_loss(loss)
    if optimizer == "adamw" and optimizer_kwargs is None:
        optimizer_kwargs = {"fused": True} if _fused_adamw_ok(device) else {}

    def compute_loss(m: torch.nn.Module, batch) -> torch.Tensor:
        inputs, labels = batch
        return in_batch_loss(loss_fn, m(inputs), labels, duplicate_ids(inputs))

    if is_encoder:
        encoder.token_counts[:] = 0
    result = fit_embedding(
        encoder, train, evald, loss=loss_fn, epochs=epochs, batch_size=batch_size,
        learning_rate=learning_rate, optimizer=optimizer, optimizer_kwargs=optimizer_kwargs, scheduler=scheduler,
        warmup_ratio=warmup_ratio, num_items_per_class=num_items_per_class, preprocess_fn=preprocess_fn,
        collate_fn=None if is_encoder else collate_fn, device=device, precision=precision,
        gradient_accumulation_steps=gradient_accumulation_steps, max_grad_norm=max_grad_norm, callbacks=callbacks,
        early_stopping=early_stopping, seed=seed, output_dir=output_dir, resume=resume, format=format, ks=ks,
        eval_batch_size=eval_batch_size, verbose=verbose, report=report, batch_sampler=sampler, compute_loss=compute_loss,
        eval_metrics=scored_pair_metrics)
    if is_encoder:
        real, padded = (int(v) for v in encoder.token_counts)
        result.settings.update({"train_tokens": int(lengths.sum()),
                                "padding_fraction": 1.0 - real / padded if padded else 0.0,
                                "max_length": encoder.max_length})
    result.settings.update({"length_grouping": pool, "precision": precision})
    return result


def _fused_adamw_ok(device: str) -> bool:
    """torch >= 2.4 has a fused AdamW on CPU and CUDA (several times faster than the loop over
    tensors); mps and older versions keep the default."""
    major, minor = (int(x) for x in torch.__version__.split(".")[:2])
    return device != "mps" and (major, minor) >= (2, 4)
