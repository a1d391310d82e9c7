"""Metric-learning losses, written once in PyTorch, composed from a distance and a miner."""

from __future__ import annotations

from typing import Callable

from .base import MetricLoss
from .cosent import CoSENTLoss
from .distances import (DISTANCES, CosineDistance, Distance, EuclideanDistance, SquaredEuclideanDistance, get_distance,
                        paired_distance, pairwise_distance)
from .infonce import InfoNCELoss
from .miners import AllMiner, EasyHardMiner, EasyMiner, HardMiner, SemiHardMiner, get_miner
from .multiple_negatives import CachedInfoNCELoss, CachedMultipleNegativesRankingLoss, MultipleNegativesRankingLoss
from .siamese import SiameseLoss
from .triplet import TripletLoss

LOSSES = {
    "SiameseLoss": SiameseLoss,
    "TripletLoss": TripletLoss,
    "InfoNCELoss": InfoNCELoss,
    "CoSENTLoss": CoSENTLoss,
    "MultipleNegativesRankingLoss": MultipleNegativesRankingLoss,  # sentence-transformers' definition
    "CachedInfoNCELoss": CachedInfoNCELoss,
    "CachedMultipleNegativesRankingLoss": CachedMultipleNegativesRankingLoss,
}


def get_loss(loss, **kwargs) -> Callable:
    """A loss from its name (see `LOSSES`), a loss object, or any callable
    `(embeddings [B, D], labels) -> scalar tensor` (the user's own torch loss).

    Args:
        loss: a name, an object or a callable.
        **kwargs: passed to the loss class when `loss` is a name (e.g. margin, distance, miner).

    Raises:
        ValueError: an unknown name (the message lists the known ones); TypeError: not callable.
    """
    if isinstance(loss, str):
        if loss not in LOSSES:
            raise ValueError(f"loss: expected one of {sorted(LOSSES)} or a callable, got {loss!r}")
        return LOSSES[loss](**kwargs)
    if not callable(loss):
        raise TypeError(f"loss: expected a name, a loss object or a callable, got {type(loss).__name__}")
    return loss


__all__ = [
    "AllMiner", "CachedInfoNCELoss", "CachedMultipleNegativesRankingLoss", "CoSENTLoss", "CosineDistance", "DISTANCES", "Distance", "EuclideanDistance", "SquaredEuclideanDistance",
    "get_distance", "EasyHardMiner", "EasyMiner", "HardMiner", "InfoNCELoss", "LOSSES",
    "MetricLoss", "MultipleNegativesRankingLoss", "SemiHardMiner", "SiameseLoss", "TripletLoss", "get_loss", "get_miner",
    "paired_distance", "pairwise_distance",
]
