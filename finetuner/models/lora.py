"""LoRA on a pretrained language model: which layers it adapts, adding the adapter (fresh or
saved), and merging a saved adapter into its base for a plain model folder.

LoRA (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models") freezes each
targeted weight W (d_out x d_in) and learns a low-rank update W' = W + (lora_alpha / r) * B A,
with A (r x d_in), B (d_out x r) and B = 0 at the start, so the tuned model starts exactly as
the pretrained one. QLoRA (Dettmers et al. 2023) does the same on a frozen 4-bit NF4 base.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import torch

from ..io import atomic_dir
from . import lm
from .dropout import use_fast_dropout  # noqa: F401  (FineTuner swaps LoRA's dropout through this module)
from .hf import quiet_transformers

LORA_BIASES = ("none", "all", "lora_only")


def linear_layer_names(model: torch.nn.Module) -> list[str]:
    """The distinct last-name parts of the model's linear layers (nn.Linear, bitsandbytes
    Linear4bit / Linear8bitLt, GPT-2's Conv1D): the names LoRA can target."""
    return sorted({name.rsplit(".", 1)[-1] for name in _linear_modules(model)})


def _linear_modules(model: torch.nn.Module) -> list[str]:
    kinds = ("Linear4bit", "Linear8bitLt", "Conv1D")
    return [n for n, m in model.named_modules() if n and (isinstance(m, torch.nn.Linear) or type(m).__name__ in kinds)]


def default_target_modules(model: torch.nn.Module, config: Any) -> list[str]:
    """LoRA target modules for the architecture: peft's per-architecture defaults (the attention
    query and value projections, as in Hu et al. 2021), else every linear layer but the output head.

    For an encoder-decoder built from two configs, the encoder's architecture decides.
    """
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as DEFAULTS

    model_type = config.model_type
    if model_type == "encoder-decoder":
        model_type = config.encoder.model_type
    targets = DEFAULTS.get(model_type)
    if targets:
        return list(targets)
    head = {"lm_head", "embed_out", "output", "decoder"}
    return [n for n in linear_layer_names(model) if n not in head]


def check_target_modules(model: torch.nn.Module, targets: Any) -> list[str]:
    """Validate `lora_target_modules` against the model's linear layers.

    Raises:
        ValueError: a name matches no linear layer (the message lists those the model has), or
            `targets` is not a list of strings.
    """
    if isinstance(targets, str):
        targets = [targets]
    if not isinstance(targets, (list, tuple, set)) or not all(isinstance(t, str) for t in targets) or not targets:
        raise ValueError(f"lora_target_modules: expected a non-empty list of module names or None, got {targets!r}")
    available = linear_layer_names(model)
    linear = _linear_modules(model)
    missing = [t for t in targets if not any(n == t or n.endswith("." + t) for n in linear)]
    if missing:
        raise ValueError(f"lora_target_modules: {missing} match no layer of this {type(model).__name__}; "
                         f"its linear layers are {available}")
    return list(targets)


def add_lora(base: torch.nn.Module, config: Any, *, r: int = 16, alpha: float = 32, targets: Sequence[str] | None = None,
             bias: str = "none", dropout: float = 0.05, task_type: str = lm.CAUSAL,
             modules_to_save: Sequence[str] | None = None, quantized: bool = False,
             adapter_path: str | os.PathLike | None = None, seed: int = 42):
    """The peft model: `base` with a fresh LoRA adapter, or with the adapter saved in `adapter_path`.

    Args:
        base: the pretrained model (from `finetuner.models.lm.load_model`).
        config: its `PretrainedConfig` (picks the default target modules).
        r, alpha, dropout, bias: the LoRA rank, scaling numerator, input dropout and trained biases.
        targets: names of the linear layers to adapt; None: the architecture's defaults
            (`default_target_modules`).
        task_type: "CAUSAL_LM" or "SEQ_2_SEQ_LM".
        modules_to_save: modules trained in full besides LoRA.
        quantized: the base is 4-bit / 8-bit: fp32 norms and head, input gradients (peft's
            `prepare_model_for_kbit_training`), without gradient checkpointing.
        adapter_path: a folder holding a saved adapter to continue from (trainable).
        seed: seed of the LoRA initialisation.

    Raises:
        ValueError: target modules the model does not have (see `check_target_modules`).
    """
    from peft import LoraConfig, PeftModel, get_peft_model, prepare_model_for_kbit_training

    if quantized:
        # fp32 norms / head and input grads for a frozen k-bit base (Dettmers et al. 2023);
        # no gradient checkpointing: a small model fits, and recomputation costs a forward
        base = prepare_model_for_kbit_training(base, use_gradient_checkpointing=False)
    if adapter_path is not None:
        return PeftModel.from_pretrained(base, str(adapter_path), is_trainable=True)
    targets = default_target_modules(base, config) if targets is None else check_target_modules(base, targets)
    lora_config = LoraConfig(r=r, lora_alpha=alpha, target_modules=list(targets), lora_dropout=dropout, bias=bias,
                             task_type=task_type, modules_to_save=list(modules_to_save) if modules_to_save else None)
    torch.manual_seed(seed)
    return get_peft_model(base, lora_config)


