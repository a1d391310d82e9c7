"""Token sequences of language models: rows of examples, padded batches, and packing several
examples into one row without attention or loss crossing between them; the constants the LLM
parts share (the ignored label, the task types).

- Length grouping (similar lengths in a batch, little padding): the one
  `finetuner.data.samplers.LengthGroupedBatchSampler`, over `RowDataset.lengths`.
- Packing (Krell et al. 2021, "Efficient Sequence Packing without Cross-contamination"): rows of
  at most `max_length` tokens are filled first-fit-decreasing; inside a row, `position_ids`
  restart at 0 for each example, from which transformers builds a block-diagonal causal mask
  (no attention across examples), and the first label of each example is masked (no loss across
  examples).
"""

from __future__ import annotations

import numpy as np
import torch

IGNORE_INDEX = -100  # the label value torch's cross_entropy skips: no loss on that token
CAUSAL, SEQ2SEQ = "CAUSAL_LM", "SEQ_2_SEQ_LM"  # the task types (peft's `TaskType` values)


def pack_rows(lengths: list[int], max_length: int) -> list[list[int]]:
    """Group example indices into rows of total length <= `max_length`, first-fit decreasing.

    Args:
        lengths: token count of each example (each <= max_length).
        max_length: capacity of a row, in tokens.

    Returns:
        A list of rows, each a list of example indices (every example in exactly one row).
    """
    order = np.argsort(-np.asarray(lengths), kind="stable")
    rows: list[list[int]] = []
    room: list[int] = []
    for i in order:
        n = int(lengths[i])
        for r, free in enumerate(room):
            if n <= free:
                rows[r].append(int(i))
                room[r] -= n
                break
        else:
            rows.append([int(i)])
            room.append(max_length - n)
    return rows


class RowDataset(torch.utils.data.Dataset):
    """Rows of examples over a tokenized dataset: item i is the list of (input_ids, labels)
    pairs of row i (one example per row unless packed).

    Args:
        tokenized: a `datasets.Dataset` (or dict of lists) with `input_ids` and `labels`.
        rows: lists of example indices; default one row per example.
    """

    def __init__(self, tokenized, rows: list[list[int]] | None = None) -> None:
        self.input_ids = list(tokenized["input_ids"])
        self.labels = list(tokenized["labels"])
        self.rows = rows if rows is not None else [[i] for i in range(len(self.input_ids))]
        self.lengths = [sum(len(self.input_ids[i]) for i in row) for row in self.rows]

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> list[tuple[list[int], list[int]]]:
        return [(self.input_ids[i], self.labels[i]) for i in self.rows[index]]


class CausalCollator:
    """Rows -> a right-padded causal-LM batch.

    Returns a dict of int64 tensors: `num_tokens` (a scalar: the real, non-padding tokens), and
    [B, T]: `input_ids` (padded with `pad_token_id`), `labels`
    (-100 on padding and on the first token of each example), and either `attention_mask` (one
    example per row; omitted when no row is padded, so attention takes its fast causal path) or
    `position_ids` restarting at 0 for each packed example (and for the padding tail, which
    forms its own block).
    """

    def __init__(self, pad_token_id: int, packed: bool = False) -> None:
        self.pad_token_id, self.packed = pad_token_id, packed

    def __call__(self, rows: list[list[tuple[list[int], list[int]]]]) -> dict:
        width = max(sum(len(ids) for ids, _ in row) for row in rows)
        input_ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
        position_ids = torch.zeros((len(rows), width), dtype=torch.long)
        lengths = []
        for r, row in enumerate(rows):
            at = 0
            for ids, lab in row:
                n = len(ids)
                input_ids[r, at:at + n] = torch.as_tensor(ids)
                labels[r, at:at + n] = torch.as_tensor(lab)
                labels[r, at] = IGNORE_INDEX  # never predicted from a previous example
                position_ids[r, at:at + n] = torch.arange(n)
                at += n
            position_ids[r, at:] = torch.arange(width - at)
            lengths.append(at)
        batch = {"input_ids": input_ids, "labels": labels, "num_tokens": torch.tensor(sum(lengths))}
        if self.packed:
            batch["position_ids"] = position_ids
        elif min(lengths) < width:
            batch["attention_mask"] = (torch.arange(width)[None, :] < torch.as_tensor(lengths)[:, None]).long()
        return batch


class Seq2SeqCollator:
    """Rows (one example each) -> `input_ids` and `attention_mask` [B, S] padded with
    `pad_token_id`, `labels` [B, L] padded with -100, and `num_tokens` (scalar: real source +
    target tokens); int64 tensors."""

    def __init__(self, pad_token_id: int) -> None:
        self.pad_token_id = pad_token_id

    def __call__(self, rows) -> dict:
        pairs = [ex for row in rows for ex in row]
        src = max(len(ids) for ids, _ in pairs)
        tgt = max(len(lab) for _, lab in pairs)
        input_ids = torch.full((len(pairs), src), self.pad_token_id, dtype=torch.long)
        attention = torch.zeros((len(pairs), src), dtype=torch.long)
        labels = torch.full((len(pairs), tgt), IGNORE_INDEX, dtype=torch.long)
        for i, (ids, lab) in enumerate(pairs):
            input_ids[i, :len(ids)], attention[i, :len(ids)] = torch.as_tensor(ids), 1
            labels[i, :len(lab)] = torch.as_tensor(lab)
        num = sum(len(ids) + len(lab) for ids, lab in pairs)
        return {"input_ids": input_ids, "attention_mask": attention, "labels": labels, "num_tokens": torch.tensor(num)}
