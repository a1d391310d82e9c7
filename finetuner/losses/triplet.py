"""Triplet margin loss over the triplets of a batch."""

from __future__ import annotations

import torch

from .base import MetricLoss


class TripletLoss(MetricLoss):
    """Triplet margin loss over the triplets a miner finds in a batch.

    l(a, p, n) = max(0, d(a, p) - d(a, n) + margin), averaged over the triplets
    (Schroff, Kalenichenko & Philbin, 2015, FaceNet).

    Args:
        distance: "cosine" (1 - cosine similarity, in [0, 2]), "euclidean" or "sqeuclidean".
        margin: required gap between d(a, p) and d(a, n), in units of `distance`.
        miner: a name ("all", "hard", "semihard", "easy") or an `EasyHardMiner`; default:
            every valid triplet.

    Inputs:
        embeddings: float tensor [B, D].
        labels: int tensor [B] (class ids) or float tensor [B, 2] (group, relevance); soft
            scores count as neither positive nor negative here.

    Raises:
        ValueError: embeddings not 2-D, a batch-size mismatch, or a batch with no valid triplet
            (e.g. one class only); the message says how to fix the batch.
    """

    def __init__(self, distance: str = "cosine", margin: float = 1.0, miner=None) -> None:
        super().__init__(distance, miner)
        self.margin = float(margin)

    def compute(self, dist, relation, embeddings):
        a, p, n = self.miner.triplets(dist, relation)
        if a.numel() == 0:
            raise self._no_valid("triplet", relation)
        return torch.clamp(dist[a, p] - dist[a, n] + self.margin, min=0).mean()
