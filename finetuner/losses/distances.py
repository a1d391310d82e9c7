"""Distances between embeddings, as small objects a loss, a miner or an evaluation is composed
with (the split of pytorch-metric-learning). Every distance is computed in float32, even under
bf16 autocast: distances near zero lose all precision in bf16."""

from __future__ import annotations

import torch
import torch.nn.functional as F


class Distance:
    """A distance between embeddings: `pairwise(x, y)` [A, B], `paired(x, y)` [N], and the
    similarity the in-batch losses take a softmax over.

    Subclasses: `CosineDistance` ("cosine"), `EuclideanDistance` ("euclidean"),
    `SquaredEuclideanDistance` ("sqeuclidean"); `get_distance` turns a name into one.
    """

    name = ""

    def pairwise(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Distance of every row of `x` [A, D] to every row of `y` [B, D] (default `x`): float32 [A, B]."""
        raise NotImplementedError

    def paired(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Distance of x[i] to y[i]: float tensors [N, D] -> float32 [N]."""
        raise NotImplementedError

    def similarity(self, dist: torch.Tensor) -> torch.Tensor:
        """A similarity from distances (larger is closer): -distance unless a subclass knows better."""
        return -dist

    def __repr__(self) -> str:
        return self.name

    def __eq__(self, other: object) -> bool:
        return getattr(other, "name", other) == self.name

    def __hash__(self) -> int:
        return hash(self.name)


class CosineDistance(Distance):
    """1 - cosine similarity, in [0, 2]; its similarity is the cosine similarity."""

    name = "cosine"

    def pairwise(self, x, y=None):
        """See `Distance.pairwise`."""
        x = F.normalize(x.float(), dim=-1)
        y = x if y is None else F.normalize(y.float(), dim=-1)
        return 1.0 - x @ y.T

    def paired(self, x, y):
        """See `Distance.paired`."""
        return 1.0 - F.cosine_similarity(x.float(), y.float(), dim=-1)

    def similarity(self, dist):
        """The cosine similarity, 1 - distance."""
        return 1.0 - dist


class SquaredEuclideanDistance(Distance):
    """Squared L2 distance, >= 0."""

    name = "sqeuclidean"

    def pairwise(self, x, y=None):
        """See `Distance.pairwise`."""
        x = x.float()
        y = x if y is None else y.float()
        sq = (x * x).sum(1, keepdim=True) + (y * y).sum(1)[None, :] - 2.0 * (x @ y.T)
        return sq.clamp_min(0.0)

    def paired(self, x, y):
        """See `Distance.paired`."""
        return ((x.float() - y.float()) ** 2).sum(-1)


class EuclideanDistance(SquaredEuclideanDistance):
    """L2 distance, >= 0 (with a finite gradient at 0: an item with itself, or duplicates)."""

    name = "euclidean"

    def pairwise(self, x, y=None):
        """See `Distance.pairwise`."""
        return torch.sqrt(super().pairwise(x, y) + 1e-12)

    def paired(self, x, y):
        """See `Distance.paired`."""
        return torch.sqrt(super().paired(x, y) + 1e-12)


_BY_NAME = {d.name: d for d in (CosineDistance, EuclideanDistance, SquaredEuclideanDistance)}
DISTANCES = tuple(_BY_NAME)


def get_distance(distance: str | Distance) -> Distance:
    """A `Distance` from its name ("cosine", "euclidean", "sqeuclidean") or as it is.

    Raises:
        ValueError: an unknown name (the message lists the known ones).
    """
    if isinstance(distance, Distance):
        return distance
    if distance not in _BY_NAME:
        raise ValueError(f"distance: expected one of {DISTANCES} or a Distance, got {distance!r}")
    return _BY_NAME[distance]()


def check_distance(distance: str | Distance) -> str:
    """The name of `distance` if it is known, else ValueError naming the choices."""
    return get_distance(distance).name


def pairwise_distance(x: torch.Tensor, y: torch.Tensor | None = None, distance: str | Distance = "cosine") -> torch.Tensor:
    """Distance between every row of `x` [A, D] and every row of `y` [B, D] (default `x`):
    float32 [A, B] (see `Distance.pairwise`).

    Raises:
        ValueError: unknown `distance`.
    """
    return get_distance(distance).pairwise(x, y)


def paired_distance(x: torch.Tensor, y: torch.Tensor, distance: str | Distance = "cosine") -> torch.Tensor:
    """Distance between x[i] and y[i] for each row: float tensors [N, D] -> float32 [N]."""
    return get_distance(distance).paired(x, y)
