"""What comes after the cut: pooling a layer's output to [B, D], and the projection heads."""

from __future__ import annotations

import torch
from torch import nn

POOLINGS = ("auto", "mean", "max", "cls", "flatten", "none")
HEADS = ("linear", "mlp")


def pool(t: torch.Tensor, pooling: str = "auto", attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Reduce a layer's output [B, ...] to embeddings [B, D].

    Args:
        t: float tensor [B, D], [B, T, H] (tokens) or [B, C, H, W...] (feature maps).
        pooling: "auto": [B, D] as is; [B, T, H] mean over the tokens the attention mask
            keeps (plain mean without a mask: mean pooling as in Sentence-BERT, Reimers &
            Gurevych, 2019); [B, C, H, W...] mean over the spatial dimensions (global average
            pooling, Lin et al., 2014), so D = C whatever the image size. "mean" / "max": the
            same reduction with mean / max. "cls": the first token of [B, T, H]. "flatten":
            [B, prod(rest)]. "none": the output itself, which must be [B, D].
        attention_mask: int/bool [B, T], 1 for real tokens, or None.

    Raises:
        ValueError: an unknown pooling, or a shape it cannot reduce.
    """
    if pooling not in POOLINGS:
        raise ValueError(f"pooling: expected one of {POOLINGS}, got {pooling!r}")
    if pooling == "none" or (pooling == "auto" and t.dim() == 2):
        return t
    if pooling == "flatten" or t.dim() == 2:
        return t.flatten(1)
    if t.dim() == 3:
        if pooling == "cls":
            return t[:, 0]
        if attention_mask is not None and attention_mask.shape == t.shape[:2]:
            m = attention_mask.to(t.dtype).unsqueeze(-1)
            if pooling == "max":
                return t.masked_fill(m == 0, torch.finfo(t.dtype).min).amax(1)
            return (t * m).sum(1) / m.sum(1).clamp(min=1)
        return t.amax(1) if pooling == "max" else t.mean(1)
    if pooling == "cls":
        raise ValueError(f"pooling: 'cls' takes the first token of a [B, T, H] output, got shape {tuple(t.shape)}")
    dims = tuple(range(2, t.dim()))
    return t.amax(dims) if pooling == "max" else t.mean(dims)


def projection_head(in_dim: int, output_dim: int, kind: str = "linear") -> nn.Module:
    """A projection head from [B, in_dim] to [B, output_dim].

    kind "linear": one Linear layer. "mlp": Linear(in_dim, in_dim), ReLU, Linear(in_dim,
    output_dim), the non-linear projection head of SimCLR (Chen et al., 2020).
    """
    if kind == "linear":
        return nn.Linear(in_dim, output_dim)
    if kind == "mlp":
        return nn.Sequential(nn.Linear(in_dim, in_dim), nn.ReLU(), nn.Linear(in_dim, output_dim))
    raise ValueError(f"projection_head: expected {HEADS} or a torch module, got {kind!r}")
