"""In-batch-negative loss over every item of the batch (InfoNCE in both directions)."""

from __future__ import annotations

import torch

from .base import MetricLoss


class InfoNCELoss(MetricLoss):
    """Softmax cross-entropy of each positive against the anchor's in-batch negatives, with
    every item of the batch an anchor (so a (query, document) pair is scored in both
    directions, and queries are negatives of other queries too).

    For every ordered positive pair (a, p):
        l(a, p) = -log( exp(sim(a, p) / t) / (exp(sim(a, p) / t) + sum_n exp(sim(a, n) / t)) )
    averaged over positive pairs, where n runs over the items whose relation to a is negative
    (van den Oord et al., 2018, CPC / InfoNCE; Henderson et al., 2017, multiple negatives
    ranking). sim = 1 - distance, so with "cosine" it is the cosine similarity. Other positives
    of the anchor and items of unknown relation are never used as its negatives, so several
    positives per anchor are allowed (unlike a plain cross-entropy over the batch). The
    one-direction form of sentence-transformers is `MultipleNegativesRankingLoss`.

    Args:
        temperature: t > 0; smaller sharpens the softmax. 0.05 (scale 20) is the usual choice
            for cosine similarity.
        distance: "cosine" (default), "euclidean" or "sqeuclidean" (then sim = -distance).

    Inputs:
        embeddings: float tensor [B, D]; labels: int [B] or float [B, 2].

    Raises:
        ValueError: temperature <= 0; a batch with no positive pair.
    """

    def __init__(self, temperature: float = 0.05, distance: str = "cosine") -> None:
        super().__init__(distance, None)
        if temperature <= 0:
            raise ValueError(f"temperature: expected a positive number, got {temperature}")
        self.temperature = float(temperature)

    def compute(self, dist, relation, embeddings):
        off_diag = ~torch.eye(dist.shape[0], dtype=torch.bool, device=dist.device)
        pos = (relation >= 1) & off_diag
        neg = (relation == 0) & off_diag
        a, p = pos.nonzero(as_tuple=True)
        if a.numel() == 0:
            raise self._no_valid("positive pair", relation)
        sim = self.distance_fn.similarity(dist) / self.temperature
        neg_logits = sim.masked_fill(~neg, float("-inf"))[a]           # [P, B]
        logits = torch.cat([sim[a, p][:, None], neg_logits], dim=1)    # positive in column 0
        return (torch.logsumexp(logits, dim=1) - logits[:, 0]).mean()
