"""`FineTuner`: LoRA / QLoRA fine-tuning of a causal or sequence-to-sequence language model on
instruction data, with one class: construct, `preprocess_data()`, `train()`, `generate()`.

The facade of the seed document: it checks the arguments, loads the model (`finetuner.models.lm`)
and adds LoRA (`finetuner.models.lora`), tokenizes with its preprocessor, trains with the llm
recipe (`finetuner.recipes.llm`), generates with its inference handler, and saves / loads the
adapter folder.
"""

from __future__ import annotations

import copy
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Sequence

import torch

from ..data.instructions import detect_format
from ..engine.precision import resolve_precision
from ..io import atomic_files
from ..models import lm as models
from ..models import lora
from ..models.lm import META_FILE, read_meta
from ..recipes.llm import evaluate_lm, fit_llm
from ..recipes.result import FitResult
from ..report.llm_page import write_llm_report
from .config import TrainerConfig
from .data import load_instructions
from .generations import side_by_side
from .inference import DefaultInferenceHandler, InferenceHandler
from .preprocess import DefaultPreprocessor, Preprocessor
from .templates import resolve_template

FORMAT_VERSION = 1


def _instance(value: Any, default_cls: type, name: str, method: str):
    """`value` if it is a usable instance, a default instance for None; a clear error for a
    class passed where an instance is expected (the original API's default trainer config bug)."""
    if value is None:
        return default_cls()
    if isinstance(value, type):
        raise TypeError(f"{name}: expected an instance, got the class {value.__name__}; pass {value.__name__}(...) instead")
    if not callable(getattr(value, method, None)):
        raise TypeError(f"{name}: expected an object with a {method}() method, got {type(value).__name__}")
    return value


def _check_device(device: str | None) -> str:
    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if not isinstance(device, str) or device.split(":")[0] not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device: expected 'cpu', 'cuda', 'cuda:N', 'mps' or None (auto), got {device!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device: {device!r} was asked for but no CUDA device is available; "
                         "pass device='cpu' or device=None")
    return device


