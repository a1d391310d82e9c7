"""Text rows as model inputs: tokenised once into an unpadded `datasets.Dataset`, then padded per
batch to the batch's longest row (dynamic padding, `DataCollatorWithPadding`)."""

from __future__ import annotations

from typing import Callable

import numpy as np

from ..console import is_verbose
from .text_rows import TextRows


def tokenize_rows(rows: TextRows, targets: np.ndarray, tokenizer, max_length: int | None):
    """A `datasets.Dataset` of token ids (+ token type ids for pairs, attention mask) and
    `labels`, tokenised by `Dataset.map` in batches of 1000 rows, unpadded (its progress bar
    shows only when the run is verbose).

    Args:
        rows: texts or text pairs.
        targets: int64 [N] class ids or float32 [N, C] multi-hot targets (the `labels` column).
        tokenizer: a transformers tokenizer.
        max_length: truncate to this many tokens (None: the tokenizer's maximum).
    """
    import datasets

    columns = {"text": rows.texts, "labels": targets.tolist()}
    if rows.pairs is not None:
        columns["text_pair"] = rows.pairs
    ds = datasets.Dataset.from_dict(columns)

    def tokenize(batch):
        return tokenizer(batch["text"], batch.get("text_pair"), truncation=True, max_length=max_length)

    text_columns = [c for c in ("text", "text_pair") if c in columns]
    hide = not is_verbose() and not datasets.are_progress_bars_disabled()
    if hide:
        datasets.disable_progress_bars()
    try:
        return ds.map(tokenize, batched=True, batch_size=1000, remove_columns=text_columns)
    finally:
        if hide:
            datasets.enable_progress_bars()


def padding_collator(tokenizer) -> Callable[[list], dict]:
    """`DataCollatorWithPadding`: a list of tokenised rows -> a dict of int64 tensors [B, L],
    L the batch's longest row (a plain dict: the engine counts the items of dict batches)."""
    from transformers import DataCollatorWithPadding

    pad = DataCollatorWithPadding(tokenizer)
    return lambda features: dict(pad(features))
