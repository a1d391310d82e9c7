"""sentence-transformers' MultipleNegativesRankingLoss, exactly, on the batch relation; and the
cached (GradCache) forms of the in-batch-negative losses."""

from __future__ import annotations

import torch

from ..data.relation import UNKNOWN, relation_matrix, split_labels
from .infonce import InfoNCELoss


def first_of_group(labels: torch.Tensor) -> torch.Tensor:
    """bool [B]: True for the first item of each group in batch order (the query of a session,
    the anchor of a pair or triplet, as `finetuner.data.formats` stores them)."""
    groups, _ = split_labels(labels)
    first = torch.ones_like(groups, dtype=torch.bool)
    same = groups[:, None] == groups[None, :]
    earlier = torch.ones_like(same).tril(-1)
    first &= ~(same & earlier).any(1)
    return first


class MultipleNegativesRankingLoss(InfoNCELoss):
    """sentence-transformers' `MultipleNegativesRankingLoss` (its default, query -> document
    direction): each anchor's softmax cross-entropy over the batch's candidates.

    For an anchor a with positive p (Henderson et al., 2017, "Efficient Natural Language
    Response Suggestion for Smart Reply"; Reimers & Gurevych's sentence-transformers):
        l(a, p) = -log( exp(s * sim(a, p)) / sum_c exp(s * sim(a, c)) )
    where c runs over the candidates: every non-anchor item of the batch (the positives of the
    other anchors, the B - 1 in-batch negatives, and every given hard negative), and s = `scale`.
    Anchors are never candidates and are not scored as candidates' anchors (one direction).
    Differences from the library, both on the safe side: an anchor with several positives gets
    one term per positive with the other positives left out of its candidates, and duplicates
    marked unknown by the caller (`relation`) are not used as negatives.

    Anchors: the `anchors` mask when given, else the first item of each group in the batch
    (`first_of_group`); `fit` orders each batch so that it is the query / anchor.

    Args:
        scale: s > 0 (20 in sentence-transformers, = temperature 0.05).
        distance: "cosine" (default), "euclidean" or "sqeuclidean".

    Inputs:
        embeddings: float tensor [B, D]; labels: int [B] or float [B, 2]; relation: optional
        float [B, B] (see `MetricLoss.forward`); anchors: optional bool [B].

    Raises:
        ValueError: scale <= 0; a batch where no anchor has a positive.
    """

    def __init__(self, scale: float = 20.0, distance: str = "cosine") -> None:
        if not scale > 0:
            raise ValueError(f"scale: expected a positive number, got {scale}")
        super().__init__(temperature=1.0 / scale, distance=distance)
        self.scale = float(scale)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor | None = None,
                relation: torch.Tensor | None = None, anchors: torch.Tensor | None = None) -> torch.Tensor:
        """See `MetricLoss.forward`; `anchors` bool [B] says which items are anchors."""
        if anchors is None:
            if labels is None:
                raise ValueError("labels: MultipleNegativesRankingLoss needs the labels (or `anchors`) to tell "
                                 "the anchors from their candidates")
            anchors = first_of_group(labels)
        anchors = anchors.to(embeddings.device).bool()
        if relation is None:
            if labels is None:
                raise ValueError("labels: expected labels [B] / [B, 2] or a relation [B, B], got neither")
            if labels.shape[0] != embeddings.shape[0]:
                return super().forward(embeddings, labels)  # the base class names the mismatch
            relation = relation_matrix(labels.to(embeddings.device))
        if anchors.shape[0] != relation.shape[0]:
            raise ValueError(f"anchors: expected shape ({relation.shape[0]},), got {tuple(anchors.shape)}")
        relation = relation.to(embeddings.device)
        keep = anchors[:, None] & ~anchors[None, :]  # rows: anchors; columns: candidates
        return super().forward(embeddings, labels, torch.where(keep, relation, torch.full_like(relation, UNKNOWN)))

    def extra_repr(self) -> str:
        return f"scale={self.scale}, distance={self.distance!r}"


class CachedMultipleNegativesRankingLoss(MultipleNegativesRankingLoss):
    """`MultipleNegativesRankingLoss` trained the GradCache way (Gao et al., 2021, "Scaling
    Deep Contrastive Learning Batch Size under Memory Limited Setup"; sentence-transformers'
    `CachedMultipleNegativesRankingLoss`): the text recipe embeds the batch in chunks of
    `mini_batch_size` texts, each run again in the backward pass (`torch.utils.checkpoint`),
    so memory grows with the chunk, not the batch, and the loss and gradient are those of
    the whole batch. The loss itself is unchanged; the recipe reads `mini_batch_size`.

    Args:
        mini_batch_size: texts per forward chunk (int >= 1); scale, distance: as in the parent.
    """

    def __init__(self, mini_batch_size: int = 32, scale: float = 20.0, distance: str = "cosine") -> None:
        super().__init__(scale=scale, distance=distance)
        self.mini_batch_size = _check_mini_batch(mini_batch_size)

    def extra_repr(self) -> str:
        return f"mini_batch_size={self.mini_batch_size}, " + super().extra_repr()


class CachedInfoNCELoss(InfoNCELoss):
    """`InfoNCELoss` trained the GradCache way (see `CachedMultipleNegativesRankingLoss`).

    Args:
        mini_batch_size: texts per forward chunk (int >= 1); temperature, distance: as in the parent.
    """

    def __init__(self, mini_batch_size: int = 32, temperature: float = 0.05, distance: str = "cosine") -> None:
        super().__init__(temperature=temperature, distance=distance)
        self.mini_batch_size = _check_mini_batch(mini_batch_size)

    def extra_repr(self) -> str:
        return f"mini_batch_size={self.mini_batch_size}, temperature={self.temperature}, distance={self.distance!r}"


def _check_mini_batch(value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"mini_batch_size: expected an int >= 1 (texts per forward chunk), got {value!r}")
    return value
