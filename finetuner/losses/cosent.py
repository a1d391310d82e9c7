"""CoSENT: a ranking loss for pairs with a similarity score."""

from __future__ import annotations

import torch

from ..data.relation import UNKNOWN, relation_matrix, split_labels
from .base import MetricLoss
from .distances import pairwise_distance


class CoSENTLoss(MetricLoss):
    """Ranks the similarities of scored pairs in the order of their scores.

    For every two scored pairs (i, j) and (k, l) of a batch with score(i, j) > score(k, l):
        loss = log(1 + sum exp(scale * (sim(k, l) - sim(i, j))))
    (Su, 2022, "CoSENT: a more efficient sentence vector scheme than Sentence-BERT";
    sentence-transformers' `CoSENTLoss`). Only the order of the scores matters, not their
    values, which is what Spearman correlation rewards. sim = 1 - distance ("cosine": the
    cosine similarity), or -distance for the euclidean distances.

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

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if embeddings.dim() != 2:
            raise ValueError(f"embeddings: expected a 2-D tensor [batch, dim] from the model, got shape "
                             f"{tuple(embeddings.shape)}")
        if labels.shape[0] != embeddings.shape[0]:
            raise ValueError(f"the model returned {embeddings.shape[0]} embeddings for a batch of "
                             f"{labels.shape[0]} items: it must return one row per input item")
        labels = labels.to(embeddings.device)
        groups, _ = split_labels(labels)
        relation = relation_matrix(labels)
        n = groups.shape[0]
        upper = torch.ones(n, n, dtype=torch.bool, device=groups.device).triu(1)
        scored = (groups[:, None] == groups[None, :]) & upper & (relation != UNKNOWN)
        i, j = scored.nonzero(as_tuple=True)
        if i.numel() == 0:
            raise ValueError(f"CoSENTLoss: the batch of {n} items holds no scored pair (two items of one "
                             "group with a known relation); CoSENT needs pair or session data with scores")
        dist = pairwise_distance(embeddings, distance=self.distance)[i, j]
        sim = (1.0 - dist if self.distance == "cosine" else -dist) * self.scale
        score = relation[i, j]
        # diff[p, q] = sim_q - sim_p, kept where pair p should rank above pair q
        diff = sim[None, :] - sim[:, None]
        diff = diff[score[:, None] > score[None, :]]
        return torch.logsumexp(torch.cat([diff.new_zeros(1), diff]), dim=0)

    def compute(self, dist, relation, embeddings):  # pragma: no cover - forward does the work
        raise NotImplementedError("CoSENTLoss needs the group labels: call it as loss(embeddings, labels)")

    def extra_repr(self) -> str:
        return f"scale={self.scale}, distance={self.distance!r}"
