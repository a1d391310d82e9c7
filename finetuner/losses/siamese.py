"""Contrastive (siamese) loss over the pairs of a batch."""

from __future__ import annotations

import torch

from .base import MetricLoss


class SiameseLoss(MetricLoss):
    """Contrastive loss over the pairs a miner finds in a batch.

    l(i, j) = s * d(i, j) + (1 - s) * max(0, margin - d(i, j)), averaged over the pairs
    (Hadsell, Chopra & LeCun, 2006, Dimensionality Reduction by Learning an Invariant Mapping),
    where s is 1 for a positive pair, 0 for a negative one and the score in between for a
    soft pair (pair format with scores in [0, 1]).

    Args:
        distance: "cosine" (1 - cosine similarity, in [0, 2]), "euclidean" or "sqeuclidean".
        margin: distance beyond which negative pairs cost nothing, in units of `distance`.
        miner: a name ("all", "hard", "semihard", "easy") or an `EasyHardMiner`; default: all pairs.

    Inputs:
        embeddings: float tensor [B, D].
        labels: int tensor [B] (class ids) or float tensor [B, 2] (group, relevance).

    Raises:
        ValueError: embeddings not 2-D, a batch-size mismatch, or a batch with no pair.
    """

    def __init__(self, distance: str = "cosine", margin: float = 1.0, miner=None) -> None:
        super().__init__(distance, miner)
        self.margin = float(margin)

    def compute(self, dist, relation, embeddings):
        i, j, s = self.miner.pairs(dist, relation)
        if i.numel() == 0 or not bool((s > 0).any()):
            raise self._no_valid("positive pair", relation)
        d = dist[i, j]
        return (s * d + (1 - s) * torch.clamp(self.margin - d, min=0)).mean()
