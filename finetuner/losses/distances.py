"""Pairwise distances between embeddings, shared by losses, miners and evaluation."""

from __future__ import annotations

import torch
import torch.nn.functional as F

DISTANCES = ("cosine", "euclidean", "sqeuclidean")


def check_distance(distance: str) -> str:
    """Return `distance` if it is known, else raise ValueError naming the choices."""
    if distance not in DISTANCES:
        raise ValueError(f"distance: expected one of {DISTANCES}, got {distance!r}")
    return distance


def pairwise_distance(x: torch.Tensor, y: torch.Tensor | None = None, distance: str = "cosine") -> torch.Tensor:
    """Distance between every row of `x` and every row of `y`.

    Args:
        x: float tensor [A, D].
        y: float tensor [B, D]; default `x`.
        distance: "cosine" (1 - cosine similarity, in [0, 2]), "euclidean" (L2, >= 0) or
            "sqeuclidean" (squared L2).

    Returns:
        float tensor [A, B], computed in float32 even under bf16 autocast (distances near zero
        lose all precision in bf16).

    Raises:
        ValueError: unknown `distance`.
    """
    check_distance(distance)
    y = x if y is None else y
    x, y = x.float(), y.float()
    if distance == "cosine":
        return 1.0 - F.normalize(x, dim=-1) @ F.normalize(y, dim=-1).T
    sq = (x * x).sum(1, keepdim=True) + (y * y).sum(1)[None, :] - 2.0 * (x @ y.T)
    sq = sq.clamp_min(0.0)
    if distance == "sqeuclidean":
        return sq
    # the sqrt's gradient is infinite at 0 (an item with itself, or duplicates): keep it finite
    return torch.sqrt(sq + 1e-12)


def paired_distance(x: torch.Tensor, y: torch.Tensor, distance: str = "cosine") -> torch.Tensor:
    """Distance between x[i] and y[i] for each row: float tensors [N, D] -> [N] (see `pairwise_distance`)."""
    check_distance(distance)
    x, y = x.float(), y.float()
    if distance == "cosine":
        return 1.0 - F.cosine_similarity(x, y, dim=-1)
    sq = ((x - y) ** 2).sum(-1)
    return sq if distance == "sqeuclidean" else torch.sqrt(sq + 1e-12)
