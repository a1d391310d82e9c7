"""Classification metrics: accuracy and F1 (scikit-learn's definitions) from logits, and the
whole eval record of a classifier (the eval loss, these metrics and the user's own)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Callable

import numpy as np
import torch

from ..losses.classification import classification_loss


def classification_metrics(logits: np.ndarray, targets: np.ndarray, *, multi_label: bool = False,
                           threshold: float = 0.5) -> dict:
    """Accuracy and F1 of predictions against the true labels (scikit-learn's definitions).

    Single-label, 2 classes: `accuracy` and `f1` (binary F1 of class id 1, the second class;
    for MRPC "equivalent", as GLUE reports it). More classes: `accuracy` and `macro_f1` (the
    unweighted mean of per-class F1 over the classes present in labels or predictions).
    Multi-label: `micro_f1`, `macro_f1` and `subset_accuracy` (every label of a row right), a
    label being predicted when sigmoid(logit) >= `threshold`.

    F1 = 2 * precision * recall / (precision + recall) (van Rijsbergen, *Information Retrieval*,
    1979); 0 when undefined.

    Args:
        logits: float [N, C].
        targets: int [N] class ids, or 0/1 [N, C] for multi-label.
        threshold: probability cut-off of multi-label predictions, in (0, 1).
    """
    from sklearn.metrics import accuracy_score, f1_score

    if multi_label:
        pred = (1.0 / (1.0 + np.exp(-logits))) >= threshold
        true = targets.astype(bool)
        return {"micro_f1": float(f1_score(true, pred, average="micro", zero_division=0)),
                "macro_f1": float(f1_score(true, pred, average="macro", zero_division=0)),
                "subset_accuracy": float(accuracy_score(true, pred))}
    pred = logits.argmax(-1)
    out = {"accuracy": float(accuracy_score(targets, pred))}
    if logits.shape[1] == 2:
        out["f1"] = float(f1_score(targets, pred, average="binary", pos_label=1, zero_division=0))
    else:
        out["macro_f1"] = float(f1_score(targets, pred, average="macro", zero_division=0))
    return out


def classifier_eval_metrics(logits: np.ndarray, targets: np.ndarray, *, multi_label: bool = False,
                            threshold: float = 0.5, class_weights: torch.Tensor | None = None,
                            compute_metrics: Callable | None = None) -> dict:
    """`eval_loss` (the training loss, with `class_weights`), `classification_metrics`, and the
    user's `compute_metrics(transformers.EvalPrediction)` keys, as one dict of floats.

    Raises:
        TypeError: `compute_metrics` returned something other than a dict of numbers.
    """
    loss = classification_loss(torch.from_numpy(logits), torch.from_numpy(targets), multi_label=multi_label,
                               class_weights=class_weights)
    out = {"eval_loss": float(loss), **classification_metrics(logits, targets, multi_label=multi_label,
                                                              threshold=threshold)}
    if compute_metrics is not None:
        from transformers import EvalPrediction

        extra = compute_metrics(EvalPrediction(predictions=logits, label_ids=targets))
        if not isinstance(extra, Mapping) or not all(isinstance(v, (int, float, np.number)) for v in extra.values()):
            raise TypeError(f"compute_metrics: expected it to return a dict of numbers, got {extra!r}")
        out.update({k: float(v) for k, v in extra.items()})
    return out
