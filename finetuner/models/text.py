"""Text embedding models: a Hugging Face encoder + pooling (+ normalisation), held as a
sentence-transformers pipeline so it saves and loads in that library's layout.

`TextEncoder` is what `finetuner.fit` trains when it is given a model path / id or a
`SentenceTransformer`. It maps a list of strings to a float tensor [B, D] and tokenises each
training text once: `cache_texts` keeps the token ids, later batches only pad them. A training
batch is run in sub-batches of similar length (`length_groups`), so short queries are not
padded to their documents' length; with `mini_batch_size` each sub-batch is also re-run in the
backward pass instead of keeping its activations (GradCache's memory profile).
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..io import META

POOLINGS = ("mean", "cls", "max")
KIND = "sentence-transformers"
# the cost of one extra forward pass, in padded tokens (measured: ~2 ms per forward of MiniLM on
# a 2-core CPU, the time of about 40 tokens in bf16); splitting a batch pays off past this
FORWARD_COST_TOKENS = 48
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "spiece.model",
                    "sentencepiece.bpe.model", "vocab.json", "merges.txt")


def length_groups(lengths, forward_cost: float = FORWARD_COST_TOKENS, max_size: int | None = None) -> list[np.ndarray]:
    """Split a batch into runs of similar length that cost the fewest padded tokens: int64
    index arrays into `lengths` (int [B], tokens per text), shortest first, each position once.

    A run of n texts (sorted by length) whose longest has L tokens costs n * L + `forward_cost`;
    the cheapest cut is found exactly by dynamic programming over the sorted lengths (O(B^2),
    a few ms for B = 1024). Runs are then cut into pieces of at most `max_size` texts.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    order, n = np.argsort(lengths, kind="stable"), len(lengths)
    sorted_len, starts = lengths[order].astype(np.float64), np.arange(n, dtype=np.float64)
    best, cut = np.zeros(n + 1), np.zeros(n + 1, dtype=np.int64)
    for j in range(1, n + 1):  # best[j]: the cheapest split of the j shortest texts
        cost = best[:j] + (j - starts[:j]) * sorted_len[j - 1] + forward_cost
        cut[j] = int(np.argmin(cost))
        best[j] = cost[cut[j]]
    bounds, j = [], n
    while j > 0:
        bounds.append((cut[j], j))
        j = cut[j]
    groups = [order[a:b] for a, b in reversed(bounds)]
    return [g[i:i + max_size] for g in groups for i in range(0, len(g), max_size)] if max_size else groups


def is_sentence_transformer(obj: Any) -> bool:
    """True when `obj` is a `sentence_transformers.SentenceTransformer` (without importing the library)."""
    import sys

    module = sys.modules.get("sentence_transformers")
    return module is not None and isinstance(obj, module.SentenceTransformer)


def _looks_like_path(name: str) -> bool:
    """A string that can only be a local path (a hub id is 'name' or 'org/name')."""
    return (name.startswith(("/", ".", "~")) or "\\" in name or name.count("/") > 1
            or Path(name).suffix in (".json", ".bin", ".safetensors"))


def load_sentence_transformer(name_or_path: str | os.PathLike, *, pooling: str | None = None,
                              normalize: bool | None = None, device: str = "cpu"):
    """A `SentenceTransformer` from a local folder or a Hugging Face model id.

    A folder in the sentence-transformers layout (with `modules.json`) keeps its pipeline; a
    plain Hugging Face model folder gets a Transformer + Pooling(`pooling`, default "mean")
    (+ Normalize when `normalize`) pipeline.

    Args:
        name_or_path: a folder, or a model id on the Hugging Face hub (needs network access).
        pooling: "mean", "cls" or "max" to replace the folder's pooling; None keeps it.
        normalize: True / False adds / removes L2 normalisation of the output; None keeps it.
        device: where to load the weights.

    Raises:
        ValueError: the folder does not exist, has no tokenizer or no model config, the id
            cannot be loaded, or `pooling` is unknown. Each message names the `model` argument.
    """
    if pooling is not None and pooling not in POOLINGS:
        raise ValueError(f"pooling: expected one of {POOLINGS} or None, got {pooling!r}")
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules.normalize import Normalize
    from sentence_transformers.base.modules.transformer import Transformer
    from sentence_transformers.sentence_transformer.modules.pooling import Pooling

    name = str(name_or_path)
    path = Path(name).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ValueError(f"model: {name!r} is a file; expected a model folder (config.json and tokenizer "
                             "files) or a Hugging Face model id")
        files = {p.name for p in path.iterdir()}
        if not files & set(_TOKENIZER_FILES):
            raise ValueError(f"model: the folder {name!r} has no tokenizer (none of {list(_TOKENIZER_FILES)}); "
                             "a text model needs its tokenizer next to the weights")
        if "config.json" not in files and "modules.json" not in files:
            raise ValueError(f"model: the folder {name!r} has no config.json; expected a Hugging Face model folder")
        name = str(path)
    elif isinstance(name_or_path, os.PathLike) or _looks_like_path(name):
        raise ValueError(f"model: the folder {name!r} does not exist; expected a local model folder or a "
                         "Hugging Face model id such as 'sentence-transformers/all-MiniLM-L6-v2'")
    try:
        if path.is_dir() and not (path / "modules.json").exists():
            transformer = Transformer(name)
            modules = [transformer, Pooling(transformer.get_embedding_dimension(), pooling_mode=pooling or "mean")]
            st = SentenceTransformer(modules=modules + ([Normalize()] if normalize else []), device=device)
        else:
            st = SentenceTransformer(name, device=device)
    except (OSError, ValueError, EnvironmentError) as err:
        raise ValueError(f"model: {name!r} could not be loaded as a local folder or a Hugging Face model id "
                         f"({type(err).__name__}: {err})") from err
    _set_pooling(st, pooling, normalize)
    return st


