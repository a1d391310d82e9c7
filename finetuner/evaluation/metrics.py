"""Ranking metrics over binary relevance of ranked result lists.

Definitions (rel_i = 1 when the item at rank i, 1-based, is relevant; R = the number of
relevant items the query has in the whole index; hits@k = sum_{i<=k} rel_i):

- precision@k = hits@k / k                    (Manning, Raghavan & Schütze, *Introduction to
  Information Retrieval*, 2008, ch. 8.4)
- recall@k    = hits@k / R                    (same source)
- hit@k       = 1 if hits@k > 0 else 0        (a.k.a. success@k / top-k accuracy)
- MRR@k       = 1 / rank of the first relevant item within the top k, 0 if none
  (Voorhees, "The TREC-8 Question Answering Track Report", 1999)
- AP@k        = sum_{i<=k} precision@i * rel_i / min(k, R); mAP@k = mean over queries
  (IR book ch. 8.4; the min(k, R) normaliser makes a perfect top-k score 1, as in
  ml_metrics.apk / the usual "MAP@k")
- nDCG@k      = DCG@k / IDCG@k with binary gains, DCG@k = sum_{i<=k} rel_i / log2(i + 1) and
  IDCG@k the DCG of min(k, R) relevant items at ranks 1.. (Järvelin & Kekäläinen, "Cumulated
  gain-based evaluation of IR techniques", ACM TOIS 2002; same as sklearn.metrics.ndcg_score
  for binary relevance)
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


def ranking_metrics(
    relevant,
    num_relevant,
    ks: Sequence[int] = (10,),
    *,
    per_query: bool = False,
) -> dict:
    """precision, recall, mAP, nDCG, MRR and hit rate at each cut-off in `ks`.

    See the module docstring for each definition and its source.

    Args:
        relevant: bool or 0/1 float tensor (or array) [Q, K], each row one query's results
            ranked best first; K >= max(ks) (pad with 0 / False when fewer were retrieved).
        num_relevant: int tensor (or array) [Q]: how many relevant items each query has in
            the whole index (the recall denominator), each >= 1: queries without any
            relevant item have no defined recall / AP / nDCG and must be left out by the caller.
        ks: cut-offs, ints >= 1.
        per_query: return float32 tensors [Q] per metric instead of the mean over queries
            (the "mAP@k" entry then holds each query's AP@k).

    Returns:
        dict with keys "precision@k", "recall@k", "mAP@k", "nDCG@k", "MRR@k", "hit@k" for each
        k in `ks`: python floats (means over the Q queries), or float32 tensors [Q] with
        `per_query`.

    Raises:
        ValueError: `relevant` is not 2-D or has fewer than max(ks) columns, `num_relevant`
            is not [Q] or has a value < 1, or `ks` is empty / not ints >= 1.
    """
    ks = check_ks(ks)
    rel = torch.as_tensor(np.asarray(relevant) if not isinstance(relevant, torch.Tensor) else relevant)
    n_rel = torch.as_tensor(np.asarray(num_relevant) if not isinstance(num_relevant, torch.Tensor) else num_relevant)
    if rel.dim() != 2 or rel.shape[1] < max(ks):
        raise ValueError(
            f"relevant: expected a 2-D tensor [Q, K] with K >= max(ks) = {max(ks)}, got shape {tuple(rel.shape)}"
        )
    if n_rel.shape != (rel.shape[0],):
        raise ValueError(f"num_relevant: expected shape ({rel.shape[0]},), got {tuple(n_rel.shape)}")
    if (n_rel < 1).any():
        raise ValueError(
            f"num_relevant: expected every query to have >= 1 relevant item (drop the others), "
            f"got {int((n_rel < 1).sum())} with none"
        )
    rel = rel.detach().cpu().float()
    n_rel = n_rel.detach().cpu().float()

    ranks = torch.arange(1, rel.shape[1] + 1, dtype=torch.float32)
    discounts = 1.0 / torch.log2(ranks + 1.0)
    ideal_dcg = torch.cumsum(discounts, 0)  # ideal_dcg[m - 1] = DCG of m hits at ranks 1..m
    precision_at_i = torch.cumsum(rel, 1) / ranks  # P@i for every i

    out = {}
    for k in ks:
        r = rel[:, :k]
        hits = r.sum(1)
        n_ideal = torch.clamp(n_rel, max=k)
        values = {
            "precision": hits / k,
            "recall": hits / n_rel,
            "mAP": (precision_at_i[:, :k] * r).sum(1) / n_ideal,
            "nDCG": (r * discounts[:k]).sum(1) / ideal_dcg[n_ideal.long() - 1],
            # 1/i decreases with i, so the largest rel_i / i is 1 / (rank of the first hit)
            "MRR": (r / ranks[:k]).amax(1),
            "hit": (hits > 0).float(),
        }
        for name in METRICS:
            out[f"{name}@{k}"] = values[name] if per_query else float(values[name].mean())
    return out
