"""Query -> corpus retrieval evaluation (the BEIR / MTEB setting): every query ranks the whole
corpus by distance, and the ranking is scored against graded relevance judgments (qrels) with
trec_eval's definitions (`finetuner.evaluation.metrics`).

Memory stays bounded: the corpus is searched in blocks (`chunked_topk`), and the qrels are
looked up by binary search over sorted (query, document) keys, never as a [Q, N] matrix.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping
from typing import Any, Sequence

import numpy as np
import torch

from finetuner.data.retrieval import RetrievalData
from finetuner.evaluation.metrics import check_ks, ranking_metrics
from finetuner.evaluation.topk import _as_matrix, _check_options, chunked_topk

logger = logging.getLogger(__name__)


def _qrel_arrays(qrels: Any, num_queries: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(query position, corpus position, grade) arrays from `RetrievalData` or a list of dicts."""
    if isinstance(qrels, RetrievalData):
        if len(qrels.queries) != num_queries:
            raise ValueError(f"query_embeddings: expected one row per query of the RetrievalData "
                             f"({len(qrels.queries)}), got {num_queries}")
        return qrels.qrel_arrays()
    if not isinstance(qrels, Sequence) or len(qrels) != num_queries:
        raise ValueError(f"qrels: expected RetrievalData or a list of {num_queries} dicts {{corpus position: grade}} "
                         f"(one per query), got {type(qrels).__name__}"
                         + (f" of length {len(qrels)}" if hasattr(qrels, "__len__") else ""))
    rows = []
    for i, docs in enumerate(qrels):
        if not isinstance(docs, Mapping):
            raise ValueError(f"qrels: entry {i} is a {type(docs).__name__}; expected a dict {{corpus position: grade}}")
        rows += [(i, int(d), float(g)) for d, g in docs.items()]
    if not rows:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
    q, d, g = zip(*rows)
    return np.asarray(q, np.int64), np.asarray(d, np.int64), np.asarray(g, np.float32)


def evaluate_retrieval(
    query_embeddings,
    corpus_embeddings,
    qrels,
    *,
    ks: Sequence[int] = (10,),
    distance: str = "cosine",
    relevance_level: float = 1.0,
    query_chunk: int = 1024,
    index_chunk: int = 16384,
) -> dict:
    """trec_eval metrics of query -> corpus retrieval: precision, recall, MAP, nDCG (graded
    gains), MRR and hit rate at each k, averaged over every query.

    Args:
        query_embeddings: float tensor or array [Q, D], in the order of the queries.
        corpus_embeddings: float tensor or array [N, D], in the order of the corpus.
        qrels: `RetrievalData` (embeddings in its `query_ids` / `corpus_ids` order), or a list
            of Q dicts {corpus position: grade}.
        ks: cut-offs, ints >= 1.
        distance: "cosine", "euclidean" or "sqeuclidean".
        relevance_level: the grade from which a document counts as relevant in the binary
            metrics (trec_eval's `-l`, default 1); nDCG's gain is the grade itself (> 0).
        query_chunk, index_chunk: search block sizes; peak extra memory about
            query_chunk * index_chunk * 4 bytes.

    Returns:
        dict: "precision@k", "recall@k", "mAP@k", "nDCG@k", "MRR@k", "hit@k" (python floats)
        for each k; "num_queries" (Q, every query is averaged) and "queries_without_relevant"
        (how many have no relevant document and score 0, as in trec_eval).

    Raises:
        ValueError: shapes that do not match, a corpus position outside [0, N), bad `ks`,
            `distance` or chunk sizes, an empty query set or corpus.

    Warns:
        UserWarning: some queries have no relevant document (they are counted as 0).
    """
    ks = check_ks(ks)
    _check_options(distance, query_chunk, index_chunk)
    queries = _as_matrix(query_embeddings, "query_embeddings")
    corpus = _as_matrix(corpus_embeddings, "corpus_embeddings")
    if queries.shape[0] == 0 or corpus.shape[0] == 0:
        raise ValueError(f"expected at least one query and one document, got {queries.shape[0]} queries and "
                         f"{corpus.shape[0]} documents")
    if queries.shape[1] != corpus.shape[1]:
        raise ValueError(f"corpus_embeddings: expected dim {queries.shape[1]} like the queries, got {corpus.shape[1]}")
    q_pos, d_pos, grade = _qrel_arrays(qrels, queries.shape[0])
    if len(d_pos) and (d_pos.min() < 0 or d_pos.max() >= corpus.shape[0]):
        raise ValueError(f"qrels: a corpus position outside [0, {corpus.shape[0]}): {int(d_pos.min())} .. "
                         f"{int(d_pos.max())}")
    n_q, n_c, top = queries.shape[0], corpus.shape[0], max(ks)
    num_relevant = np.bincount(q_pos[grade >= relevance_level], minlength=n_q)
    without = int((num_relevant == 0).sum())
    if without:
        warnings.warn(f"eval_data: {without} of {n_q} queries have no relevant document in the qrels; they are "
                      "counted as 0 (as trec_eval does)", stacklevel=2)

    # the ideal gains of each query: its positive grades, best first, top `top` of them
    ideal = np.zeros((n_q, top), np.float32)
    pos = grade > 0
    order = np.lexsort((-grade[pos], q_pos[pos]))
    qs, gs = q_pos[pos][order], grade[pos][order]
    if len(qs):
        starts = np.r_[0, np.flatnonzero(qs[1:] != qs[:-1]) + 1]
        rank = np.arange(len(qs)) - np.repeat(starts, np.diff(np.r_[starts, len(qs)]))
        keep = rank < top
        ideal[qs[keep], rank[keep]] = gs[keep]

    _, idx = chunked_topk(queries, corpus, top, distance=distance, query_chunk=query_chunk, index_chunk=index_chunk)
    idx = idx.numpy()
    # the grade of each retrieved (query, document): binary search in the sorted qrels keys
    keys = q_pos * n_c + d_pos
    key_order = np.argsort(keys, kind="stable")
    sorted_keys, sorted_grades = keys[key_order], grade[key_order]
    wanted = (np.arange(n_q)[:, None] * n_c + idx).ravel()
    at = np.searchsorted(sorted_keys, wanted).clip(max=max(len(sorted_keys) - 1, 0))
    found = (sorted_keys[at] == wanted) if len(sorted_keys) else np.zeros(wanted.shape, bool)
    gains = np.where(found, sorted_grades[at] if len(sorted_keys) else 0.0, 0.0).reshape(idx.shape)
    if gains.shape[1] < top:  # a corpus smaller than k: the missing ranks are misses
        gains = np.concatenate([gains, np.zeros((n_q, top - gains.shape[1]))], 1)
    gains_t = torch.from_numpy(gains.astype(np.float32))
    metrics = ranking_metrics(gains_t >= relevance_level, torch.from_numpy(num_relevant), ks,
                              gains=gains_t, ideal_gains=torch.from_numpy(ideal))
    metrics["num_queries"] = n_q
    metrics["queries_without_relevant"] = without
    return metrics
