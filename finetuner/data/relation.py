"""Which items of a batch are related: the one place every label format is turned into
positive / negative pairs.

Every labeled format is stored per item as a *group* and a *relevance* (see
`finetuner.data.formats`):

- class format: group = class id, relevance = 1 for every item;
- session format: group = session id; the query has relevance 1, a relevant match 1, an
  irrelevant match 0;
- pair format (a, b, score): group = pair id; a has relevance 1, b has relevance `score`;
- triplet format: group = triplet id; anchor 1, positive 1, negative 0.

From that one rule gives every pair's relation:

- same group and at least one of the two has relevance 1 -> the other one's relevance
  (1 = positive, 0 = negative, in between = a soft score);
- same group and neither has relevance 1 (two irrelevant matches of one query) -> unknown;
- different groups -> negative (the usual in-batch assumption: different sessions, pairs or
  classes are unrelated).

So losses, miners and metrics never look at formats: they read this matrix.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import torch

UNKNOWN = -1.0


def pack_labels(groups: torch.Tensor, relevance: torch.Tensor) -> torch.Tensor:
    """One label tensor from group ids and relevances, exact for every int64 group id.

    Args:
        groups: int tensor [N] (any int64 value: hashed ids, more than 2^24 sessions).
        relevance: float tensor [N] in [0, 1].

    Returns:
        int64 tensor [N, 2]: column 0 the group id, column 1 the relevance's float32 bit
        pattern (`split_labels` reads it back exactly). One tensor, so a batch of labels is
        sliced, moved and gathered across processes like any other.
    """
    rel = relevance.detach().to(torch.float32).contiguous().view(torch.int32).to(torch.int64)
    return torch.stack([groups.to(torch.int64), rel.to(groups.device)], dim=1)


def split_labels(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Split a label tensor into (group, relevance).

    Args:
        labels: int tensor [N] (class ids); int64 tensor [N, 2] from `pack_labels` /
            `LabeledData.labels` (group id, relevance bits); or a float tensor [N, 2] (group id,
            relevance: exact for group ids below 2^24 only).

    Returns:
        group: int64 tensor [N]; relevance: float32 tensor [N].

    Raises:
        ValueError: `labels` is neither [N] nor [N, 2].
    """
    if labels.dim() == 1:
        return labels.long(), torch.ones(labels.shape[0], dtype=torch.float32, device=labels.device)
    if labels.dim() == 2 and labels.shape[1] == 2:
        if labels.is_floating_point():
            return labels[:, 0].long(), labels[:, 1].float()
        return labels[:, 0].long(), labels[:, 1].to(torch.int32).contiguous().view(torch.float32)
    raise ValueError(
        f"labels: expected a tensor of shape [N] (class ids) or [N, 2] (group, relevance), "
        f"got shape {tuple(labels.shape)}"
    )


def relation_matrix(labels_a: torch.Tensor, labels_b: torch.Tensor | None = None) -> torch.Tensor:
    """Pairwise relation between two sets of labeled items.

    Args:
        labels_a: labels of A items, int [A] or [A, 2] (see `split_labels`).
        labels_b: labels of B items in the same form; default `labels_a`.

    Returns:
        float32 tensor [A, B]: 1 positive, 0 negative, a value in (0, 1) for a soft score,
        `UNKNOWN` (-1) where the labels say nothing. The diagonal is not masked: callers that
        pair a batch with itself exclude i == j themselves.
    """
    ga, ra = split_labels(labels_a)
    gb, rb = split_labels(labels_b if labels_b is not None else labels_a)
    same = ga[:, None] == gb[None, :]
    ra_, rb_ = ra[:, None], rb[None, :]
    a_is_ref, b_is_ref = ra_ >= 1.0, rb_ >= 1.0
    # when one side is a reference (relevance 1), the pair takes the other side's relevance
    within = torch.where(a_is_ref, rb_.expand(-1, rb.shape[0]), ra_.expand(-1, rb.shape[0]))
    within = torch.where(a_is_ref | b_is_ref, within, torch.full_like(within, UNKNOWN))
    return torch.where(same, within, torch.zeros_like(within))


# ---- duplicates are never negatives -------------------------------------------------------
def duplicate_ids(inputs: Any, stable: bool = False) -> torch.Tensor | None:
    """int64 [B]: equal values for identical inputs of a batch, or None when unknown.

    A list of strings compares the strings; tokenizer outputs (a mapping with "input_ids", and
    "attention_mask" when padded) or an int tensor [B, L] compare the token rows (texts
    identical after truncation are identical to the model too); other inputs give None.

    Args:
        inputs: a batch's model inputs.
        stable: False: ids 0, 1, ... in order of first appearance (within this batch only);
            True: a 64-bit BLAKE2b hash of each text / unpadded token row, equal for equal
            inputs in any batch and any process (what a batch gathered across processes
            compares, see `finetuner.engine.distributed.gather_in_batch`).
    """
    if isinstance(inputs, (list, tuple)) and inputs and all(isinstance(t, str) for t in inputs):
        if stable:
            return torch.tensor([_hash(t.encode()) for t in inputs], dtype=torch.int64)
        index: dict[str, int] = {}
        return torch.tensor([index.setdefault(t, len(index)) for t in inputs], dtype=torch.int64)
    mapping = isinstance(inputs, Mapping) or hasattr(inputs, "keys")
    rows = inputs.get("input_ids") if mapping else inputs
    if not (isinstance(rows, torch.Tensor) and rows.dim() == 2 and not rows.is_floating_point()):
        return None
    rows = rows.detach().cpu()
    if not stable:
        return torch.unique(rows, dim=0, return_inverse=True)[1]
    mask = inputs.get("attention_mask") if mapping else None
    mask = mask.detach().cpu().bool() if isinstance(mask, torch.Tensor) else torch.ones_like(rows, dtype=torch.bool)
    values = rows.to(torch.int64).numpy()
    keep = mask.numpy()
    return torch.tensor([_hash(values[i][keep[i]].tobytes()) for i in range(len(values))], dtype=torch.int64)


def _hash(data: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little", signed=True)


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
