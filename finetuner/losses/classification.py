"""The classification loss: cross-entropy over softmax for one label per row, binary
cross-entropy over sigmoid per class for several, both optionally class-weighted."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def classification_loss(logits: torch.Tensor, targets: torch.Tensor, *, multi_label: bool = False,
                        class_weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean loss of a batch.

    Single-label: cross-entropy over softmax(logits), optionally class-weighted (PyTorch's
    weighted mean). Multi-label: binary cross-entropy over sigmoid(logits) per class, with
    `class_weights` as the positive-class weight (`pos_weight`).

    Args:
        logits: float [B, C].
        targets: int64 [B] class ids, or float [B, C] multi-hot targets (multi-label).
        class_weights: float [C] or None.
    """
    logits = logits.float()
    w = None if class_weights is None else class_weights.to(logits.device)
    if multi_label:
        return F.binary_cross_entropy_with_logits(logits, targets.float(), pos_weight=w)
    return F.cross_entropy(logits, targets, weight=w)
