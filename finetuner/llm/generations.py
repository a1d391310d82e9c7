"""Greedy replies of the base model and of the tuned model to the same held-out instructions,
side by side: what the tuning changed, beyond the held-out loss.

The prompts are the held-out examples as they were tokenized for training (the same template),
cut before the first labelled token; the reference is the labelled reply. The base model is the
tuned model with its adapter switched off (peft's `disable_adapter`), so both replies come from
one set of base weights (the ones trained against: bf16 after a bf16-base run).
"""

from __future__ import annotations

import torch

from ..data.sequences import CAUSAL, IGNORE_INDEX
from ..models.lora import base_autocast


def side_by_side(model, tokenizer, tokenized, *, task_type: str = CAUSAL, count: int = 3,
                 max_new_tokens: int = 64, device: str = "cpu") -> list[dict]:
    """Greedy replies of the base and the tuned model to the first `count` held-out examples.

    Args:
        model: a peft model (LoRA adapter on a base).
        tokenizer: its tokenizer (decodes).
        tokenized: the held-out `datasets.Dataset` with `input_ids` and `labels` (-100 off the reply).
        task_type: "CAUSAL_LM" (prompt = the tokens before the reply) or "SEQ_2_SEQ_LM"
            (prompt = the source tokens).
        count: examples to generate for (those with a prompt).
        max_new_tokens: most tokens generated per reply.
        device: where the model is.

    Returns:
        [{"prompt", "reference", "base", "tuned"}] strings, special tokens removed; empty when
        `count` is 0 or no example has a prompt.
    """
    rows = []
    was_training = model.training
    model.eval()
    try:
        for example in tokenized:
            if len(rows) >= count:
                break
            ids, labels = list(example["input_ids"]), list(example["labels"])
            if task_type == CAUSAL:
                first = next((i for i, lab in enumerate(labels) if lab != IGNORE_INDEX), len(ids))
                prompt, reference = ids[:first], [t for t in labels[first:] if t != IGNORE_INDEX]
            else:
                prompt, reference = ids, [t for t in labels if t != IGNORE_INDEX]
            if not prompt:
                continue
            replies = {}
            for name in ("base", "tuned"):
                replies[name] = _greedy(model, tokenizer, prompt, max_new_tokens, device, task_type,
                                        adapter=name == "tuned")
            rows.append({"prompt": tokenizer.decode(prompt, skip_special_tokens=True).strip(),
                         "reference": tokenizer.decode(reference, skip_special_tokens=True).strip(), **replies})
    finally:
        model.train(was_training)
    return rows


def _greedy(model, tokenizer, prompt: list[int], max_new_tokens: int, device: str, task_type: str,
            adapter: bool) -> str:
    ids = torch.tensor([prompt], device=device)
    settings = dict(max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    with torch.no_grad(), base_autocast(model, device):
        if adapter:
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), **settings)
        else:
            with model.disable_adapter():
                out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), **settings)
    new = out[0, ids.shape[1]:] if task_type == CAUSAL else out[0]
    return tokenizer.decode(new, skip_special_tokens=True).strip()