def _set_pooling(st, pooling: str | None, normalize: bool | None) -> None:
    """Replace the pipeline's pooling mode and add / drop its Normalize module, in place."""
    from sentence_transformers.base.modules.normalize import Normalize
    from sentence_transformers.sentence_transformer.modules.pooling import Pooling

    names = list(st._modules)
    if pooling is not None:
        pos = next((i for i, n in enumerate(names) if isinstance(st._modules[n], Pooling)), None)
        if pos is None:
            raise ValueError("pooling: this SentenceTransformer has no Pooling module to change")
        old = st._modules[names[pos]]
        if old.pooling_mode != pooling:
            st._modules[names[pos]] = Pooling(old.get_embedding_dimension(), pooling_mode=pooling)
    has_norm = [n for n in names if isinstance(st._modules[n], Normalize)]
    if normalize is True and not has_norm:
        st.append(Normalize())
    elif normalize is False:
        for n in has_norm:
            del st._modules[n]


class TextEncoder(nn.Module):
    """A sentence-embedding model for `finetuner.fit`: strings in, float tensor [B, D] out.

    Wraps a `sentence_transformers.SentenceTransformer` (Transformer -> Pooling -> optional
    Normalize; Reimers & Gurevych, 2019, Sentence-BERT), which it trains in place, and adds
    what training speed needs: each training text is tokenised once (`cache_texts`), batches
    are only padded to their longest text, and no-grad calls (evaluation, `encode`) sort texts
    by length so sub-batches carry little padding, and run in float32 even under bf16
    autocast, so scores before and after training are computed alike.

    Args:
        sentence_transformer: the pipeline; its first module must have a tokenizer.
        max_length: truncate texts to this many tokens (special tokens included); default the
            pipeline's `max_seq_length`. Longer texts are truncated with one warning.
        inference_batch_size: texts per forward pass in no-grad calls.
        split_by_length: run a training batch (a list of strings, gradients on) in sub-batches
            of similar length (`length_groups`), each padded to its own longest text; the
            embeddings come back in the batch's order. With the masked mean / CLS / max
            pooling, each text's embedding and the gradient are those of one padded batch up
            to float rounding. False: one forward over the whole batch.
        mini_batch_size: at most this many texts per forward in training, each forward re-run
            in the backward pass (`torch.utils.checkpoint`, dropout RNG preserved) instead of
            storing its activations: GradCache's memory profile (Gao et al., 2021), peak memory
            set by the chunk, not the batch, for about a third more compute. None: off.

    Inputs:
        a list of N strings, or a dict / `BatchEncoding` of tokenizer outputs (input_ids,
        attention_mask, ... as int64 tensors [N, L]).

    Returns:
        float tensor [N, D] on the model's device.

    Raises:
        TypeError: a non-string item, or a pipeline without a tokenizer.
    """

    def __init__(self, sentence_transformer, max_length: int | None = None, inference_batch_size: int = 64,
                 *, split_by_length: bool = True, mini_batch_size: int | None = None) -> None:
        super().__init__()
        first = sentence_transformer[0]
        tokenizer = getattr(first, "tokenizer", None)
        if tokenizer is None:
            raise TypeError("model: the SentenceTransformer's first module has no tokenizer; expected a text model")
        self.sentence_transformer = sentence_transformer
        self.tokenizer = tokenizer
        if max_length is not None and (isinstance(max_length, bool) or not isinstance(max_length, (int, np.integer))
                                       or max_length < 2):
            raise ValueError(f"max_length: expected an int >= 2 (tokens, special tokens included), got {max_length!r}")
        limit = getattr(first.auto_model.config, "max_position_embeddings", None) if hasattr(first, "auto_model") else None
        length = max_length if max_length is not None else (first.max_seq_length or 512)
        if max_length is None and limit and length > limit:  # tokenizers without a model_max_length report 1e30
            length = limit
        self.max_length = int(length)
        first.max_seq_length = self.max_length  # so SentenceTransformer(path) truncates alike after save
        self.inference_batch_size = int(inference_batch_size)
        self.split_by_length = bool(split_by_length)
        self.mini_batch_size = None
        self.set_mini_batch_size(mini_batch_size)
        self._ids: dict[str, np.ndarray] = {}
        self._warned = False
        self._pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self._type_ids = "token_type_ids" in getattr(tokenizer, "model_input_names", ())
        self.token_counts = np.zeros(2, dtype=np.int64)  # (real, padded) tokens seen in training

    def set_mini_batch_size(self, mini_batch_size: int | None) -> None:
        """Turn the checkpointed chunked forward on (an int >= 1: texts per chunk) or off (None)."""
        if mini_batch_size is not None and (isinstance(mini_batch_size, bool) or not isinstance(
                mini_batch_size, (int, np.integer)) or mini_batch_size < 1):
            raise ValueError(f"mini_batch_size: expected an int >= 1 (texts per forward chunk) or None, "
                             f"got {mini_batch_size!r}")
        self.mini_batch_size = None if mini_batch_size is None else int(mini_batch_size)

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, *, pooling: str | None = None,
                        normalize: bool | None = None, max_length: int | None = None, **options) -> "TextEncoder":
        """Load a model folder or hub id (see `load_sentence_transformer`) as a `TextEncoder`;
        `options` (inference_batch_size, split_by_length, mini_batch_size) go to the constructor."""
        return cls(load_sentence_transformer(name_or_path, pooling=pooling, normalize=normalize), max_length, **options)

    @classmethod
    def from_sentence_transformer(cls, model, *, pooling: str | None = None, normalize: bool | None = None,
                                  max_length: int | None = None) -> "TextEncoder":
        """Wrap a `SentenceTransformer` (trained in place: the same modules are used)."""
        _set_pooling(model, pooling, normalize)
        return cls(model, max_length)

    # ---- tokenisation -------------------------------------------------------------------
    def tokenize_ids(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Token ids of each text (special tokens added, truncated to `max_length`), int64 arrays.

        Warns once per model when some texts are longer than `max_length`.
        """
        texts = list(texts)
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise TypeError(f"inputs: item {i} is a {type(t).__name__}; a text model embeds strings")
        if not texts:
            return []
        enc = self.tokenizer(texts, truncation=True, max_length=self.max_length, return_attention_mask=False,
                             return_token_type_ids=False)
        ids = [np.asarray(x, dtype=np.int64) for x in enc["input_ids"]]
        encodings = getattr(enc, "encodings", None)
        if encodings:  # fast tokenizers say which texts lost tokens
            truncated = sum(1 for e in encodings if e.overflowing)
        else:
            full = self.tokenizer(texts, truncation=False, return_attention_mask=False, return_token_type_ids=False)
            truncated = sum(1 for x in full["input_ids"] if len(x) > self.max_length)
        if truncated and not self._warned:
            self._warned = True
            warnings.warn(f"{truncated} of {len(texts)} texts are longer than max_length={self.max_length} tokens "
                          "and were truncated (shown once; set max_length to change the limit)", stacklevel=3)
        return ids

    def cache_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Tokenise the texts not yet cached (once) and return every text's token count, int64 [N]."""
        texts = list(texts)
        missing = list(dict.fromkeys(t for t in texts if t not in self._ids))
        for t, ids in zip(missing, self.tokenize_ids(missing)):
            self._ids[t] = ids
        return np.fromiter((len(self._ids[t]) for t in texts), dtype=np.int64, count=len(texts))

    def clear_cache(self) -> None:
        """Forget the cached token ids (they are rebuilt on demand)."""
        self._ids.clear()

    def _ids_of(self, texts: list[str]) -> list[np.ndarray]:
        cached = [self._ids.get(t) if isinstance(t, str) else None for t in texts]
        missing = [i for i, x in enumerate(cached) if x is None]
        if missing:
            for i, ids in zip(missing, self.tokenize_ids([texts[i] for i in missing])):
                cached[i] = ids
        return cached

    def pad(self, ids: list[np.ndarray]) -> dict:
        """Token id arrays -> padded int64 tensors {input_ids, attention_mask[, token_type_ids]} [N, L],
        L the longest of them, padded on the tokenizer's padding side."""
        lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
        width = int(lengths.max())
        input_ids = np.full((len(ids), width), self._pad_id, dtype=np.int64)
        mask = np.zeros((len(ids), width), dtype=np.int64)
        left = getattr(self.tokenizer, "padding_side", "right") == "left"
        for i, x in enumerate(ids):
            if left:
                input_ids[i, width - len(x):], mask[i, width - len(x):] = x, 1
            else:
                input_ids[i, : len(x)], mask[i, : len(x)] = x, 1
        out = {"input_ids": torch.from_numpy(input_ids), "attention_mask": torch.from_numpy(mask)}
        if self._type_ids:
            out["token_type_ids"] = torch.zeros_like(out["input_ids"])
        return out

    # ---- forward ------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def embedding_dim(self) -> int:
        """D, the size of an embedding."""
        return int(self.sentence_transformer.get_embedding_dimension())

    def _run(self, features: Mapping) -> torch.Tensor:
        device = self.device
        features = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in features.items()}
        return self.sentence_transformer(features)["sentence_embedding"]

    def forward(self, inputs: Sequence[str] | Mapping) -> torch.Tensor:
        if isinstance(inputs, Mapping):
            return self._run(inputs)
        if isinstance(inputs, str):
            raise TypeError("inputs: expected a list of strings, got a single str; wrap it in a list")
        texts = list(inputs)
        if not torch.is_grad_enabled():
            return self._embed_sorted(texts)
        ids = self._ids_of(texts)
        lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
        if self.split_by_length:
            groups = length_groups(lengths, max_size=self.mini_batch_size)
        else:
            step = self.mini_batch_size or len(ids)
            groups = [np.arange(i, min(i + step, len(ids))) for i in range(0, len(ids), step)]
        parts = []
        for idx in groups:
            features = self.pad([ids[i] for i in idx])
            mask = features["attention_mask"]
            self.token_counts += (int(mask.sum()), mask.numel())
            if self.mini_batch_size is not None:
                parts.append(checkpoint(self._run, features, use_reentrant=False, preserve_rng_state=True))
            else:
                parts.append(self._run(features))
        if len(parts) == 1 and np.array_equal(groups[0], np.arange(len(ids))):
            return parts[0]
        order = torch.from_numpy(np.concatenate(groups)).to(parts[0].device)
        inverse = torch.empty_like(order)
        inverse[order] = torch.arange(len(order), device=order.device)
        return torch.cat(parts)[inverse]

    @torch.no_grad()
    def _embed_sorted(self, texts: list[str], batch_size: int | None = None, precision: str = "fp32") -> torch.Tensor:
        ids = self._ids_of(texts)
        device = self.device
        step = int(batch_size or self.inference_batch_size)
        order = np.argsort([len(x) for x in ids], kind="stable")
        out = torch.empty(len(texts), self.embedding_dim, device=device)
        # float32 whatever autocast the caller runs under (evaluation before and after training
        # agree), unless bf16 / fp16 is asked for
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
        with torch.autocast(device_type=device.type, enabled=dtype is not None, dtype=dtype):
            for start in range(0, len(texts), step):
                idx = order[start:start + step]
                out[torch.from_numpy(idx).to(device)] = self._run(self.pad([ids[i] for i in idx])).float()
        return out

    def encode(self, texts: Sequence[str], batch_size: int | None = None, precision: str = "fp32") -> np.ndarray:
        """Embeddings of `texts` (eval mode, no grad): float32 numpy array [N, D], computed in
        float32, or under "bf16" / "fp16" autocast when `precision` says so."""
        was_training = self.training
        self.eval()
        try:
            return self._embed_sorted(list(texts), batch_size, precision).cpu().numpy()
        finally:
            self.train(was_training)

    # ---- saving -------------------------------------------------------------------------
    def _finetuner_save(self, path: str | os.PathLike) -> None:
        """Write the sentence-transformers layout into the folder `path` (called by `finetuner.save`,
        which makes the save atomic), plus `finetuner.json` so `finetuner.load` knows the kind."""
        self.sentence_transformer.save(str(path))
        meta = {"format_version": 1, "framework": "torch", "kind": KIND,
                "class": f"{type(self).__module__}.{type(self).__qualname__}", "max_length": self.max_length}
        (Path(path) / META).write_text(json.dumps(meta, indent=2))


def load_saved(path: Path, meta: dict, model: Any, map_location: str) -> TextEncoder:
    """`finetuner.load` for folders saved by `TextEncoder` (kind "sentence-transformers")."""
    from sentence_transformers import SentenceTransformer

    loaded = TextEncoder(SentenceTransformer(str(path), device=map_location), meta.get("max_length"))
    if model is not None:
        model.load_state_dict(loaded.state_dict())
        return model.eval()
    return loaded.eval()

