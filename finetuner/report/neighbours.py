"""Nearest neighbours of a few eval queries under the model before and after training."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..data.relation import relation_matrix
from ..evaluation.topk import chunked_topk

MIN_RELEVANCE = 0.5  # the threshold `evaluate_embeddings` uses, so marks agree with the metrics


@dataclass
class Neighbours:
    """The k nearest eval items of one query, before and after training.

    Attributes:
        query: index of the query item.
        before / after: int64 [k] indices of its neighbours (nearest first; never the query).
        before_distance / after_distance: float32 [k] their distances.
        before_relevant / after_relevant: bool [k]: whether each neighbour is relevant to the query.
        num_relevant: how many eval items (the query excluded) are relevant to it.
    """

    query: int
    before: np.ndarray
    after: np.ndarray
    before_distance: np.ndarray
    after_distance: np.ndarray
    before_relevant: np.ndarray
    after_relevant: np.ndarray
    num_relevant: int


def _relevant_to(labels: torch.Tensor, q: int) -> torch.Tensor:
    """bool [N]: items relevant to item q (q itself excluded), by the one relation rule."""
    rel = relation_matrix(labels[q : q + 1], labels)[0] >= MIN_RELEVANCE
    rel[q] = False
    return rel


def pick_queries(labels: np.ndarray, num_queries: int = 4, seed: int = 0) -> list[int]:
    """`num_queries` random eval items (fixed by `seed`) that have at least one relevant item,
    from distinct classes / groups while there are enough of them. Random, not the items that
    improved most, so the examples are not cherry-picked.

    Args:
        labels: int [N] class ids or float [N, 2] (group, relevance).

    Returns:
        Indices of the queries (fewer when fewer items qualify).
    """
    t = torch.as_tensor(labels)
    groups = t.long() if t.dim() == 1 else t[:, 0].long()
    order = np.random.default_rng(seed).permutation(len(t))[:2000]  # bounded work on big sets
    has_relevant = {int(q): bool(_relevant_to(t, int(q)).any()) for q in order}
    chosen, seen = [], set()
    for strict in (True, False):  # first one query per group, then fill up from any group
        for q in map(int, order):
            if len(chosen) >= num_queries:
                return chosen
            if has_relevant[q] and q not in chosen and not (strict and int(groups[q]) in seen):
                chosen.append(q)
                seen.add(int(groups[q]))
    return chosen


def nearest_neighbours(embeddings_before: np.ndarray, embeddings_after: np.ndarray, labels: np.ndarray,
                       queries: list[int], k: int = 5, distance: str = "cosine") -> list[Neighbours]:
    """The `k` nearest eval items of each query (the query excluded), before and after.

    Exact search over all N items (`finetuner.evaluation.chunked_topk`), so a neighbour here
    is a neighbour in the retrieval metrics too.

    Args:
        embeddings_before / embeddings_after: float [N, D] (D may differ between the two).
        labels: int [N] or float [N, 2]; relevance follows `finetuner.data.relation`.
        queries: indices of query items.
        k: neighbours per query, >= 1.
        distance: "cosine", "euclidean" or "sqeuclidean".

    Raises:
        ValueError: k < 1, an unknown distance, or arrays of different lengths.
    """
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k: expected an int >= 1, got {k!r}")
    n = len(labels)
    if len(embeddings_before) != n or len(embeddings_after) != n:
        raise ValueError(f"embeddings: expected {n} rows (one per label), got {len(embeddings_before)} before "
                         f"and {len(embeddings_after)} after")
    t = torch.as_tensor(labels)
    q = np.asarray(queries, dtype=np.int64)
    found = {}
    for name, emb in (("before", embeddings_before), ("after", embeddings_after)):
        emb = torch.as_tensor(np.asarray(emb, dtype=np.float32))
        dist, idx = chunked_topk(emb[q], emb, min(k + 1, n), distance=distance)
        found[name] = (dist.numpy(), idx.numpy())
    out = []
    for row, query in enumerate(q):
        relevant = _relevant_to(t, int(query)).numpy()
        parts = {}
        for name, (dist, idx) in found.items():
            keep = idx[row] != query  # drop the query itself (found at distance ~0), keep k
            i, d = idx[row][keep][:k], dist[row][keep][:k]
            parts[name] = (i, d, relevant[i])
        out.append(Neighbours(int(query), parts["before"][0], parts["after"][0], parts["before"][1],
                              parts["after"][1], parts["before"][2], parts["after"][2], int(relevant.sum())))
    return out
