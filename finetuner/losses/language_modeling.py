"""The training objective of language models: next-token cross-entropy on the labelled tokens.

Causal LMs: token t predicts token t+1; the loss is the mean negative log-likelihood over the
tokens whose label is not -100 (the replies, by default). The vocabulary projection is the most
expensive op of a small LM's step (SmolLM2: 49152 x 576, and the float32 log-softmax over it), so
logits are computed only at positions whose next token is labelled (transformers'
`logits_to_keep` with a boolean mask), not at prompt or padding positions. The result is the
same loss; the saving grows with the share of prompt tokens.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..data.sequences import CAUSAL, IGNORE_INDEX

_MODEL_KEYS = ("input_ids", "attention_mask", "position_ids")


class LanguageModelingLoss:
    """`(model, batch) -> scalar loss` for the engine, and `sum_and_count` for evaluation.

    Args:
        task_type: "CAUSAL_LM" or "SEQ_2_SEQ_LM".
        logits_to_keep: compute causal-LM logits only where needed (falls back to full logits,
            once and for good, if the model's forward does not accept a boolean mask).

    Inputs:
        batch: from `CausalCollator` / `Seq2SeqCollator`: int64 `input_ids` [B, T], `labels`
            [B, T] (causal, aligned with the inputs) or [B, L] (seq2seq), and `attention_mask` or
            `position_ids` [B, T].

    Raises:
        ValueError: a batch without any labelled token (the mean would be NaN).
    """

    def __init__(self, task_type: str = CAUSAL, logits_to_keep: bool = True) -> None:
        self.task_type, self.logits_to_keep = task_type, logits_to_keep

    def __call__(self, model: torch.nn.Module, batch: dict) -> torch.Tensor:
        total, count = self.sum_and_count(model, batch)
        return total / count

    def sum_and_count(self, model: torch.nn.Module, batch: dict) -> tuple[torch.Tensor, int]:
        """The summed token NLL (a scalar tensor) and the number of labelled tokens."""
        inputs = {k: batch[k] for k in _MODEL_KEYS if k in batch}
        if self.task_type != CAUSAL:
            labels = batch["labels"]
            count = int((labels != IGNORE_INDEX).sum())
            if count == 0:
                raise ValueError("batch: no labelled token; every example needs a non-empty response")
            out = model(**inputs, labels=labels)
            return out.loss * count, count
        target = batch["labels"][:, 1:]
        keep = torch.zeros_like(batch["labels"], dtype=torch.bool)
        keep[:, :-1] = target != IGNORE_INDEX
        count = int(keep.sum())
        if count == 0:
            raise ValueError("batch: no labelled token; every example needs a non-empty response")
        wanted = target[target != IGNORE_INDEX]
        if self.logits_to_keep:
            try:
                logits = model(**inputs, use_cache=False, logits_to_keep=keep).logits
                if logits.dim() == 2 and logits.shape[0] == count:
                    return F.cross_entropy(logits.float(), wanted, reduction="sum"), count
            except (TypeError, IndexError):
                pass
            self.logits_to_keep = False  # this model's forward cannot slice by a mask
        logits = model(**inputs, use_cache=False).logits
        return F.cross_entropy(logits[keep].float(), wanted, reduction="sum"), count
