"""CoSENT: a ranking loss for pairs with a similarity score."""

from __future__ import annotations

import torch

from ..data.relation import UNKNOWN, relation_matrix, split_labels
from .base import MetricLoss


class CoSENTLoss(MetricLoss):
    """Ranks the similarities of scored pairs in the order of their scores.

    For every two scored pairs (i, j) and (k, l) of a batch with score(i, j) > score(k, l):
        loss = log(1 + sum exp(scale * (sim(k, l) - sim(i, j))))
    (Su, 2022, "CoSENT: a more efficient sentence vector scheme than Sentence-BERT";
    sentence-transformers' `CoSENTLoss`). Only the order of the scores matters, not their
    values, which is what Spearman correlation rewards. sim = 1 - distance ("cosine": the
    cosine similarity), or -distance for the euclidean distances (`Distance.similarity`).

    Scored pairs are the items of one group whose relation (see `finetuner.data.relation`) is
    known: a pair's two sentences (pair format, score = relevance of the second), a query with
    each of its matches (session format). Items of different groups are not compared: they
    have no score (unlike the in-batch-negative losses, CoSENT uses no negatives it was not given).

    Args:
        scale: multiplies similarities before the exponential (> 0); 20 is the paper's value.
        distance: "cosine" (default), "euclidean" or "sqeuclidean".

    Inputs:
        embeddings: float tensor [B, D]; labels: float tensor [B, 2] (group, relevance in [0, 1]).

    Raises:
        ValueError: scale <= 0; a batch with no scored pair (e.g. class labels, or each group
            split across batches). A batch whose pairs all have the same score gives 0.
    """

    def __init__(self, scale: float = 20.0, distance: str = "cosine") -> None:
        super().__init__(distance, None)
        if scale <= 0:
            raise ValueError(f"scale: expected a positive number, got {scale}")
        self.scale = float(scale)

    def compute(self, dist, relation, embeddings):
        """The CoSENT loss over the scored pairs of the batch: the pairs (i < j) whose relation
        is known (`forward` marks pairs of different groups unknown: they have no score)."""
        n = relation.shape[0]
        upper = torch.ones(n, n, dtype=torch.bool, device=relation.device).triu(1)
        scored = upper & (relation != UNKNOWN)
        i, j = scored.nonzero(as_tuple=True)
        if i.numel() == 0:
            raise ValueError(f"CoSENTLoss: the batch of {n} items holds no scored pair (two items of one "
                             "group with a known relation); CoSENT needs pair or session data with scores")
        sim = self.distance_fn.similarity(dist[i, j]) * self.scale
        score = relation[i, j]
        # diff[p, q] = sim_q - sim_p, kept where pair p should rank above pair q
        diff = sim[None, :] - sim[:, None]
        diff = diff[score[:, None] > score[None, :]]
        return torch.logsumexp(torch.cat([diff.new_zeros(1), diff]), dim=0)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor | None = None,
                relation: torch.Tensor | None = None) -> torch.Tensor:
        """See `MetricLoss.forward`; CoSENT needs the labels (only pairs of one group are scored)."""
        if labels is None:
            raise ValueError("labels: CoSENTLoss compares only the pairs of one group, so it needs the labels")
        labels = labels.to(embeddings.device)
        groups, _ = split_labels(labels)
        if relation is None:
            relation = relation_matrix(labels)
        relation = torch.where(groups[:, None] == groups[None, :], relation.to(embeddings.device),
                               torch.full_like(relation, UNKNOWN, device=embeddings.device))
        return super().forward(embeddings, labels, relation)

    def extra_repr(self) -> str:
        return f"scale={self.scale}, distance={self.distance!r}"
