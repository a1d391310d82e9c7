"""The training objective of language models: next-token cross-entropy on the labelled tokens.

Causal LMs: token t predicts token t+1; the loss is the mean negative log-likelihood over the
tokens whose label is not -100 (the replies, by default). The vocabulary projection is the most
expensive op of a small LM's step (SmolLM2: 49152 x 576, and the float32 log-softmax over it), so
logits are computed only at positions whose next token is labelled (transformers'
`logits_to_keep` with a boolean mask), not at prompt or padding positions, and, where the model
allows it, through the chunked `linear_cross_entropy`: the model's output head is bypassed for
that call (it returns its input, the final hidden states at the kept positions) and the loss
is computed from the head's weight a chunk of tokens at a time, so that no [tokens, vocab]
tensor exists. The result is the same loss (a one-time check on each model compares the two
paths and falls back to the plain one if they differ); the saving grows with the vocabulary
and the share of prompt tokens.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

from ..data.sequences import CAUSAL, IGNORE_INDEX
from .linear_cross_entropy import linear_cross_entropy

_MODEL_KEYS = ("input_ids", "attention_mask", "position_ids")


class LanguageModelingLoss:
    """`(model, batch) -> scalar loss` for the engine, and `sum_and_count` for evaluation.

    Args:
        task_type: "CAUSAL_LM" or "SEQ_2_SEQ_LM".
        logits_to_keep: compute causal-LM logits only where needed (falls back to full logits,
            once and for good, if the model's forward does not accept a boolean mask).
        chunked: causal LMs: the chunked cross-entropy through the output head's weight (see the
            module docstring), for models whose head is a bias-free linear layer and whose
            logits it alone computes (checked once per model).

    Inputs:
        batch: from `CausalCollator` / `Seq2SeqCollator`: int64 `input_ids` [B, T], `labels`
            [B, T] (causal, aligned with the inputs) or [B, L] (seq2seq), and `attention_mask` or
            `position_ids` [B, T].

    Raises:
        ValueError: a batch without any labelled token (the mean would be NaN).
    """

    def __init__(self, task_type: str = CAUSAL, logits_to_keep: bool = True, chunked: bool = True) -> None:
        self.task_type, self.logits_to_keep, self.chunked = task_type, logits_to_keep, chunked
        self._heads: dict[int, torch.nn.Linear | None] = {}  # id(model) -> its head if the chunked path holds

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
        head = self._chunked_head(model, inputs) if self.logits_to_keep and self.chunked else None
        if head is not None:
            with _returning_hidden(head):
                hidden = model(**inputs, use_cache=False, logits_to_keep=keep).logits
            return linear_cross_entropy(hidden, head.weight, wanted), count
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

    def _chunked_head(self, model: torch.nn.Module, inputs: dict) -> torch.nn.Linear | None:
        """The model's output head if the chunked path gives this model's loss (a bias-free
        linear head, and on the first few tokens of the first row the plain and the chunked NLL
        agree), else None; decided once per model."""
        key = id(model)
        if key not in self._heads:
            head = _output_head(model)
            if head is not None and not _chunked_agrees(model, head, inputs["input_ids"][:1, :8]):
                head = None
            self._heads[key] = head
        return self._heads[key]


def _chunked_agrees(model: torch.nn.Module, head: torch.nn.Linear, ids: torch.Tensor) -> bool:
    """Whether the model's own logits and the chunked path give the same NLL on `ids` [1, T]."""
    keep = torch.ones_like(ids, dtype=torch.bool)
    keep[:, -1] = False
    target = ids[:, 1:].reshape(-1)
    training = model.training
    model.eval()  # no dropout: both forwards see the same weights
    try:
        with torch.no_grad():
            logits = model(input_ids=ids, use_cache=False).logits[:, :-1].reshape(-1, head.weight.shape[0])
            plain = F.cross_entropy(logits.float(), target, reduction="sum")
            with _returning_hidden(head):
                hidden = model(input_ids=ids, use_cache=False, logits_to_keep=keep).logits
            chunked = linear_cross_entropy(hidden, head.weight, target)
        return bool(torch.allclose(plain, chunked, rtol=1e-3, atol=1e-3))
    except (TypeError, IndexError, RuntimeError, ValueError):
        return False
    finally:
        model.train(training)


def _output_head(model: torch.nn.Module) -> torch.nn.Linear | None:
    """The model's output projection if it is a plain bias-free `nn.Linear` (through a peft or
    DDP wrapper), else None."""
    inner = model.module if hasattr(model, "module") and isinstance(model.module, torch.nn.Module) else model
    inner = inner.get_base_model() if hasattr(inner, "get_base_model") else inner
    get = getattr(inner, "get_output_embeddings", None)
    head = get() if callable(get) else None
    if type(head) is not torch.nn.Linear or head.bias is not None:
        return None
    return head


@contextlib.contextmanager
def _returning_hidden(head: torch.nn.Linear):
    """Within the block, `head` returns its input (the final hidden states) instead of logits."""
    head.forward = _identity
    try:
        yield
    finally:
        del head.forward


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x
