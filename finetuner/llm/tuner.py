"""`FineTuner`: LoRA / QLoRA fine-tuning of a causal or sequence-to-sequence language model on
instruction data, with one class: construct, `preprocess_data()`, `train()`, `generate()`."""

from __future__ import annotations

import copy
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Sequence

import torch

from ..recipes.result import FitResult
from ..models import lm as models
from .config import TrainerConfig
from ..data.instructions import detect_format, load_dataset
from .inference import DefaultInferenceHandler, InferenceHandler
from .preprocess import DefaultPreprocessor, Preprocessor
from .templates import resolve_template

META_FILE = "finetuner_llm.json"
FORMAT_VERSION = 1
LORA_BIASES = ("none", "all", "lora_only")


def _instance(value: Any, default_cls: type, name: str, method: str):
    """`value` if it is a usable instance, a default instance for None; a clear error for a
    class passed where an instance is expected (the original API's default trainer config bug)."""
    if value is None:
        return default_cls()
    if isinstance(value, type):
        raise TypeError(f"{name}: expected an instance, got the class {value.__name__}; "
                        f"pass {value.__name__}(...) instead")
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

    Training runs through finetuner's engine (accelerate): bf16 autocast where the CPU/GPU has
    bf16 matmuls, length-grouped batches (or packing), loss only on the response tokens, logits
    only where a label is. Everything is validated in the constructor, before any long work.

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
            (generation only).
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
        if lora_bias not in LORA_BIASES:
            raise ValueError(f"lora_bias: expected one of {LORA_BIASES}, got {lora_bias!r}")
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
        self.dataset = load_dataset(dataset_name, data_dir) if dataset_name is not None else None
        self.eval_dataset = load_dataset(eval_dataset, data_dir, "eval_dataset") if eval_dataset is not None else None
        for name, ds in (("dataset_name", self.dataset), ("eval_dataset", self.eval_dataset)):
            if ds is not None:
                detect_format(ds.column_names, name)
        self.tokenized_dataset = self._tokenized_eval = None

        # ---- weights, then LoRA -------------------------------------------------------------
        self.tokenizer = models.load_tokenizer(self.resolved)
        base = models.load_model(self.resolved, self.task_type, self.tokenizer, self.bnb_config, self.device)
        if modules_to_save is None and self.resolved.warm_start:
            modules_to_save = ["crossattention", "transform"]  # freshly initialised by the warm start
        self.model = self._with_lora(base, adapter_path, lora_r, lora_alpha, lora_target_modules, lora_bias,
                                     lora_dropout, modules_to_save)
        self.output_dir: str | None = None
        if self._auto_template:
            self.inference_handler.template = self._default_template()

    # ---- construction helpers ----------------------------------------------------------------
    def _with_lora(self, base, adapter_path, r, alpha, targets, bias, dropout, modules_to_save):
        from peft import LoraConfig, PeftModel, get_peft_model, prepare_model_for_kbit_training

        if self.bnb_config is not None:
            # fp32 norms / head and input grads for a frozen k-bit base (Dettmers et al. 2023);
            # no gradient checkpointing: a small model fits, and recomputation costs a forward
            base = prepare_model_for_kbit_training(base, use_gradient_checkpointing=False)
        if adapter_path is not None:
            return PeftModel.from_pretrained(base, str(adapter_path), is_trainable=True)
        targets = (models.default_target_modules(base, self.resolved.config) if targets is None
                   else models.check_target_modules(base, targets))
        self.lora_config = LoraConfig(r=r, lora_alpha=alpha, target_modules=list(targets), lora_dropout=dropout,
                                      bias=bias, task_type=self.task_type,
                                      modules_to_save=list(modules_to_save) if modules_to_save else None)
        torch.manual_seed(self.seed)
        return get_peft_model(base, self.lora_config)

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
        return copy.copy(self.preprocessor)(load_dataset(dataset, self.data_dir, "dataset"), self.tokenizer,
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
        from ..recipes.llm import evaluate_lm

        tokens = self._eval_tokens(dataset)
        if tokens is None:
            raise ValueError("dataset: no evaluation data; pass one or set eval_dataset= in FineTuner")
        return evaluate_lm(self.model, tokens, self.tokenizer, self.task_type,
                           batch_size=self.trainer_config.per_device_eval_batch_size, device=self.device,
                           precision=self.trainer_config.resolved_precision(self.device))

    def train(self, output_dir: str | os.PathLike | None = None, num_train_epochs: int | None = None, *,
              resume_from_checkpoint: bool | str | None = None, callbacks: Sequence = ()) -> FitResult:
        """Fine-tune the LoRA adapter on the training data, then save adapter and tokenizer.

        Args:
            output_dir: where the adapter, tokenizer, `finetuner_llm.json`, `metrics.json`,
                `metrics.csv` and checkpoints go; default `trainer_config.output_dir`.
            num_train_epochs: default `trainer_config.num_train_epochs`.
            resume_from_checkpoint: True (newest end-of-epoch checkpoint in output_dir) or a path.
            callbacks: extra `finetuner.engine.callbacks.Callback`s.

        Returns:
            `FitResult`: the model, per-epoch history (train_loss, train_tokens_per_s, eval_loss,
            perplexity), held-out metrics before / after (with `eval_dataset`), output_dir.

        Raises:
            ValueError: no output_dir anywhere, a bad epoch count, no training data, packing for a
                model whose attention cannot keep packed examples apart.
            FloatingPointError: the loss became NaN or infinite.
        """
        from ..recipes.llm import evaluate_lm, train_lm

        cfg = self.trainer_config
        output_dir = output_dir or cfg.output_dir
        if not output_dir:
            raise ValueError("output_dir: pass train(output_dir=...) or set TrainerConfig(output_dir=...); "
                             "the tuned adapter is saved there")
        epochs = num_train_epochs if num_train_epochs is not None else cfg.num_train_epochs
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
            raise ValueError(f"num_train_epochs: expected an int >= 1, got {epochs!r}")
        if cfg.packing:
            self._check_packing()
        tokenized = self.tokenized_dataset if self.tokenized_dataset is not None else self.preprocess_data()
        eval_tokens = self._eval_tokens()
        precision = cfg.resolved_precision(self.device)

        def held_out() -> dict:
            return evaluate_lm(self.model, eval_tokens, self.tokenizer, self.task_type,
                               batch_size=cfg.per_device_eval_batch_size, device=self.device, precision=precision)

        before = held_out() if eval_tokens is not None else {}
        self.model, state = train_lm(self.model, self.tokenizer, tokenized, task_type=self.task_type, config=cfg,
                                     epochs=epochs, device=self.device, max_length=self.max_length,
                                     output_dir=str(output_dir), eval_tokenized=eval_tokens,
                                     resume_from_checkpoint=resume_from_checkpoint, callbacks=callbacks)
        last = state.history[-1] if state.history else {}
        if eval_tokens is None:
            after = {}
        elif all(k in last for k in ("eval_loss", "perplexity", "eval_tokens")):
            # the engine evaluated the final model at the end of the last epoch: the same pass
            after = {k: last[k] for k in ("eval_loss", "perplexity", "eval_tokens")}
        else:
            after = held_out()
        settings = {"model_id": self.model_id, "task_type": self.task_type, "quantize": self._quant_name(),
                    "max_length": self.max_length, "epochs": epochs, "precision": precision,
                    "lora_r": self.model.peft_config["default"].r, "lora_alpha": self.model.peft_config["default"].lora_alpha,
                    "target_modules": sorted(self.model.peft_config["default"].target_modules),
                    **{k: v for k, v in vars(cfg).items() if k in ("per_device_train_batch_size", "learning_rate",
                                                                   "packing", "gradient_accumulation_steps")},
                    "preprocess": dict(self.preprocessor.stats)}
        result = FitResult(model=self.model, history=state.history, metrics_before=before, metrics_after=after,
                           output_dir=str(output_dir), settings=settings)
        self.save(output_dir)
        _write_json(Path(output_dir) / "metrics.json", result.to_dict())
        if cfg.verbose:
            _print_summary(result)
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
        return self.inference_handler.generate(prompt_text, model=self.model, tokenizer=self.tokenizer,
                                               device=self.device, max_length=max_length or self.max_length)

    def __call__(self, prompt_text: str, max_length: int | None = None) -> str:
        """Same as `generate`."""
        return self.generate(prompt_text, max_length)

    # ---- saving, loading, merging --------------------------------------------------------------
    def _quant_name(self) -> str | None:
        if self.bnb_config is None:
            return None
        return "4bit" if getattr(self.bnb_config, "load_in_4bit", False) else "8bit"

    def save(self, output_dir: str | os.PathLike) -> Path:
        """Save the adapter (LoRA weights and modules trained in full, not the frozen base), the
        tokenizer and `finetuner_llm.json` (how to rebuild the base) into `output_dir`.

        Each file is written to a temporary folder and moved in place with `os.replace`;
        `finetuner_llm.json` is moved last, so a folder that has it is complete. Other files in
        `output_dir` (checkpoints, logs) are kept.
        """
        output_dir = Path(output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".save-", dir=output_dir))
        try:
            self.model.save_pretrained(str(tmp))
            self.tokenizer.save_pretrained(str(tmp))
            meta = {"format_version": FORMAT_VERSION, "kind": "llm-adapter", "model_id": self.model_id,
                    "base_model": self.resolved.path, "warm_start": self.resolved.warm_start,
                    "task_type": self.task_type, "quantize": self._quant_name(),
                    "quantization_config": self.bnb_config.to_dict() if self.bnb_config is not None else None,
                    "max_length": self.max_length, "template": self.inference_handler.template}
            (tmp / META_FILE).write_text(json.dumps(meta, indent=2, default=str))
            names = sorted(p.name for p in tmp.iterdir() if p.name != META_FILE) + [META_FILE]
            for name in names:
                target = output_dir / name
                if target.is_dir() and not target.is_symlink():
                    shutil.rmtree(target)
                os.replace(tmp / name, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
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
            qconfig = _bnb_from_dict(meta["quantization_config"])
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
        from ..models.lora import merge

        if self.output_dir and (Path(self.output_dir) / META_FILE).is_file():
            self.save(self.output_dir)
            return merge(self.output_dir, output_dir, dtype=dtype)
        with tempfile.TemporaryDirectory() as tmp:
            self.save(tmp)
            self.output_dir = None
            return merge(tmp, output_dir, dtype=dtype)

    def _check_packing(self) -> None:
        """Packing relies on the model separating examples by restarting position_ids: verify it
        on two short random sequences (packed logits must equal separate ones)."""
        if self.task_type != models.CAUSAL:
            raise ValueError("trainer_config.packing: packing applies to causal LMs only; set packing=False")
        g = torch.Generator().manual_seed(0)
        vocab = int(self.resolved.config.vocab_size if hasattr(self.resolved.config, "vocab_size") else 1000)
        a = torch.randint(10, min(vocab, 1000), (1, 6), generator=g)
        b = torch.randint(10, min(vocab, 1000), (1, 5), generator=g)
        model = self.model
        with torch.no_grad():
            sep = model(input_ids=b.to(self.device), use_cache=False).logits[0]
            ids = torch.cat([a, b], 1).to(self.device)
            pos = torch.cat([torch.arange(6), torch.arange(5)])[None].to(self.device)
            packed = model(input_ids=ids, position_ids=pos, use_cache=False).logits[0, 6:]
        if not torch.allclose(sep.float(), packed.float(), atol=1e-2, rtol=1e-2):
            raise ValueError(f"trainer_config.packing: {type(model.get_base_model()).__name__} lets packed examples attend "
                             "to each other (it ignores restarting position_ids); set packing=False")


def read_meta(path: str | os.PathLike) -> dict:
    """The `finetuner_llm.json` of a saved tuner folder.

    Raises:
        FileNotFoundError: the folder has none (not written by `FineTuner.train` / `save`).
    """
    meta_file = Path(path) / META_FILE
    if not meta_file.is_file():
        raise FileNotFoundError(f"path: {str(path)!r} is not a folder saved by FineTuner (no {META_FILE})")
    return json.loads(meta_file.read_text())


def _bnb_from_dict(config: dict):
    from transformers import BitsAndBytesConfig

    wanted = {"load_in_4bit", "load_in_8bit", "bnb_4bit_quant_type", "bnb_4bit_use_double_quant",
              "bnb_4bit_compute_dtype", "llm_int8_threshold"}
    kwargs = {k: v for k, v in config.items() if k in wanted}
    if isinstance(kwargs.get("bnb_4bit_compute_dtype"), str):
        kwargs["bnb_4bit_compute_dtype"] = getattr(torch, kwargs["bnb_4bit_compute_dtype"].replace("torch.", ""))
    return BitsAndBytesConfig(**kwargs)


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=float))
    os.replace(tmp, path)


def _print_summary(result: FitResult) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if result.history:
        last = result.history[-1]
        console.print(f"trained {len(result.history)} epoch(s): train_loss {last['train_loss']:.4f}, "
                      f"{last.get('train_tokens_per_s', float('nan')):.0f} tokens/s")
    if result.metrics_before:
        table = Table(title="held-out response tokens")
        for col in ("metric", "before", "after", "change"):
            table.add_column(col, justify="left" if col == "metric" else "right")
        for key in ("eval_loss", "perplexity"):
            b, a = result.metrics_before[key], result.metrics_after[key]
            table.add_row(key, f"{b:.4f}", f"{a:.4f}", f"{a - b:+.4f}")
        console.print(table)
