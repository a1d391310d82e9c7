"""How a conversation becomes text: the tokenizer's chat template, or an Alpaca-style prompt for
tokenizers without one. Training and generation share these functions, so the model is asked
at generation time exactly the way it was taught.

Templates:
- "chat": `tokenizer.apply_chat_template` (the model's own turn markers and end-of-turn token);
- "alpaca": "### Instruction:\\n...\\n\\n### Response:\\n" (Taori et al. 2023, Stanford Alpaca),
  each reply followed by the tokenizer's EOS token;
- "plain": the prompt as given (prompt / completion data, raw text).
"""

from __future__ import annotations

TEMPLATES = ("chat", "alpaca", "plain")
_ALPACA_USER = "### Instruction:\n{content}\n\n### Response:\n"


def resolve_template(template: str | None, tokenizer, fmt: str) -> str:
    """The template to use: `template` if given ("auto"/None: "chat" when the tokenizer has a chat
    template, else "alpaca", for chat-like formats; "plain" for prompt/completion and text).

    Raises:
        ValueError: an unknown template, or "chat" for a tokenizer that has no chat template.
    """
    if template in (None, "auto"):
        if fmt in ("prompt_completion", "text"):
            return "plain"
        return "chat" if getattr(tokenizer, "chat_template", None) else "alpaca"
    if template not in TEMPLATES:
        raise ValueError(f"template: expected one of {TEMPLATES} or 'auto', got {template!r}")
    if template == "chat" and not getattr(tokenizer, "chat_template", None):
        raise ValueError("template: 'chat' was asked for but the tokenizer has no chat template; use 'alpaca' or 'auto'")
    return template


def _chat(tokenizer, messages: list[dict], add_generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)


def render_conversation(messages: list[dict], tokenizer, template: str) -> tuple[str, list[tuple[int, int]]]:
    """The full text of a conversation and the character spans of the assistant turns (what the
    model learns to write), end-of-turn marker included.

    With "chat", each assistant turn's span runs from the end of the text rendered up to its
    generation prompt to the end of the text rendered through that turn, so the span covers
    exactly what the model must produce, including the template's end-of-turn token. "alpaca"
    joins turns as Instruction / Response blocks, each reply followed by the EOS token.

    Raises:
        ValueError: a template that does not render turn by turn consistently (the message names it).
    """
    if template == "chat":
        full = _chat(tokenizer, messages, add_generation_prompt=False)
        spans = []
        for k, turn in enumerate(messages):
            if turn["role"] != "assistant":
                continue
            start = len(_chat(tokenizer, messages[:k], add_generation_prompt=True))
            through = _chat(tokenizer, messages[: k + 1], add_generation_prompt=False)
            if not full.startswith(through) or start > len(through):
                # templates that rewrite earlier turns (e.g. drop reasoning): find the reply itself
                at = full.find(turn["content"])
                if at < 0:
                    raise ValueError("template: the tokenizer's chat template does not render assistant turns "
                                     "as given; use template='alpaca'")
                start, through = at, full[: at + len(turn["content"])]
            spans.append((start, len(through)))
        return full, spans
    if template == "alpaca":
        eos = tokenizer.eos_token or ""
        text, spans = "", []
        for turn in messages:
            if turn["role"] == "assistant":
                spans.append((len(text), len(text) + len(turn["content"]) + len(eos)))
                text += turn["content"] + eos + "\n\n"
            elif turn["role"] == "user":
                text += _ALPACA_USER.format(content=turn["content"])
            else:  # system
                text += turn["content"] + "\n\n"
        return text[: spans[-1][1]] if spans else text, spans
    raise ValueError(f"template: {template!r} does not render chat turns; expected 'chat' or 'alpaca'")


def render_prompt(prompt: str | list[dict], tokenizer, template: str) -> str:
    """The text that asks the model for a reply to `prompt` (a user message, or earlier turns as
    `[{"role", "content"}, ...]` ending with a user turn), in `template`."""
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
    if template == "chat":
        return _chat(tokenizer, messages, add_generation_prompt=True)
    if template == "alpaca":
        text = ""
        for turn in messages:
            if turn["role"] == "assistant":
                text += turn["content"] + "\n\n"
            elif turn["role"] == "user":
                text += _ALPACA_USER.format(content=turn["content"])
            else:
                text += turn["content"] + "\n\n"
        return text
    if not isinstance(prompt, str):
        return "\n".join(t["content"] for t in messages)
    return prompt


def adds_special_tokens(template: str) -> bool:
    """Whether tokenizing text of this template should add the tokenizer's special tokens (BOS):
    a chat template writes its own, the others do not."""
    return template != "chat"
