"""Ranking metrics of ranked result lists, with trec_eval's definitions.

For one query: rel_i = 1 when the result at rank i (1-based) is relevant, g_i its graded gain
(the relevance grade of a judged result, 0 for a non-relevant or unjudged one), R the number of
relevant items the query has in the whole index, hits@k = sum_{i<=k} rel_i. As trec_eval
(9.0.7) defines them (measure names in brackets), and as BEIR, MTEB and ranx report them:

- precision@k = hits@k / k                                   [P_k]
- recall@k    = hits@k / R                                   [recall_k]
- MAP@k       = sum_{i<=k} precision@i * rel_i / R            [map_cut_k] ("mAP@k" here)
- nDCG@k      = DCG@k / IDCG@k, DCG@k = sum_{i<=k} g_i / log2(i + 1), IDCG@k the DCG of the
  query's judged gains sorted best first                     [ndcg_cut_k] (Järvelin &
  Kekäläinen, "Cumulated gain-based evaluation of IR techniques", ACM TOIS 2002)
- MRR@k       = 1 / rank of the first relevant result within the top k, else 0
                                                             [recip_rank of the top k]
  (Voorhees, "The TREC-8 Question Answering Track Report", 1999)
- hit@k       = 1 if hits@k > 0 else 0                       [success_k]

A query with no relevant item (R = 0) scores 0 on every metric, as in trec_eval. Manning,
Raghavan & Schütze, *Introduction to Information Retrieval* (2008), ch. 8.4, give the same
precision, recall and AP. Some libraries (sentence-transformers' evaluators, ml_metrics.apk)
divide AP@k by min(k, R) instead of R; that variant is not computed here.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

METRICS = ("precision", "recall", "mAP", "nDCG", "MRR", "hit")


def check_ks(ks: Sequence[int]) -> tuple[int, ...]:
    """`ks` as a non-empty tuple of ints >= 1, else ValueError."""
    ks = (ks,) if isinstance(ks, (int, np.integer)) else tuple(ks)
    if not ks or not all(isinstance(k, (int, np.integer)) and k >= 1 for k in ks):
        raise ValueError(f"ks: expected a non-empty sequence of ints >= 1, got {ks!r}")
    return tuple(int(k) for k in ks)


def _tensor(x) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).detach().cpu()


def ranking_metrics(
    relevant,
    num_relevant,
    ks: Sequence[int] = (10,),
    *,
    gains=None,
    ideal_gains=None,
    per_query: bool = False,
) -> dict:
    """precision, recall, MAP, nDCG, MRR and hit rate at each cut-off in `ks` (trec_eval's
    definitions: see the module docstring).

    Args:
        relevant: bool or 0/1 tensor (or array) [Q, K], each row one query's results ranked
            best first; K >= max(ks) (pad with 0 / False when fewer were retrieved).
        num_relevant: int tensor (or array) [Q] >= 0: R, the relevant items each query has in
            the whole index. A query with R = 0 scores 0.
        ks: cut-offs, ints >= 1.
        gains: float [Q, K] graded gains of the ranked results for nDCG (e.g. qrels grades
            0, 1, 2); default `relevant` (binary gains).
        ideal_gains: float [Q, M] each query's judged gains, sorted best first, zero-padded;
            IDCG@k is their DCG over the first k. Default: R gains of 1.
        per_query: return float32 tensors [Q] per metric instead of the mean over queries.

    Returns:
        dict with keys "precision@k", "recall@k", "mAP@k", "nDCG@k", "MRR@k", "hit@k" for each
        k in `ks`: python floats (means over the Q queries), or float32 tensors [Q].

    Raises:
        ValueError: `relevant` is not 2-D or has fewer than max(ks) columns; `num_relevant`
            is not [Q] or has a value < 0; `gains` / `ideal_gains` of the wrong shape; bad `ks`.
    """
    ks = check_ks(ks)
    rel, n_rel = _tensor(relevant), _tensor(num_relevant)
    if rel.dim() != 2 or rel.shape[1] < max(ks):
        raise ValueError(
            f"relevant: expected a 2-D tensor [Q, K] with K >= max(ks) = {max(ks)}, got shape {tuple(rel.shape)}"
        )
    q, width = rel.shape
    if n_rel.shape != (q,):
        raise ValueError(f"num_relevant: expected shape ({q},), got {tuple(n_rel.shape)}")
    if (n_rel < 0).any():
        raise ValueError(f"num_relevant: expected counts >= 0, got {int((n_rel < 0).sum())} negative")
    rel, n_rel = rel.float(), n_rel.float()
    g = rel if gains is None else _tensor(gains).float().clamp_min(0.0)
    if g.shape != rel.shape:
        raise ValueError(f"gains: expected shape {tuple(rel.shape)} (one gain per ranked result), got {tuple(g.shape)}")
    ranks = torch.arange(1, max(width, max(ks)) + 1, dtype=torch.float32)
    discounts = 1.0 / torch.log2(ranks + 1.0)
    if ideal_gains is None:
        ideal = (ranks[None, : max(ks)] <= n_rel[:, None]).float()
    else:
        ideal = _tensor(ideal_gains).float().clamp_min(0.0)
        if ideal.dim() != 2 or ideal.shape[0] != q:
            raise ValueError(f"ideal_gains: expected a 2-D tensor [{q}, M], got shape {tuple(ideal.shape)}")
        if ideal.shape[1] < max(ks):
            ideal = torch.cat([ideal, ideal.new_zeros(q, max(ks) - ideal.shape[1])], 1)
    precision_at_i = torch.cumsum(rel, 1) / ranks[:width]  # P@i for every i
    safe_r = n_rel.clamp_min(1.0)

    out = {}
    for k in ks:
        r = rel[:, :k]
        hits = r.sum(1)
        idcg = (ideal[:, :k] * discounts[:k]).sum(1)
        dcg = (g[:, :k] * discounts[:k]).sum(1)
        values = {
            "precision": hits / k,
            "recall": torch.where(n_rel > 0, hits / safe_r, torch.zeros_like(hits)),
            "mAP": torch.where(n_rel > 0, (precision_at_i[:, :k] * r).sum(1) / safe_r, torch.zeros_like(hits)),
            "nDCG": torch.where(idcg > 0, dcg / idcg.clamp_min(1e-12), torch.zeros_like(dcg)),
            # 1/i decreases with i, so the largest rel_i / i is 1 / (rank of the first hit)
            "MRR": (r / ranks[:k]).amax(1),
            "hit": (hits > 0).float(),
        }
        for name in METRICS:
            out[f"{name}@{k}"] = values[name] if per_query else float(values[name].mean())
    return out
