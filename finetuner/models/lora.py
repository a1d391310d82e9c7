"""Merge a saved LoRA adapter into its base model and write a plain model folder."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..io import atomic_dir
from . import lm as models


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

    from ..llm.tuner import _bnb_from_dict, read_meta

    meta = read_meta(adapter_dir)
    resolved = models.resolve_model(meta["base_model"] if Path(meta["base_model"]).exists() else meta["model_id"])
    tokenizer = models.load_tokenizer(resolved)
    bnb = _bnb_from_dict(meta["quantization_config"]) if meta.get("quantization_config") else None
    base = models.load_model(resolved, meta["task_type"], tokenizer, bnb, "cpu")
    if bnb is not None:
        with models.quiet_transformers():
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
