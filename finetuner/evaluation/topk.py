"""Exact k-nearest-neighbour search in bounded memory.

The [Q, N] distance matrix of an evaluation set (100k x 100k floats = 40 GB) never exists:
queries and index are walked in [query_chunk, index_chunk] blocks, and each query keeps a
running top-k that is merged with each block's own top-k.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

DISTANCES = ("cosine", "euclidean", "sqeuclidean")


def _as_matrix(x, name: str) -> torch.Tensor:
    """`x` (tensor or array-like) as a float32 CPU tensor [rows, D], else ValueError naming `name`."""
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    if t.dim() != 2:
        raise ValueError(f"{name}: expected a 2-D float tensor [rows, dim], got shape {tuple(t.shape)}")
    return t.detach().to("cpu", torch.float32)


def _check_options(distance: str, query_chunk: int, index_chunk: int) -> None:
    """ValueError naming the argument when `distance` is unknown or a chunk size is not an int >= 1."""
    if distance not in DISTANCES:
        raise ValueError(f"distance: expected one of {DISTANCES}, got {distance!r}")
    for name, value in (("query_chunk", query_chunk), ("index_chunk", index_chunk)):
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name}: expected an int >= 1, got {value!r}")


def chunked_topk(
    queries,
    index,
    k: int,
    *,
    distance: str = "cosine",
    exclude_self: bool = False,
    query_chunk: int = 1024,
    index_chunk: int = 16384,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The `k` nearest index items of every query, exact, without a [Q, N] matrix.

    Peak extra memory is about `query_chunk * index_chunk * 4` bytes (64 MB by default) plus
    the [Q, k] results.

    Args:
        queries: float tensor or array [Q, D].
        index: float tensor or array [N, D].
        k: neighbours per query, >= 1; clamped to N (N - 1 with `exclude_self`).
        distance: "cosine" (1 - cosine similarity), "euclidean" (L2) or "sqeuclidean" (squared L2).
        exclude_self: the queries are the index itself (Q == N, query i is item i) and item i
            is never returned for query i.
        query_chunk: queries per block, >= 1.
        index_chunk: index items per block, >= 1.

    Returns:
        (distances, indices): float32 [Q, k'] sorted ascending (nearest first) and int64
        [Q, k'] positions in `index`, with k' = k after clamping. Computed in float32 on CPU.

    Raises:
        ValueError: an input is not 2-D, dims differ, k < 1, unknown `distance`, a chunk size
            < 1, `exclude_self` with Q != N, or no item is left to return.
    """
    q = _as_matrix(queries, "queries")
    x = _as_matrix(index, "index")
    if q.shape[1] != x.shape[1]:
        raise ValueError(
            f"index: expected the same dim as queries ({q.shape[1]}), got shape {tuple(x.shape)}"
        )
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k: expected an int >= 1, got {k!r}")
    _check_options(distance, query_chunk, index_chunk)
    if exclude_self and q.shape[0] != x.shape[0]:
        raise ValueError(
            f"exclude_self: expected queries and index to be the same set (same number of rows), "
            f"got {q.shape[0]} queries and {x.shape[0]} index items"
        )
    available = x.shape[0] - int(exclude_self)
    if available < 1:
        raise ValueError(
            f"index: expected at least {1 + int(exclude_self)} item(s) to search, got {x.shape[0]}"
        )
    k = int(min(k, available))

    # Rank by a cheap key with the same order as the distance, fused into one matmul per block:
    # cosine: -<q, x> on unit vectors; (sq)euclidean: |x|^2 - 2<q, x> (|q|^2 is constant per
    # row, added back to the k winners only).
    if distance == "cosine":
        q = F.normalize(q, dim=1)
        x = F.normalize(x, dim=1)
        x_norm2 = torch.zeros(x.shape[0])
        alpha = -1.0
    else:
        x_norm2 = (x * x).sum(1)
        alpha = -2.0

    num_q = q.shape[0]
    out_keys = torch.empty(num_q, k)
    out_idx = torch.empty(num_q, k, dtype=torch.int64)
    for q0 in range(0, num_q, query_chunk):
        qc = q[q0 : q0 + query_chunk]
        best_keys = torch.empty(qc.shape[0], 0)
        best_idx = torch.empty(qc.shape[0], 0, dtype=torch.int64)
        for x0 in range(0, x.shape[0], index_chunk):
            xc = x[x0 : x0 + index_chunk]
            keys = torch.addmm(x_norm2[x0 : x0 + index_chunk], qc, xc.T, alpha=alpha)
            if exclude_self:
                # query q0 + r is item q0 + r: hide it where it falls inside this block
                lo, hi = max(q0, x0), min(q0 + qc.shape[0], x0 + xc.shape[0])
                if lo < hi:
                    rows = torch.arange(lo, hi)
                    keys[rows - q0, rows - x0] = float("inf")
            block_keys, block_idx = torch.topk(keys, min(k, xc.shape[0]), dim=1, largest=False, sorted=False)
            cand_keys = torch.cat([best_keys, block_keys], dim=1)
            cand_idx = torch.cat([best_idx, block_idx + x0], dim=1)
            best_keys, pos = torch.topk(cand_keys, min(k, cand_keys.shape[1]), dim=1, largest=False, sorted=True)
            best_idx = torch.gather(cand_idx, 1, pos)
        out_keys[q0 : q0 + qc.shape[0]] = best_keys
        out_idx[q0 : q0 + qc.shape[0]] = best_idx

    # back from keys to distances; float rounding can dip just below 0
    if distance == "cosine":
        dist = out_keys.add_(1.0).clamp_min_(0.0)  # 1 - cos = 1 + key
    else:
        dist = out_keys.add_((q * q).sum(1, keepdim=True)).clamp_min_(0.0)
        if distance == "euclidean":
            dist = dist.sqrt_()
    return dist, out_idx