def merge(adapter_dir: str | os.PathLike, output_dir: str | os.PathLike, dtype: torch.dtype = torch.float32) -> Path:
    """Fold the LoRA update into the base weights (W' = W + lora_alpha / r * B A) and save a
    plain transformers model that loads with `AutoModelForCausalLM.from_pretrained` (or
    `AutoModelForSeq2SeqLM` / `EncoderDecoderModel` for seq2seq), without peft.

    For a QLoRA adapter the base is loaded 4-bit (8-bit) exactly as in training and dequantized
    first, so the merged weights are the ones the adapter was trained against (merging into a
    4-bit layer would round the update away).

    Args:
        adapter_dir: a folder written by `FineTuner.train` / `save`.
        output_dir: the merged model's folder (replaced atomically, with the tokenizer).
        dtype: dtype of the saved weights (float32, bfloat16, float16).

    Returns:
        `output_dir` as a Path.

    Raises:
        FileNotFoundError: `adapter_dir` was not written by FineTuner.
    """
    from peft import PeftModel

    meta = lm.read_meta(adapter_dir)
    resolved = lm.resolve_model(meta["base_model"] if Path(meta["base_model"]).exists() else meta["model_id"])
    tokenizer = lm.load_tokenizer(resolved)
    bnb = lm.bnb_from_dict(meta["quantization_config"]) if meta.get("quantization_config") else None
    base = lm.load_model(resolved, meta["task_type"], tokenizer, bnb, "cpu")
    if bnb is not None:
        with quiet_transformers():
            base = base.dequantize()
    merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    merged = merged.to(dtype)
    if hasattr(merged.config, "quantization_config"):
        del merged.config.quantization_config
    merged.config.dtype = dtype
    with atomic_dir(output_dir) as tmp:
        merged.save_pretrained(str(tmp))
        tokenizer.padding_side = "left"
        tokenizer.save_pretrained(str(tmp))
    return Path(output_dir)


def frozen_base_to(model: torch.nn.Module, dtype: torch.dtype) -> int:
    """Store the frozen floating-point parameters of `model` (the base under LoRA) in `dtype`,
    in place; return how many parameters changed. Trainable parameters and buffers (rotary
    frequencies) keep their dtype.

    For bf16 training this removes the per-step casts of the fp32 base and halves its memory;
    the residual stream and norms then also run in bf16, which is what loading the base in bf16
    (`torch_dtype=torch.bfloat16`, the usual LoRA setting) does. The held-out loss is measured
    against fp32-weight autocast in `benchmarks/llm_vs_trainer_peft.py`.
    """
    changed = 0
    for param in model.parameters():
        if not param.requires_grad and param.is_floating_point() and param.dtype != dtype:
            param.data = param.data.to(dtype)
            changed += 1
    return changed


def base_autocast(model: torch.nn.Module, device: str):
    """A bf16 autocast context for running `model` when its frozen base is stored in bf16
    (`frozen_base_to`; its trained parts stay fp32, so layers mixing the two need autocast),
    else a no-op context."""
    import contextlib

    if any(p.dtype == torch.bfloat16 for p in model.parameters() if not p.requires_grad):
        return torch.autocast(str(device).split(":")[0], dtype=torch.bfloat16)
    return contextlib.nullcontext()
