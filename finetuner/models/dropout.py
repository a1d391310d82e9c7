"""Dropout with a cheaper random mask, and the swap that puts it into a model for training.

Same semantics as `torch.nn.Dropout`; only the way the mask is drawn differs (see `FastDropout`).
The training recipes swap it into the models they train (LoRA adapters, text encoders and
classifiers), where `bernoulli_` was a measured share of a CPU step. `set_attention_dropout`
turns off the dropout of attention probabilities, so attention runs in SDPA's fused kernel.
"""

from __future__ import annotations

import torch

ATTENTION = "sdpa_no_dropout"  # the attention implementation name `sdpa_no_dropout` gets in transformers


class FastDropout(torch.nn.Dropout):
    """Inverted dropout (Srivastava et al. 2014) with a cheaper mask: zero each element with
    probability `p` and scale the rest by 1 / (1 - p), like `nn.Dropout`, drawing the mask from
    31 random bits per element of a bulk `random_()` call rather than `bernoulli_`.

    On the CPU, `bernoulli_` draws one value at a time: for LoRA's input dropout on two adapted
    projections per layer it took 7.6% of a SmolLM2 LoRA step (profiled); the bulk integer draw
    takes a fraction of that. The keep probability is 1 - round(p * 2^31) / 2^31 (within 5e-10
    of 1 - p). Uses torch's default generator, so `torch.manual_seed` and checkpointed RNG state
    make it reproducible. A subclass of `nn.Dropout`, so code that finds a model's dropouts with
    `isinstance(m, nn.Dropout)` (to set `p`, say) still finds and controls it.

    Args:
        p: drop probability in [0, 1).

    Inputs / outputs: any float tensor; the same shape and dtype.
    """

    def __init__(self, p: float) -> None:
        if not 0 <= p < 1:
            raise ValueError(f"p: expected a drop probability in [0, 1), got {p!r}")
        super().__init__(float(p))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        if not self.training or self.p == 0:
            return x
        n = x.numel()
        bits = torch.empty((n + 1) // 2, dtype=torch.int64, device=x.device).random_()
        bits = bits.view(torch.int32)[:n].view(x.shape) & 0x7FFFFFFF  # 31 uniform bits per element
        keep = bits >= round(self.p * 2 ** 31)
        return x * keep * (1.0 / (1.0 - self.p))


def use_fast_dropout(model: torch.nn.Module) -> int:
    """Replace every `torch.nn.Dropout` of `model` with p > 0 (in any sub-module, peft's
    `lora_dropout` dicts included) by a `FastDropout` of the same probability, in place; return
    how many were replaced. Modules that read only the dropout's `p` (attention layers passing it
    to `scaled_dot_product_attention`) keep working: `FastDropout` has the same `p`.

    Profiled on the CPU: MiniLM fine-tuning spent 19% of a step in `bernoulli_` (hidden and
    attention dropout, p = 0.1), a SmolLM2 LoRA step 7.6% (LoRA's input dropout).
    """
    replaced = 0
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if type(child) is torch.nn.Dropout and child.p > 0:
                setattr(module, name, FastDropout(child.p))
                replaced += 1
    return replaced


def sdpa_no_dropout(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                    attention_mask: torch.Tensor | None, dropout: float = 0.0, **kwargs):
    """transformers' "sdpa" attention function with the attention-probability dropout left out
    (a function for `transformers.AttentionInterface`; the arguments and the result are those of
    `transformers.integrations.sdpa_attention.sdpa_attention_forward`, `dropout` is ignored).

    Why: PyTorch's fused CPU attention kernel (flash attention, Dao et al., 2022) has no dropout;
    with dropout on, `scaled_dot_product_attention` falls back to its math kernel, which builds,
    drops and differentiates every [heads, L, L] score. Profiled on 2 CPU cores, a MiniLM training
    step on 32 texts of 256 tokens took 7.0 s with attention dropout (p = 0.1), 3.1 s without.
    """
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=0.0, **kwargs)


def check_attention_dropout(attention_dropout: object, *, allow_auto: bool = False) -> None:
    """Refuse a recipe's `attention_dropout` setting unless it is a bool (or "auto" where the
    recipe decides from its data, `allow_auto`).

    Raises:
        ValueError: naming the argument and the value given (checked before any loading)."""
    if not (isinstance(attention_dropout, bool) or (allow_auto and attention_dropout == "auto")):
        expected = 'True, False or "auto"' if allow_auto else "True or False"
        raise ValueError(f"attention_dropout: expected {expected}, got {attention_dropout!r}")


def set_attention_dropout(model: torch.nn.Module, keep: bool) -> int:
    """Turn the dropout of attention probabilities of every transformers model inside `model`
    off (`keep=False`: "sdpa" attention becomes `sdpa_no_dropout`) or back on (`keep=True`:
    `sdpa_no_dropout` becomes "sdpa"), in place; return how many models were switched (0
    without transformers). Models with another attention implementation are left alone.

    The hidden-state dropouts stay. Evaluation is unchanged (dropout is off there anyway), and
    transformers does not save the attention implementation, so a saved model loads as usual.
    """
    try:
        from transformers import PreTrainedModel
        from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS
        from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
    except ImportError:  # torch-only models
        return 0
    if ATTENTION not in ALL_ATTENTION_FUNCTIONS:
        ALL_ATTENTION_FUNCTIONS.register(ATTENTION, sdpa_no_dropout)
        ALL_MASK_ATTENTION_FUNCTIONS.register(ATTENTION, ALL_MASK_ATTENTION_FUNCTIONS["sdpa"])  # sdpa's masks
    old, new = (ATTENTION, "sdpa") if keep else ("sdpa", ATTENTION)
    switched = 0
    for module in model.modules():
        if isinstance(module, PreTrainedModel) and getattr(module.config, "_attn_implementation", None) == old:
            module.set_attn_implementation(new)
            switched += module.config._attn_implementation == new  # models without the interface stay
    return switched
