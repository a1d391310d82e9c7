"""Retrieval evaluation of labeled embeddings: rank the index for every query, score the rankings.

Which items are relevant to a query comes from `finetuner.data.relation.relation_matrix`, the
one rule shared with the losses, so every label format (class, session, pair, triplet) is
evaluated the same way. Memory stays bounded: neither the [Q, N] distances nor the [Q, N]
relation matrix are ever built whole.
"""

from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np
import torch

from finetuner.data.relation import UNKNOWN, relation_matrix, split_labels
from finetuner.evaluation.metrics import check_ks, ranking_metrics
from finetuner.evaluation.topk import _as_matrix, _check_options, chunked_topk


def _as_labels(labels, name: str, n: int) -> torch.Tensor:
    """`labels` as a CPU tensor, int64 [n] (class ids) or [n, 2] (int64 from `pack_labels`, or
    float32); ValueError otherwise."""
    t = torch.as_tensor(np.asarray(labels) if not isinstance(labels, torch.Tensor) else labels).detach().cpu()
    if t.dim() == 1:
        t = t.long()
    elif t.dim() == 2 and t.shape[1] == 2:
        t = t if not t.is_floating_point() else t.float()  # int64: exact ids (data.relation.pack_labels)
    else:
        raise ValueError(
            f"{name}: expected shape [N] (class ids) or [N, 2] (group, relevance), got {tuple(t.shape)}"
        )
    if t.shape[0] != n:
        raise ValueError(f"{name}: expected one label per embedding ({n}), got {t.shape[0]}")
    return t


