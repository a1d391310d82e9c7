"""What every loss shares: input checks and the batch's distances and relation."""

from __future__ import annotations

import torch
from torch import nn

from ..data.relation import relation_matrix
from .distances import Distance, get_distance
from .miners import get_miner


class MetricLoss(nn.Module):
    """Base of the metric-learning losses: `forward(embeddings [B, D], labels, relation=None) -> scalar`.

    Subclasses implement `compute(dist, relation, embeddings)`. Labels are int [B] (class ids)
    or float [B, 2] (group, relevance): see `finetuner.data.relation`, which turns them into the
    batch's relation matrix. A caller that knows more (e.g. that two texts of a batch are
    duplicates, so neither is the other's negative) hands the relation in instead.

    Args:
        distance: a name ("cosine", "euclidean", "sqeuclidean") or a `Distance` object;
            `self.distance` is its name, `self.distance_fn` the object.
        miner: see `finetuner.losses.miners.get_miner`.
    """

    def __init__(self, distance: str | Distance = "cosine", miner=None) -> None:
        super().__init__()
        self.distance_fn = get_distance(distance)
        self.distance = self.distance_fn.name
        self.miner = get_miner(miner)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor | None = None,
                relation: torch.Tensor | None = None) -> torch.Tensor:
        """The loss of a batch.

        Args:
            embeddings: float [B, D].
            labels: int [B] or float [B, 2]; may be None when `relation` is given.
            relation: float [B, B] (1 positive, 0 negative, in between a soft score, -1
                unknown) used instead of the one the labels give.

        Raises:
            ValueError: embeddings not 2-D, a batch-size mismatch, neither labels nor relation,
                or a batch with nothing to learn from (see the subclass).
        """
        if embeddings.dim() != 2:
            raise ValueError(
                f"embeddings: expected a 2-D tensor [batch, dim] from the model, got shape {tuple(embeddings.shape)}"
            )
        n = embeddings.shape[0]
        if relation is None:
            if labels is None:
                raise ValueError("labels: expected labels [B] / [B, 2] or a relation [B, B], got neither")
            if labels.shape[0] != n:
                raise ValueError(f"the model returned {n} embeddings for a batch of {labels.shape[0]} items: "
                                 "it must return one row per input item")
            relation = relation_matrix(labels.to(embeddings.device))
        elif tuple(relation.shape) != (n, n):
            raise ValueError(f"relation: expected shape ({n}, {n}) for {n} embeddings, got {tuple(relation.shape)}")
        return self.compute(self.distance_fn.pairwise(embeddings), relation.to(embeddings.device), embeddings)

    def compute(self, dist: torch.Tensor, relation: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
        """The loss from the batch's distances [B, B], relation [B, B] and embeddings [B, D]."""
        raise NotImplementedError

    def _no_valid(self, what: str, relation: torch.Tensor) -> ValueError:
        off_diag = ~torch.eye(relation.shape[0], dtype=torch.bool, device=relation.device)
        return ValueError(
            f"{type(self).__name__}: the batch of {relation.shape[0]} items holds no valid {what} "
            f"({int(((relation >= 1) & off_diag).sum())} positive and {int(((relation == 0) & off_diag).sum())} "
            "negative ordered pairs). Each batch needs two items of one group and an item of another: "
            "raise `num_items_per_class` (class data) or `batch_size`, or check that the data has "
            "more than one class."
        )
