"""The trainer configuration of `FineTuner`: familiar `transformers.TrainingArguments` names,
run by finetuner's own engine (`finetuner.engine.Trainer`, on accelerate).

`TrainerConfig.to_train_args` is the one place these names map onto the `finetuner.config.
TrainArgs` every recipe takes. Pluggable: subclass `TrainerConfig` and override
`build_optimizer`, `build_scheduler` or `callbacks` to change how training is set up; the loop
itself stays the engine's.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, fields
from typing import Any, Sequence

import torch

from ..config import PRECISIONS, TrainArgs
from ..engine.checkpoint import Checkpoints
from ..engine.optim import SCHEDULERS, build_optimizer, build_scheduler
from ..engine.precision import resolve_precision

SAVE_STRATEGIES = ("epoch", "steps", "no")
BASE_DTYPES = ("auto", "bfloat16", "float32")


@dataclass
class TrainerConfig:
    """How to train (LoRA / QLoRA supervised fine-tuning).

    Attributes:
        output_dir: where `train()` saves the adapter, tokenizer, metrics and checkpoints; used
            when `train()` gets none.
        num_train_epochs: passes over the training data (int >= 1); used when `train()` gets none.
        per_device_train_batch_size: rows per step (examples, or packed rows of examples).
        per_device_eval_batch_size: rows per evaluation batch.
        gradient_accumulation_steps: micro-batches summed into one optimizer step.
        learning_rate: peak AdamW learning rate (LoRA commonly 1e-4 .. 3e-4).
        weight_decay: AdamW decoupled weight decay (Loshchilov & Hutter 2019).
        lr_scheduler_type: "linear" (decay to 0), "cosine" or "constant", after warm-up.
        warmup_ratio: share of steps with linear warm-up, in [0, 1).
        max_grad_norm: clip the gradient's global L2 norm to this; None disables clipping.
        optim: "adamw", "adam", "sgd" or "rmsprop".
        precision: "auto" (bf16 autocast where the device has native bf16 matmuls faster than
            fp32, fp16 on a CUDA GPU without them, else fp32:
            `finetuner.engine.precision.resolve_precision`), "fp32", "bf16" or "fp16" (CUDA).
        packing: pack several examples into each row of `max_length` tokens (no attention or
            loss across them); otherwise one example per row.
        base_dtype: dtype of the frozen base (not quantized), set when `FineTuner` builds the
            model: "auto" (bfloat16 when training in bf16, else unchanged), "bfloat16" or
            "float32" (unchanged: fp32 weights under autocast). A bf16 base halves its memory
            and, with it, the activations of the residual stream; held-out loss measured equal
            within 0.0002 (`benchmarks/llm_vs_trainer_peft.py`). `generate` then runs under bf16
            autocast (`finetuner.models.lora.frozen_base_to`, `base_autocast`).
        group_by_length: batch examples of similar length together (less padding).
        save_strategy: "epoch" (a checkpoint after each epoch, OUTPUT_DIR/checkpoints/epoch-N),
            "steps" (every `save_steps` optimizer steps, step-N, plus the last) or "no".
        save_steps: checkpoint interval in optimizer steps; setting it implies "steps" checkpoints
            in addition to the epoch ones.
        save_total_limit: keep only the newest N checkpoints (None keeps all); the newest
            end-of-epoch one is always kept, so the run stays resumable.
        eval_strategy: "epoch" (held-out loss after each epoch when eval data is given) or "no".
        report_to: loggers besides the progress bar: any of "csv", "tensorboard".
        report_generations: held-out instructions (from `eval_dataset`) answered greedily by
            the base and the tuned model, side by side in OUTPUT_DIR/report.html; 0: none.
        seed: seed of LoRA initialisation, data order and dropout.
        verbose: progress bar and summary tables.

    Raises:
        ValueError: from `validate()`, naming the field, the expected values and the given one.
    """

    output_dir: str | None = None
    num_train_epochs: int = 3
    per_device_train_batch_size: int = 4
    per_device_eval_batch_size: int = 8
    gradient_accumulation_steps: int = 1
    learning_rate: float = 2e-4
    weight_decay: float = 0.0
    lr_scheduler_type: str = "linear"
    warmup_ratio: float = 0.0
    max_grad_norm: float | None = 1.0
    optim: str = "adamw"
    precision: str = "auto"
    packing: bool = False
    base_dtype: str = "auto"
    group_by_length: bool = True
    save_strategy: str = "epoch"
    save_steps: int | None = None
    save_total_limit: int | None = 2
    eval_strategy: str = "epoch"
    report_to: tuple = ("csv",)
    report_generations: int = 3
    seed: int = 42
    verbose: bool = True

    def validate(self) -> "TrainerConfig":
        """Check every field; return self.

        Raises:
            ValueError: the first bad field, with what was expected and what was given.
        """
        def positive_int(name: str, allow_none: bool = False) -> None:
            value = getattr(self, name)
            if value is None and allow_none:
                return
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"trainer_config.{name}: expected an int >= 1{' or None' if allow_none else ''}, got {value!r}")

        for name in ("num_train_epochs", "per_device_train_batch_size", "per_device_eval_batch_size",
                     "gradient_accumulation_steps"):
            positive_int(name)
        positive_int("save_steps", allow_none=True)
        positive_int("save_total_limit", allow_none=True)
        if isinstance(self.report_generations, bool) or not isinstance(self.report_generations, int) \
                or self.report_generations < 0:
            raise ValueError(f"trainer_config.report_generations: expected an int >= 0, got {self.report_generations!r}")
        if not isinstance(self.learning_rate, (int, float)) or self.learning_rate <= 0:
            raise ValueError(f"trainer_config.learning_rate: expected a number > 0, got {self.learning_rate!r}")
        if self.weight_decay < 0:
            raise ValueError(f"trainer_config.weight_decay: expected a number >= 0, got {self.weight_decay!r}")
        if self.lr_scheduler_type not in SCHEDULERS:
            raise ValueError(f"trainer_config.lr_scheduler_type: expected one of {SCHEDULERS}, got {self.lr_scheduler_type!r}")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"trainer_config.warmup_ratio: expected a number in [0, 1), got {self.warmup_ratio!r}")
        if self.max_grad_norm is not None and self.max_grad_norm <= 0:
            raise ValueError(f"trainer_config.max_grad_norm: expected a number > 0 or None, got {self.max_grad_norm!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"trainer_config.precision: expected one of {PRECISIONS}, got {self.precision!r}")
        if self.base_dtype not in BASE_DTYPES:
            raise ValueError(f"trainer_config.base_dtype: expected one of {BASE_DTYPES}, got {self.base_dtype!r}")
        if self.save_strategy not in SAVE_STRATEGIES:
            raise ValueError(f"trainer_config.save_strategy: expected one of {SAVE_STRATEGIES}, got {self.save_strategy!r}")
        if self.save_strategy == "steps" and self.save_steps is None:
            raise ValueError("trainer_config.save_steps: save_strategy='steps' needs save_steps (an int >= 1), got None")
        if self.eval_strategy not in ("epoch", "no"):
            raise ValueError(f"trainer_config.eval_strategy: expected 'epoch' or 'no', got {self.eval_strategy!r}")
        unknown = set(self.report_to or ()) - {"csv", "tensorboard"}
        if isinstance(self.report_to, str) or unknown:
            raise ValueError(f"trainer_config.report_to: expected a tuple of 'csv' / 'tensorboard', got {self.report_to!r}")
        return self

    def resolved_precision(self, device: str) -> str:
        """The precision to train in on `device` (`finetuner.engine.precision.resolve_precision`):
        "auto" becomes "bf16" where bf16 matmuls are native and faster, "fp16" on CUDA without them,
        else "fp32"."""
        return resolve_precision(self.precision, device)

    def training_base_dtype(self, device: str, quantized: bool) -> torch.dtype | None:
        """The dtype the frozen base is stored in for training on `device`, or None to leave it
        (a quantized base, "float32", or "auto" without bf16 training)."""
        if quantized or self.base_dtype == "float32":
            return None
        if self.base_dtype == "bfloat16" or self.resolved_precision(device) == "bf16":
            return torch.bfloat16
        return None

    def checkpoints(self) -> Checkpoints:
        """The engine's checkpoint policy for `save_strategy`, `save_steps`, `save_total_limit`."""
        if self.save_strategy == "no":
            return Checkpoints(every_epoch=False)
        return Checkpoints(every_epoch=self.save_strategy == "epoch", save_steps=self.save_steps,
                           keep=self.save_total_limit)

    def to_train_args(self, *, device: str = "auto", epochs: int | None = None,
                      output_dir: str | os.PathLike | None = None, resume: bool | str | os.PathLike | None = False,
                      callbacks: Sequence = ()) -> TrainArgs:
        """These settings under the names every recipe uses (`finetuner.config.TrainArgs`): the
        one place the Hugging Face names map onto them.

        Args:
            device: where training runs ("cuda:N" runs on "cuda").
            epochs / output_dir: override `num_train_epochs` / `output_dir`.
            resume: True (the newest checkpoint in output_dir, end-of-epoch or step-N), a checkpoint folder,
                or False / None.
            callbacks: extra engine callbacks, after `callbacks()` and the checkpoint policy.
        """
        # explicit, also when 0: torch's AdamW would otherwise decay by its own default, 0.01
        decay = {"weight_decay": self.weight_decay} if self.optim in ("adamw", "adam", "sgd") else None
        return TrainArgs(
            epochs=epochs if epochs is not None else self.num_train_epochs,
            batch_size=self.per_device_train_batch_size, learning_rate=self.learning_rate, optimizer=self.optim,
            optimizer_kwargs=decay, weight_decay=self.weight_decay, scheduler=self.lr_scheduler_type,
            warmup_ratio=self.warmup_ratio, max_grad_norm=self.max_grad_norm,
            gradient_accumulation_steps=self.gradient_accumulation_steps, device=str(device).split(":")[0],
            precision=self.precision, seed=self.seed, callbacks=(self.checkpoints(), *self.callbacks(), *callbacks),
            output_dir=output_dir if output_dir is not None else self.output_dir, resume=resume or False,
            eval_batch_size=self.per_device_eval_batch_size, verbose=self.verbose, report=False)

    def overrides(self, method: str) -> bool:
        """Whether this config's class overrides `method` ("build_optimizer", "build_scheduler")."""
        return getattr(type(self), method) is not getattr(TrainerConfig, method)

    def build_optimizer(self, model: torch.nn.Module) -> torch.optim.Optimizer:
        """The optimizer over the trainable (LoRA) parameters (used when a subclass overrides it;
        by default the recipe builds the same one from `to_train_args()`)."""
        kwargs = {"weight_decay": self.weight_decay} if self.optim in ("adamw", "adam", "sgd") else {}
        return build_optimizer(self.optim, model, self.learning_rate, kwargs)

    def build_scheduler(self, optimizer: torch.optim.Optimizer, total_steps: int):
        """The per-step learning-rate schedule over `total_steps` optimizer steps (used when a
        subclass overrides it; by default the recipe builds the same one from `to_train_args()`)."""
        return build_scheduler(self.lr_scheduler_type, optimizer, total_steps, self.warmup_ratio)

    def callbacks(self) -> list:
        """Extra engine callbacks (`finetuner.engine.callbacks.Callback`); none by default."""
        return []

    def replace(self, **changes: Any) -> "TrainerConfig":
        """A copy with some fields changed."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise TypeError(f"TrainerConfig: unknown field(s) {unknown}; known: {sorted(known)}")
        return type(self)(**{**asdict(self), **changes})


DefaultTrainerConfig = TrainerConfig  # the name the FineTuner document uses