def _count_relevant(
    query_labels: torch.Tensor,
    index_labels: torch.Tensor,
    *,
    exclude_self: bool,
    min_relevance: float,
    query_chunk: int,
    index_chunk: int,
    top: int = 0,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(int64 [Q], float32 [Q, top] or None): how many index items are relevant to each query
    (itself excluded when `exclude_self`), the recall / AP denominator; and, with `top` > 0 and
    labels that carry relevance, each query's `top` largest gains (relations clamped at 0,
    sorted best first) for the ideal DCG. Class labels give None: their gains are all 1."""
    if query_labels.dim() == 1 and index_labels.dim() == 1:
        # class labels: relevant == same class, so a per-class count is exact and O(Q + N)
        classes, inverse = torch.unique(torch.cat([query_labels, index_labels]), return_inverse=True)
        per_class = torch.bincount(inverse[query_labels.shape[0] :], minlength=classes.shape[0])
        return per_class[inverse[: query_labels.shape[0]]] - int(exclude_self), None
    counts = torch.zeros(query_labels.shape[0], dtype=torch.int64)
    best = torch.zeros(query_labels.shape[0], top)
    for q0 in range(0, query_labels.shape[0], query_chunk):
        ql = query_labels[q0 : q0 + query_chunk]
        best_q = best[q0 : q0 + ql.shape[0]]
        for x0 in range(0, index_labels.shape[0], index_chunk):
            relation = relation_matrix(ql, index_labels[x0 : x0 + index_chunk])
            if exclude_self:
                lo, hi = max(q0, x0), min(q0 + ql.shape[0], x0 + relation.shape[1])
                if lo < hi:
                    rows = torch.arange(lo, hi)
                    relation[rows - q0, rows - x0] = UNKNOWN
            counts[q0 : q0 + ql.shape[0]] += (relation >= min_relevance).sum(1)
            if top:
                cand = torch.cat([best_q, relation.clamp_min(0.0)], 1)
                best_q = torch.topk(cand, top, dim=1).values
        if top:
            best[q0 : q0 + ql.shape[0]] = best_q
    return counts, (best if top else None)


def _paired_relation(labels_a: torch.Tensor, labels_b: torch.Tensor, block: int = 64) -> torch.Tensor:
    """float32 [n, k]: relation of labels_a[i] (an item) with each of labels_b[i, j] (k items).

    Calls `relation_matrix` (the one rule) on blocks of `block` rows and keeps the block
    diagonal, so the cost is n * block * k, not the n * n * k of one big call."""
    n, k = labels_b.shape[:2]
    out = torch.empty(n, k)
    for s in range(0, n, block):
        a, b = labels_a[s : s + block], labels_b[s : s + block]
        m = a.shape[0]
        rel = relation_matrix(a, b.reshape(m * k, *b.shape[2:])).view(m, m, k)
        diag = torch.arange(m)
        out[s : s + m] = rel[diag, diag]
    return out


def evaluate_embeddings(
    query_embeddings,
    query_labels,
    index_embeddings=None,
    index_labels=None,
    *,
    ks: Sequence[int] = (10,),
    distance: str = "cosine",
    query_chunk: int = 1024,
    index_chunk: int = 16384,
    min_relevance: float = 0.5,
) -> dict:
    """Retrieval metrics of embeddings, each item against an index of labeled items: each
    query ranks the index by distance, and the ranking is scored against the labels with
    trec_eval's definitions (`finetuner.evaluation.metrics`). For a query -> corpus set with
    qrels (BEIR layout, `RetrievalData`) use `finetuner.evaluation.evaluate_retrieval`.

    Relevance: an index item's gain for a query is their relation
    (`finetuner.data.relation.relation_matrix`) clamped at 0: 1 for the same class or a
    relevant match of the query's session, a pair's score for pair labels, else 0. nDCG uses
    these graded gains; the binary metrics (precision, recall, MAP, MRR, hit) count an item as
    relevant when its relation is >= `min_relevance` (default 0.5; for class, session and
    triplet labels the relation is 1 or 0, so this is exactly "relation == 1"). UNKNOWN (-1)
    pairs (two irrelevant matches of one session) and negatives (0) are never relevant; they
    stay in the ranking as non-relevant results.

    An item with no relevant item in the index is not a query here (it is not in the
    "qrels") and is left out, with one warning saying how many: e.g. a session's irrelevant
    matches, or a class with a single item.

    Args:
        query_embeddings: float tensor or array [Q, D].
        query_labels: int [Q] (class ids) or float [Q, 2] (group, relevance), tensor or array.
        index_embeddings: float [N, D], or None: the queries are their own index and each
            query is excluded from its own results (and from its relevant count).
        index_labels: labels of the index in the same form; given iff `index_embeddings` is.
        ks: cut-offs k for the metrics, ints >= 1.
        distance: "cosine", "euclidean" or "sqeuclidean" (see `chunked_topk`).
        query_chunk, index_chunk: block sizes; peak extra memory ~ query_chunk * index_chunk * 4 bytes.
        min_relevance: relation threshold for "relevant" in the binary metrics, in (0, 1].

    Returns:
        dict: "precision@k", "recall@k", "mAP@k", "nDCG@k", "MRR@k", "hit@k" (python floats,
        means over the scored queries) for each k, and "num_queries" (int, queries scored).
        When the index holds fewer than k candidates the missing ranks count as misses.

    Raises:
        ValueError: shapes or label counts do not match, only one of index_embeddings /
            index_labels is given, bad `ks` / `distance` / chunk sizes / `min_relevance`, or
            no query has any relevant item (message starts with "eval_data").

    Warns:
        UserWarning: some (not all) items have no relevant item and were left out.
    """
    ks = check_ks(ks)
    _check_options(distance, query_chunk, index_chunk)  # before the (possibly long) counting
    if not 0.0 < min_relevance <= 1.0:
        raise ValueError(f"min_relevance: expected a value in (0, 1], got {min_relevance!r}")
    if (index_embeddings is None) != (index_labels is None):
        raise ValueError(
            "index_embeddings, index_labels: expected both or neither, got only "
            + ("index_labels" if index_embeddings is None else "index_embeddings")
        )
    queries = _as_matrix(query_embeddings, "query_embeddings")
    q_labels = _as_labels(query_labels, "query_labels", queries.shape[0])
    exclude_self = index_embeddings is None
    if exclude_self:
        index, i_labels = queries, q_labels
    else:
        index = _as_matrix(index_embeddings, "index_embeddings")
        i_labels = _as_labels(index_labels, "index_labels", index.shape[0])
    if q_labels.dim() != i_labels.dim():
        # mixed forms: compare both as (group, relevance)
        q_labels, i_labels = (pack_labels(g, r) for g, r in map(split_labels, (q_labels, i_labels)))

    num_relevant, ideal = _count_relevant(
        q_labels, i_labels, exclude_self=exclude_self, min_relevance=min_relevance,
        query_chunk=query_chunk, index_chunk=index_chunk, top=max(ks),
    )
    scored = num_relevant > 0
    num_scored = int(scored.sum())
    if num_scored == 0:
        raise ValueError(
            f"eval_data: no query has a relevant item in the index; expected at least one query "
            f"with another item of its class / a relevant match (e.g. every class has a single "
            f"item), got {queries.shape[0]} queries with none"
        )
    if num_scored < queries.shape[0]:
        warnings.warn(
            f"eval_data: {queries.shape[0] - num_scored} of {queries.shape[0]} queries have no "
            f"relevant item in the index and are skipped",
            stacklevel=2,
        )

    # With exclude_self query i must stay row i of the index, so all queries are searched and
    # the skipped ones dropped afterwards; otherwise only the scored ones are searched.
    if exclude_self:
        _, idx = chunked_topk(queries, index, max(ks), distance=distance, exclude_self=True,
                              query_chunk=query_chunk, index_chunk=index_chunk)
        idx = idx[scored]
    else:
        _, idx = chunked_topk(queries[scored], index, max(ks), distance=distance,
                              query_chunk=query_chunk, index_chunk=index_chunk)
    relation = _paired_relation(q_labels[scored], i_labels[idx])
    if relation.shape[1] < max(ks):
        # fewer candidates than k: the missing ranks are misses
        relation = torch.cat([relation, relation.new_zeros(relation.shape[0], max(ks) - relation.shape[1])], 1)
    metrics = ranking_metrics(relation >= min_relevance, num_relevant[scored], ks, gains=relation.clamp_min(0.0),
                              ideal_gains=None if ideal is None else ideal[scored])
    metrics["num_queries"] = num_scored
    return metrics