class FineTuner:
    """Fine-tune a pretrained language model with LoRA (Hu et al. 2021, "LoRA: Low-Rank Adaptation
    of Large Language Models") or QLoRA (Dettmers et al. 2023: a frozen 4-bit NF4 base with
    LoRA adapters on top) on instruction data, and generate with it.

    LoRA freezes each targeted weight W (d_out x d_in) and learns a low-rank update:
    W' = W + (lora_alpha / lora_r) * B A, with A (lora_r x d_in), B (d_out x lora_r), B = 0 at
    the start (so the tuned model starts exactly as the pretrained one).

    Training is the llm recipe (`finetuner.recipes.llm.fit_llm`) on finetuner's engine
    (accelerate): bf16 autocast where the CPU/GPU has native bf16 matmuls, length-grouped batches
    (or packing), loss only on the response tokens, logits only where a label is, checkpoints of
    the adapter. Everything is validated in the constructor, before any long work.

    Args:
        model_id: a local model folder, a `.gguf` file (or a folder holding one), an alias of a
            model installed as a package ("smollm2": SmolLM2-135M-Instruct; "minilm":
            all-MiniLM-L6-v2, warm-started as an encoder-decoder), or a Hugging Face hub id found
            in the local cache or downloadable.
        device: "cpu", "cuda", "cuda:N", "mps"; None: CUDA if available, else CPU.
        dataset_name: training data: a JSON / JSONL / CSV / Parquet file, a `datasets.Dataset`,
            a list of dicts, a DataFrame, or a toy-data name ("lima", "selfinstruct"). Formats:
            chat `messages`, alpaca (`instruction`, `input`, `output`, `history`),
            `prompt`/`completion`, or `text` (see `finetuner.data.instructions`). None: no training data
            (generation only). Toy-data names are resolved by `finetuner.llm.data`.
        lora_r: rank of the LoRA update (int >= 1).
        lora_alpha: LoRA scaling numerator: the update is scaled by lora_alpha / lora_r (> 0).
        lora_target_modules: names of the linear layers to adapt; None picks the architecture's
            attention query/value projections (e.g. q_proj/v_proj for Llama, query/value for BERT).
        lora_bias: "none", "all" or "lora_only": which biases are trained too.
        preprocessor: a `Preprocessor` instance (default `DefaultPreprocessor()`: chat template,
            completion-only labels, truncation to `max_length`).
        lora_task_type: peft `TaskType.CAUSAL_LM` / `TaskType.SEQ_2_SEQ_LM` (or their names);
            None infers it from the architecture.
        max_length: longest training sequence in tokens, and the default generation length
            (prompt + reply); at most the model's context length.
        quantize: False; True or "4bit": QLoRA, NF4 weights with double quantization, bf16
            compute where supported; "8bit" / "int8": LLM.int8() weights.
        quantization_config: a dict of `transformers.BitsAndBytesConfig` arguments (or the
            object) used instead of the `quantize` presets; implies quantization.
        trainer_config: a `TrainerConfig` instance (batch size, learning rate, epochs, output_dir,
            save_steps, save_total_limit, precision, packing, ...); default `TrainerConfig()`.
        inference_handler: an `InferenceHandler` instance (default `DefaultInferenceHandler()`:
            greedy decoding, prompt rendered as in training).
        lora_dropout: dropout on the LoRA input, in [0, 1).
        modules_to_save: modules trained in full besides LoRA (None: for an encoder-decoder
            warm-started from an encoder, its new cross-attention and LM-head transform).
        eval_dataset: held-out data in any `dataset_name` form: loss and perplexity before and
            after training, and after each epoch.
        data_dir: folder of the toy-data files (default env FINETUNER_DATA, else download cache).
        adapter_path: a folder written by `train`/`save`: start from that adapter instead of a
            fresh one (what `FineTuner.load` uses).
        seed: seed of the LoRA initialisation.

    Raises:
        ValueError: any bad argument, before the model weights are loaded: unknown device or
            CUDA missing, bad LoRA settings, `max_length` beyond the model's context, a model id
            that is neither local nor reachable (the message says the machine looks offline and
            how to pass a path), target modules the model does not have (listing its linear
            layers), a dataset without the expected columns (naming them).
        TypeError: a class passed where an instance is expected (trainer_config, preprocessor,
            inference_handler).
    """

    def __init__(self, model_id: str, device: str | None = None, dataset_name: Any = None, lora_r: int = 16,
                 lora_alpha: float = 32, lora_target_modules: Sequence[str] | None = None, lora_bias: str = "none",
                 preprocessor: Preprocessor | None = None, lora_task_type: Any = None, max_length: int = 1000,
                 quantize: bool | str = False, quantization_config: dict | Any = None,
                 trainer_config: TrainerConfig | None = None, inference_handler: InferenceHandler | None = None,
                 *, lora_dropout: float = 0.05, modules_to_save: Sequence[str] | None = None,
                 eval_dataset: Any = None, data_dir: str | os.PathLike | None = None,
                 adapter_path: str | os.PathLike | None = None, seed: int = 42) -> None:
        # ---- cheap checks first --------------------------------------------------------------
        self.device = _check_device(device)
        if isinstance(lora_r, bool) or not isinstance(lora_r, int) or lora_r < 1:
            raise ValueError(f"lora_r: expected an int >= 1, got {lora_r!r}")
        if isinstance(lora_alpha, bool) or not isinstance(lora_alpha, (int, float)) or lora_alpha <= 0:
            raise ValueError(f"lora_alpha: expected a number > 0, got {lora_alpha!r}")
        if lora_bias not in lora.LORA_BIASES:
            raise ValueError(f"lora_bias: expected one of {lora.LORA_BIASES}, got {lora_bias!r}")
        if not isinstance(lora_dropout, (int, float)) or not 0 <= lora_dropout < 1:
            raise ValueError(f"lora_dropout: expected a number in [0, 1), got {lora_dropout!r}")
        if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 8:
            raise ValueError(f"max_length: expected an int >= 8 (tokens), got {max_length!r}")
        if isinstance(trainer_config, dict):
            trainer_config = TrainerConfig(**trainer_config)
        self.trainer_config = _instance(trainer_config, TrainerConfig, "trainer_config", "validate").validate()
        self.preprocessor = _instance(preprocessor, DefaultPreprocessor, "preprocessor", "__call__")
        self.inference_handler = _instance(inference_handler, DefaultInferenceHandler, "inference_handler", "generate")
        self._auto_template = getattr(self.inference_handler, "template", None) is None
        if self._auto_template:  # we set its template to the training data's: work on our own copy
            self.inference_handler = copy.copy(self.inference_handler)
        self.bnb_config = models.quantization_settings(quantize, quantization_config, self.device)
        self.quantize = quantize if self.bnb_config is not None else False
        self.max_length, self.seed, self.data_dir = max_length, seed, data_dir

        # ---- the model's config and the data, still before any weights -----------------------
        self.resolved = models.resolve_model(model_id)
        self.model_id = str(model_id)
        self.task_type = models.infer_task_type(self.resolved, lora_task_type)
        limit = models.context_length(self.resolved.config)
        if limit is not None and max_length > limit:
            raise ValueError(f"max_length: {max_length} exceeds the model's context of {limit} tokens "
                             f"({self.resolved.config.model_type}); pass max_length <= {limit}")
        self.dataset = load_instructions(dataset_name, data_dir) if dataset_name is not None else None
        self.eval_dataset = (load_instructions(eval_dataset, data_dir, "eval_dataset") if eval_dataset is not None
                             else None)
        for name, ds in (("dataset_name", self.dataset), ("eval_dataset", self.eval_dataset)):
            if ds is not None:
                detect_format(ds.column_names, name)
        self.tokenized_dataset = self._tokenized_eval = None

        # ---- weights, then LoRA -------------------------------------------------------------
        self.tokenizer = models.load_tokenizer(self.resolved)
        base = models.load_model(self.resolved, self.task_type, self.tokenizer, self.bnb_config, self.device)
        if modules_to_save is None and self.resolved.warm_start:
            modules_to_save = ["crossattention", "transform"]  # freshly initialised by the warm start
        self.model = lora.add_lora(base, self.resolved.config, r=lora_r, alpha=lora_alpha, targets=lora_target_modules,
                                   bias=lora_bias, dropout=lora_dropout, task_type=self.task_type,
                                   modules_to_save=modules_to_save, quantized=self.bnb_config is not None,
                                   adapter_path=adapter_path, seed=seed)
        self.lora_config = self.model.peft_config["default"]
        if (dtype := self.trainer_config.training_base_dtype(self.device, self.bnb_config is not None)) is not None:
            lora.frozen_base_to(self.model, dtype)  # bf16 training: a bf16 base from the start, loaded tuners too
        self.output_dir: str | None = None
        if self._auto_template:
            self.inference_handler.template = self._default_template()

    # ---- construction helpers ----------------------------------------------------------------
    def _default_template(self) -> str:
        if self.task_type != models.CAUSAL:
            return "plain"
        if self.tokenized_dataset is not None:
            return self.preprocessor.template
        if self.dataset is not None:
            return resolve_template(getattr(self.preprocessor, "template_arg", "auto"), self.tokenizer,
                                    detect_format(self.dataset.column_names))
        return "chat" if getattr(self.tokenizer, "chat_template", None) else "plain"

    # ---- the documented API ------------------------------------------------------------------
    def preprocess_data(self):
        """Tokenize the training data with the preprocessor.

        Returns:
            `datasets.Dataset` with `input_ids` and `labels` (-100 where no loss is taken), one row
            per kept example (also kept as `self.tokenized_dataset`).

        Raises:
            ValueError: no training data (`dataset_name` was None), no known format, or nothing
                left after truncation.
        """
        if self.dataset is None:
            raise ValueError("dataset_name: no training data was given to FineTuner; pass dataset_name=...")
        self.tokenized_dataset = self.preprocessor(self.dataset, self.tokenizer, self.max_length, self.task_type)
        if self._auto_template:
            self.inference_handler.template = self.preprocessor.template
        return self.tokenized_dataset

    def _eval_tokens(self, dataset=None):
        if dataset is None:
            if self.eval_dataset is None:
                return None
            if self._tokenized_eval is None:
                self._tokenized_eval = copy.copy(self.preprocessor)(self.eval_dataset, self.tokenizer,
                                                                     self.max_length, self.task_type)
            return self._tokenized_eval
        return copy.copy(self.preprocessor)(load_instructions(dataset, self.data_dir, "dataset"), self.tokenizer,
                                            self.max_length, self.task_type)

    def evaluate(self, dataset: Any = None) -> dict:
        """Held-out loss and perplexity of the current model on the response tokens.

        Args:
            dataset: any `dataset_name` form; None uses `eval_dataset`.

        Returns:
            {"eval_loss": mean negative log-likelihood per response token (nats),
             "perplexity": exp(eval_loss), "eval_tokens": response tokens scored}.

        Raises:
            ValueError: no dataset given and no `eval_dataset`.
        """
        tokens = self._eval_tokens(dataset)
        if tokens is None:
            raise ValueError("dataset: no evaluation data; pass one or set eval_dataset= in FineTuner")
        cfg = self.trainer_config
        return evaluate_lm(self.model, tokens, self.tokenizer, self.task_type, batch_size=cfg.per_device_eval_batch_size,
                           device=self.device, precision=resolve_precision(cfg.precision, self.device))

    def train(self, output_dir: str | os.PathLike | None = None, num_train_epochs: int | None = None, *,
              resume_from_checkpoint: bool | str | None = None, callbacks: Sequence = ()) -> FitResult:
        """Fine-tune the LoRA adapter on the training data, then save adapter and tokenizer.

        Args:
            output_dir: where the adapter, tokenizer, `finetuner_llm.json`, `metrics.json`,
                `metrics.csv`, `report.html` (held-out metrics, replies of the base and the tuned
                model side by side) and checkpoints go; default `trainer_config.output_dir`.
            num_train_epochs: default `trainer_config.num_train_epochs`.
            resume_from_checkpoint: True (the newest checkpoint in output_dir) or a path.
            callbacks: extra `finetuner.engine.callbacks.Callback`s.

        Returns:
            `FitResult`: the model, per-epoch history (train_loss, train_tokens_per_s, eval_loss,
            perplexity), held-out metrics before / after (with `eval_dataset`), output_dir.

        Raises:
            ValueError: no output_dir anywhere, a bad epoch count, no training data, packing for a
                model whose attention cannot keep packed examples apart.
            FileNotFoundError: `resume_from_checkpoint=True` and no checkpoint.
            FloatingPointError: the loss became NaN or infinite.
        """
        cfg = self.trainer_config
        output_dir = output_dir or cfg.output_dir
        if not output_dir:
            raise ValueError("output_dir: pass train(output_dir=...) or set TrainerConfig(output_dir=...); "
                             "the tuned adapter is saved there")
        epochs = num_train_epochs if num_train_epochs is not None else cfg.num_train_epochs
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
            raise ValueError(f"num_train_epochs: expected an int >= 1, got {epochs!r}")
        args = cfg.to_train_args(device=self.device, epochs=epochs, output_dir=str(output_dir),
                                 resume=resume_from_checkpoint, callbacks=callbacks)
        tokenized = self.tokenized_dataset if self.tokenized_dataset is not None else self.preprocess_data()
        lora.use_fast_dropout(self.model)
        peft_config = self.model.peft_config["default"]
        settings = {"model_id": self.model_id, "task_type": self.task_type, "quantize": self._quant_name(),
                    "max_length": self.max_length, "lora_r": peft_config.r, "lora_alpha": peft_config.lora_alpha,
                    "target_modules": sorted(peft_config.target_modules),
                    **{k: getattr(cfg, k) for k in ("per_device_train_batch_size", "learning_rate", "packing",
                                                    "gradient_accumulation_steps")},
                    "base_dtype": str(next(p.dtype for p in self.model.parameters() if not p.requires_grad)),
                    "preprocess": dict(self.preprocessor.stats)}

        def save(model: torch.nn.Module, folder: Path) -> None:
            self.model = model
            self.save(folder)

        eval_tokens = self._eval_tokens()

        def write_report(folder: Path, result: FitResult) -> Path:
            rows = (side_by_side(result.model, self.tokenizer, eval_tokens, task_type=self.task_type,
                                 count=cfg.report_generations, device=self.device)
                    if eval_tokens is not None and cfg.report_generations else [])
            return write_llm_report(folder, result, rows)

        result = fit_llm(self.model, self.tokenizer, tokenized, eval_tokens, args=args, write_report=write_report,
                         task_type=self.task_type, max_length=self.max_length, packing=cfg.packing,
                         group_by_length=cfg.group_by_length, eval_each_epoch=cfg.eval_strategy == "epoch",
                         loggers=tuple(cfg.report_to or ()), save=save, settings=settings,
                         build_optimizer=cfg.build_optimizer if cfg.overrides("build_optimizer") else None,
                         build_scheduler=cfg.build_scheduler if cfg.overrides("build_scheduler") else None)
        self.model = result.model
        return result

    def generate(self, prompt_text: str, max_length: int | None = None) -> str:
        """Generate a reply to `prompt_text` with the inference handler.

        Args:
            prompt_text: the user's message (rendered with the template the model was tuned with),
                or a list of chat turns `[{"role", "content"}, ...]`.
            max_length: most tokens of prompt + reply; default `self.max_length`.

        Returns:
            The generated text only (the prompt is not repeated), special tokens removed.
        """
        with lora.base_autocast(self.model, self.device):
            return self.inference_handler.generate(prompt_text, model=self.model, tokenizer=self.tokenizer,
                                                   device=self.device, max_length=max_length or self.max_length)

    def __call__(self, prompt_text: str, max_length: int | None = None) -> str:
        """Same as `generate`."""
        return self.generate(prompt_text, max_length)

    # ---- saving, loading, merging --------------------------------------------------------------
    def _quant_name(self) -> str | None:
        if self.bnb_config is not None:
            return "4bit" if getattr(self.bnb_config, "load_in_4bit", False) else "8bit"

    def save(self, output_dir: str | os.PathLike) -> Path:
        """Save the adapter (LoRA weights and modules trained in full, not the frozen base), the
        tokenizer and `finetuner_llm.json` (how to rebuild the base) into `output_dir`.

        The files are written to a temporary folder and moved in place (`finetuner.io.atomic_files`);
        `finetuner_llm.json` is removed first and moved last, so a folder that has it is complete.
        Other files in `output_dir` (checkpoints, logs, metrics) are kept.
        """
        output_dir = Path(output_dir)
        meta = {"format_version": FORMAT_VERSION, "kind": "llm-adapter", "model_id": self.model_id,
                "base_model": self.resolved.path, "warm_start": self.resolved.warm_start,
                "task_type": self.task_type, "quantize": self._quant_name(),
                "quantization_config": self.bnb_config.to_dict() if self.bnb_config is not None else None,
                "max_length": self.max_length, "template": self.inference_handler.template}
        with atomic_files(output_dir, last=(META_FILE,)) as tmp:
            self.model.save_pretrained(str(tmp))
            self.tokenizer.save_pretrained(str(tmp))
            (tmp / META_FILE).write_text(json.dumps(meta, indent=2, default=str))
        self.output_dir = str(output_dir)
        return output_dir

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | None = None, quantize: bool | str | None = None,
             **kwargs: Any) -> "FineTuner":
        """Rebuild a tuned `FineTuner` from a folder written by `train` / `save`.

        Args:
            path: the folder.
            device: as in the constructor.
            quantize: None keeps the quantization the adapter was trained with.
            kwargs: other constructor arguments (dataset_name, trainer_config, ...).

        Raises:
            FileNotFoundError: `path` has no `finetuner_llm.json`.
        """
        meta = read_meta(path)
        base = meta["base_model"] if Path(meta["base_model"]).exists() else meta["model_id"]
        qconfig = None
        if quantize is None and meta.get("quantization_config"):
            qconfig = models.bnb_from_dict(meta["quantization_config"])
        tuner = cls(base, device=device, lora_task_type=meta["task_type"], max_length=meta["max_length"],
                    quantize=bool(qconfig) if quantize is None else quantize, quantization_config=qconfig,
                    adapter_path=path, **kwargs)
        if tuner._auto_template and meta.get("template"):
            tuner.inference_handler.template = meta["template"]
        return tuner

    from_pretrained = load

    def merge(self, output_dir: str | os.PathLike, dtype: torch.dtype = torch.float32) -> Path:
        """Write a plain model with the adapter merged into the weights (see `finetuner.models.lora`).

        The adapter is saved first to a temporary folder if this tuner has not been saved.
        """
        if self.output_dir and (Path(self.output_dir) / META_FILE).is_file():
            self.save(self.output_dir)
            return lora.merge(self.output_dir, output_dir, dtype=dtype)
        with tempfile.TemporaryDirectory() as tmp:
            self.save(tmp)
            self.output_dir = None
            return lora.merge(tmp, output_dir, dtype=dtype)
