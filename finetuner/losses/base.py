"""What every loss shares: input checks and the batch's distances and relation."""

from __future__ import annotations

import torch
from torch import nn

from ..data.relation import relation_matrix
from .distances import check_distance, pairwise_distance
from .miners import get_miner


class MetricLoss(nn.Module):
    """Base of the metric-learning losses: `forward(embeddings [B, D], labels) -> scalar`.

    Subclasses implement `compute(dist, relation, embeddings)`. Labels are int [B] (class ids)
    or float [B, 2] (group, relevance): see `finetuner.data.relation`.
    """

    def __init__(self, distance: str = "cosine", miner=None) -> None:
        super().__init__()
        self.distance = check_distance(distance)
        self.miner = get_miner(miner)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if embeddings.dim() != 2:
            raise ValueError(
                f"embeddings: expected a 2-D tensor [batch, dim] from the model, got shape {tuple(embeddings.shape)}"
            )
        if labels.shape[0] != embeddings.shape[0]:
            raise ValueError(
                f"the model returned {embeddings.shape[0]} embeddings for a batch of {labels.shape[0]} items: "
                "it must return one row per input item"
            )
        labels = labels.to(embeddings.device)
        return self.compute(pairwise_distance(embeddings, distance=self.distance), relation_matrix(labels), embeddings)

    def compute(self, dist: torch.Tensor, relation: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
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
