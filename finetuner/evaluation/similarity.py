"""Similarity metrics of scored pairs: how well embedding similarities order human scores."""

from __future__ import annotations

import numpy as np
import torch

from ..data.labeled import LabeledData


def scored_pair_metrics(embeddings: torch.Tensor, data: LabeledData) -> dict:
    """Spearman correlation between the cosine similarity of each pair and its gold score.

    The standard STS evaluation (Cer et al., 2017; Reimers & Gurevych, 2019). Applies to
    pair-format data whose scores vary (e.g. `generate_stsb()`); gives {} for other data.

    Args:
        embeddings: float [N, D], one row per item of `data`.
        data: the evaluated `LabeledData`.

    Returns:
        {"spearman_cosine": float in [-1, 1]} or {}.
    """
    if data.format != "pair" or data.relevance is None:
        return {}
    groups = data.groups
    first = np.flatnonzero(np.r_[True, groups[1:] != groups[:-1]])
    sizes = np.diff(np.r_[first, len(groups)])
    keep = first[sizes == 2]
    scores = data.relevance[keep + 1]
    if len(keep) < 3 or np.unique(scores).size < 2:
        return {}
    from scipy.stats import spearmanr

    a, b = embeddings[torch.from_numpy(keep)], embeddings[torch.from_numpy(keep + 1)]
    cosine = torch.nn.functional.cosine_similarity(a.float(), b.float(), dim=-1).numpy()
    return {"spearman_cosine": float(spearmanr(cosine, scores).statistic)}
