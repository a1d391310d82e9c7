"""Preprocessors: raw instruction examples -> token ids and labels.

A preprocessor is any object with `__call__(dataset, tokenizer, max_length, task_type) ->
datasets.Dataset` returning the columns `input_ids` (list[int]) and `labels` (list[int], -100
where no loss is taken), and a `template` attribute naming how prompts are rendered at
generation time ("chat", "alpaca" or "plain"; see `finetuner.llm.templates`). Subclass
`Preprocessor` to plug your own into `FineTuner(preprocessor=...)`.
"""

from __future__ import annotations

import numpy as np

from ..data.instructions import detect_format, to_messages
from ..data.sequences import CAUSAL, IGNORE_INDEX
from .templates import adds_special_tokens, render_conversation, render_prompt, resolve_template

__all__ = ["IGNORE_INDEX", "DefaultPreprocessor", "Preprocessor"]  # IGNORE_INDEX: -100, no loss on that token


class Preprocessor:
    """Interface of `FineTuner(preprocessor=...)`.

    Attributes:
        template: how `generate` renders a prompt for this data ("chat", "alpaca", "plain").
        stats: what the last call did (counts), for reports.
    """

    template: str = "plain"
    stats: dict = {}

    def __call__(self, dataset, tokenizer, max_length: int, task_type: str = CAUSAL):
        """Tokenize `dataset` (a `datasets.Dataset`) with `tokenizer` into sequences of at most
        `max_length` tokens; return a `datasets.Dataset` with `input_ids` and `labels`."""
        raise NotImplementedError


class DefaultPreprocessor(Preprocessor):
    """Tokenize instruction data for supervised fine-tuning, with the loss on the responses only.

    Causal LMs: each conversation is rendered as one sequence (the tokenizer's chat template, or
    an Alpaca prompt when it has none; see `finetuner.llm.templates`); `labels` equal the token ids
    on assistant replies, end-of-turn / EOS token included so the tuned model learns to stop, and
    -100 on prompts (completion-only loss, as in InstructGPT, Ouyang et al. 2022). Sequences are
    cut to `max_length` tokens from the right; an example whose reply starts beyond `max_length`
    has nothing to learn from and is dropped (counted in `stats`).

    Seq2seq models: the conversation up to the last reply is the encoder input, the last reply
    (plus EOS) the labels.

    Args:
        template: "auto" (chat template if the tokenizer has one, else Alpaca; raw text for
            prompt/completion and text data), "chat", "alpaca" or "plain".
        train_on_prompt: also take the loss on prompt tokens (plain language modelling).

    Raises (on call):
        ValueError: no known format in the dataset's columns (names the columns expected), a
            tokenizer without offsets (a slow tokenizer), or no example left after truncation.
    """

    def __init__(self, template: str = "auto", train_on_prompt: bool = False) -> None:
        self.template_arg, self.train_on_prompt = template, train_on_prompt
        self.template, self.format, self.stats = "plain", None, {}

    def __call__(self, dataset, tokenizer, max_length: int, task_type: str = CAUSAL):
        import datasets

        self.format = detect_format(dataset.column_names)
        self.template = resolve_template(self.template_arg, tokenizer, self.format)
        if task_type != CAUSAL:
            if self.format == "text":
                raise ValueError("dataset_name: a seq2seq model needs inputs and targets; 'text' data has only text "
                                 "(use alpaca, prompt/completion or messages data)")
            self.template = "plain" if self.template == "chat" else self.template
        if not getattr(tokenizer, "is_fast", False):
            raise ValueError("preprocessor: DefaultPreprocessor needs a fast (Rust) tokenizer for character offsets; "
                             f"{type(tokenizer).__name__} is slow")
        encode = self.encode_causal if task_type == CAUSAL else self.encode_seq2seq
        rows = [encode(example, tokenizer, max_length) for example in dataset]
        kept = [r for r in rows if r["num_labels"] > 0]
        self.stats = {"examples": len(rows), "dropped_no_labels": len(rows) - len(kept),
                      "truncated": sum(r["truncated"] for r in rows),
                      "tokens": sum(len(r["input_ids"]) for r in kept),
                      "label_tokens": sum(r["num_labels"] for r in kept)}
        if not kept:
            raise ValueError(f"dataset_name: all {len(rows)} examples lost their response to truncation at "
                             f"max_length={max_length}; raise max_length")
        columns = {k: [r[k] for r in kept] for k in ("input_ids", "labels", "num_labels")}
        return datasets.Dataset.from_dict(columns)

    # ---- causal LM -----------------------------------------------------------------------
    def _text_and_spans(self, example: dict, tokenizer) -> tuple[str, list[tuple[int, int]]]:
        eos = tokenizer.eos_token or ""
        if self.format in ("messages", "alpaca"):
            return render_conversation(to_messages(example, self.format), tokenizer, self.template)
        if self.format == "prompt_completion":
            prompt = render_prompt(str(example["prompt"]), tokenizer, self.template)
            text = prompt + str(example["completion"]) + eos
            return text, [(len(prompt), len(text))]
        text = str(example["text"]) + eos
        return text, [(0, len(text))]

    def encode_causal(self, example: dict, tokenizer, max_length: int) -> dict:
        """One example -> `input_ids`, `labels` (-100 outside the reply spans), `num_labels`,
        `truncated`."""
        text, spans = self._text_and_spans(example, tokenizer)
        if self.train_on_prompt:
            spans = [(0, len(text))]
        enc = tokenizer(text, add_special_tokens=adds_special_tokens(self.template), return_offsets_mapping=True)
        ids = np.asarray(enc["input_ids"], dtype=np.int64)
        offsets = np.asarray(enc["offset_mapping"], dtype=np.int64).reshape(-1, 2)
        starts, ends = offsets[:, 0], offsets[:, 1]
        trained = np.zeros(len(ids), dtype=bool)
        for lo, hi in spans:  # a token is trained when it starts inside a reply span
            trained |= (starts >= lo) & (starts < hi) & (ends > starts)
        labels = np.where(trained, ids, IGNORE_INDEX)
        truncated = len(ids) > max_length
        ids, labels = ids[:max_length], labels[:max_length]
        return {"input_ids": ids.tolist(), "labels": labels.tolist(),
                "num_labels": int((labels != IGNORE_INDEX).sum()), "truncated": truncated}

    # ---- seq2seq -------------------------------------------------------------------------
    def encode_seq2seq(self, example: dict, tokenizer, max_length: int) -> dict:
        """One example -> encoder `input_ids` and decoder `labels` (the reply + EOS)."""
        if self.format in ("messages", "alpaca"):
            messages = to_messages(example, self.format)
            last = max(i for i, t in enumerate(messages) if t["role"] == "assistant")
            source = render_prompt(messages[:last], tokenizer, self.template)
            target = messages[last]["content"]
        else:
            source, target = str(example["prompt"]), str(example["completion"])
        src = tokenizer(source, truncation=True, max_length=max_length)["input_ids"]
        tgt = tokenizer(target, add_special_tokens=False)["input_ids"]
        eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id
        tgt = tgt + ([eos] if eos is not None else [])
        truncated = len(tgt) > max_length
        tgt = tgt[:max_length]
        return {"input_ids": list(src), "labels": list(tgt), "num_labels": len(tgt), "truncated": truncated}
