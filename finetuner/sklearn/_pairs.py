"""Pairs from class labels, and the relation matrix that lets the project's losses train on
exactly those pairs (`finetuner.data.relation`: 1 positive, 0 negative, -1 unknown)."""

from __future__ import annotations

import numpy as np
import torch

from ..data.relation import UNKNOWN


def sample_pairs(y: np.ndarray, n_neg: int, rng: np.random.RandomState) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For every item: one positive partner (another item of its class) and `n_neg` negative
    partners (items of other classes), drawn uniformly (the SetFit pair generator, Tunstall et
    al., 2022, vectorised).

    Args:
        y: int array [N] of class indices (at least 2 classes).
        n_neg: negatives per item (>= 0).
        rng: the random stream.

    Returns:
        (i, j, target): int64 [P], int64 [P], float32 [P]; target 1 for a positive pair, 0 for
        a negative one. Items alone in their class get no positive pair.
    """
    y = np.asarray(y)
    n = y.shape[0]
    order = np.argsort(y, kind="stable")
    sorted_y = y[order]
    classes, start, size = np.unique(sorted_y, return_index=True, return_counts=True)
    cls = np.searchsorted(classes, y)                  # class index of each item
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n) - np.repeat(start, size)  # position of each item inside its class
    s_i, n_i = start[cls], size[cls]

    has_pos = n_i >= 2
    anchors = np.flatnonzero(has_pos)
    offset = rng.randint(1, np.maximum(n_i[anchors], 2))   # 1 .. size-1: never the item itself
    pos = order[s_i[anchors] + (rank[anchors] + offset) % n_i[anchors]]

    neg_anchor = np.repeat(np.arange(n), n_neg)
    r = (rng.random_sample(neg_anchor.shape[0]) * (n - n_i[neg_anchor])).astype(np.int64)
    r = r + np.where(r >= s_i[neg_anchor], n_i[neg_anchor], 0)  # skip the anchor's own class block
    neg = order[r]

    i = np.concatenate([anchors, neg_anchor]).astype(np.int64)
    j = np.concatenate([pos, neg]).astype(np.int64)
    target = np.concatenate([np.ones(anchors.size, np.float32), np.zeros(neg_anchor.size, np.float32)])
    return i, j, target


def pair_relation(n: int, i: np.ndarray, j: np.ndarray, target: np.ndarray) -> torch.Tensor:
    """Relation matrix [n, n] that is `target` on the listed pairs (both orders) and unknown
    elsewhere, so a loss's miner uses these pairs and nothing else.

    Args:
        n: number of items. i, j: int arrays [P] of item indices. target: float [P] in [0, 1].

    Returns:
        float32 tensor [n, n].
    """
    rel = np.full((n, n), UNKNOWN, dtype=np.float32)
    rel[i, j] = target
    rel[j, i] = target
    return torch.from_numpy(rel)
