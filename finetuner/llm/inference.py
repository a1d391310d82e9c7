"""Inference handlers: prompt text -> generated text, for `FineTuner.generate`.

An inference handler is any object with
`generate(prompt_text, model, tokenizer, device, max_length) -> str`; subclass
`InferenceHandler` to plug your own into `FineTuner(inference_handler=...)`.
"""

from __future__ import annotations

import torch

from .templates import adds_special_tokens, render_prompt


class InferenceHandler:
    """Interface of `FineTuner(inference_handler=...)`.

    Attributes:
        template: how prompts are rendered ("chat", "alpaca", "plain"), or None to let
            `FineTuner` set it to the template the training data was rendered with.
    """

    template: str | None = None

    def generate(self, prompt_text: str, model, tokenizer, device: str, max_length: int) -> str:
        """Generate a reply to `prompt_text` of at most `max_length` tokens, prompt included."""
        raise NotImplementedError


class DefaultInferenceHandler(InferenceHandler):
    """Render the prompt as in training, generate, and return only the new text.

    Decoding is greedy by default (deterministic: a reloaded model gives the same text);
    `do_sample=True` samples with `temperature` and nucleus `top_p` (Holtzman et al. 2020). It
    stops at the tokenizer's EOS / end-of-turn token, or at `max_length` tokens (prompt + reply,
    as `max_length` in transformers' `generate`), or after `max_new_tokens` new tokens if set.

    Args:
        template: "chat", "alpaca", "plain", or None (set by `FineTuner` from its preprocessor).
        do_sample, temperature, top_p, repetition_penalty: decoding settings (transformers names).
        max_new_tokens: cap on generated tokens (None: only `max_length` applies).

    Raises (on generate):
        ValueError: `prompt_text` is not a non-empty string or list of chat turns, or
            `max_length` leaves no room after the prompt.
    """

    def __init__(self, template: str | None = None, do_sample: bool = False, temperature: float = 1.0,
                 top_p: float = 1.0, repetition_penalty: float = 1.0, max_new_tokens: int | None = None) -> None:
        self.template, self.do_sample, self.temperature = template, do_sample, temperature
        self.top_p, self.repetition_penalty, self.max_new_tokens = top_p, repetition_penalty, max_new_tokens

    def generate(self, prompt_text, model, tokenizer, device: str, max_length: int) -> str:
        """The reply to `prompt_text` (see the class docstring); the prompt is not repeated."""
        if not prompt_text or not isinstance(prompt_text, (str, list)):
            raise ValueError(f"prompt_text: expected a non-empty string (or a list of chat turns), got {prompt_text!r}")
        template = self.template or "plain"
        text = render_prompt(prompt_text, tokenizer, template)
        encoded = tokenizer(text, return_tensors="pt", add_special_tokens=adds_special_tokens(template))
        encoded = {k: v.to(device) for k, v in encoded.items() if k in ("input_ids", "attention_mask")}
        is_seq2seq = getattr(model.config, "is_encoder_decoder", False)
        prompt_len = 0 if is_seq2seq else encoded["input_ids"].shape[1]
        budget = max_length - prompt_len
        if budget < 1:
            raise ValueError(f"max_length: {max_length} tokens leave no room for a reply after the "
                             f"{prompt_len}-token prompt; pass a larger max_length")
        new_tokens = min(budget, self.max_new_tokens) if self.max_new_tokens else budget
        settings = {"max_new_tokens": new_tokens, "do_sample": self.do_sample,
                    "repetition_penalty": self.repetition_penalty, "pad_token_id": tokenizer.pad_token_id}
        if self.do_sample:
            settings.update(temperature=self.temperature, top_p=self.top_p)
        else:  # greedy: clear sampling defaults a generation_config may carry, to avoid warnings
            settings.update(temperature=None, top_p=None, top_k=None)
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                out = model.generate(**encoded, **settings)
        finally:
            model.train(was_training)
        reply = out[0] if is_seq2seq else out[0, prompt_len:]
        return tokenizer.decode(reply, skip_special_tokens=True).strip()
