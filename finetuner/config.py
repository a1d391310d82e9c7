"""`TrainArgs`: the training settings every recipe takes, with one name each.

A recipe (embedding, text, classification, LLM) has its own options (a loss, a tokenizer, a LoRA
rank) and shares these: the number of passes, the batch, the optimizer and its schedule, the
hardware, where the run is written and how loud it is. Each recipe keeps its own defaults as a
`TrainArgs` instance and lets the caller override any field by name:

    args = EMBEDDING_DEFAULTS.override({"epochs": 3, "learning_rate": 1e-4})

The LLM part's `TrainerConfig` keeps the Hugging Face names its documentation uses
(`num_train_epochs`, `per_device_train_batch_size`, ...); `finetuner.llm.config` maps them onto
these fields in one place.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from typing import Any, Mapping, Sequence

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DEVICES = ("auto", "cpu", "cuda", "mps")


@dataclass(frozen=True)
class TrainArgs:
    """Training settings shared by every recipe.

    Attributes:
        epochs: passes over the training data (int >= 1).
        batch_size: items per optimizer step on one process, before gradient accumulation
            (texts for the embedding recipes, rows for classification, sequences for LLMs).
        learning_rate: peak step size (> 0).
        optimizer: "adam", "adamw", "sgd", "rmsprop", an optimizer class or factory, or a ready
            `torch.optim.Optimizer` (see `finetuner.engine.optim.build_optimizer`).
        optimizer_kwargs: extra keyword arguments of the optimizer (dict or None).
        weight_decay: decoupled weight decay (>= 0); never applied to biases and norm weights.
        scheduler: "constant", "linear" (decay to 0), "cosine" (to 0), None, a factory
            `(optimizer) -> scheduler` or a ready scheduler; stepped once per optimizer step.
        warmup_ratio: share of the optimizer steps with a linear warm-up, in [0, 1).
        max_grad_norm: clip the gradients' global L2 norm to this (> 0), or None.
        gradient_accumulation_steps: micro-batches summed into one optimizer step (int >= 1).
        device: "auto" (a GPU when there is one), "cpu", "cuda" or "mps".
        precision: "auto" (bf16 where the hardware computes it natively and, timed once a
            process, faster than fp32: `finetuner.engine.precision`), "fp32", "bf16" or "fp16".
        seed: seeds data order, initialisation and dropout.
        callbacks: extra `finetuner.engine.Callback` objects.
        early_stopping: patience in epochs, a dict of `EarlyStopping` arguments, or None.
        output_dir: where the model, metrics.json, logs, checkpoints and report go; None keeps
            nothing on disk.
        resume: True continues from the newest checkpoint in `output_dir`; a checkpoint folder
            continues from it; False starts afresh.
        eval_batch_size: items per forward pass in evaluation (int >= 1).
        verbose: progress bars, the before/after table and run notes on the console.
        report: write OUTPUT_DIR/report.html at the end (needs `output_dir`).
    """

    epochs: int = 1
    batch_size: int = 32
    learning_rate: float = 1e-3
    optimizer: Any = "adamw"
    optimizer_kwargs: Mapping | None = None
    weight_decay: float = 0.0
    scheduler: Any = "linear"
    warmup_ratio: float = 0.0
    max_grad_norm: float | None = None
    gradient_accumulation_steps: int = 1
    device: str = "auto"
    precision: str = "auto"
    seed: int = 42
    callbacks: Sequence = field(default=())
    early_stopping: int | Mapping | None = None
    output_dir: str | os.PathLike | None = None
    resume: bool | str | os.PathLike = False
    eval_batch_size: int = 256
    verbose: bool = True
    report: bool = True

    def __post_init__(self) -> None:
        self.validate()

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """Every field name, in declaration order."""
        return tuple(f.name for f in fields(cls))

    def override(self, changes: Mapping[str, Any], where: str = "fit") -> "TrainArgs":
        """A copy with `changes` applied (each validated).

        Raises:
            TypeError: a name that is not a field (the message lists the fields).
            ValueError: a bad value (names the field, what was expected and what was given).
        """
        unknown = sorted(set(changes) - set(self.names()))
        if unknown:
            raise TypeError(f"{where}: unknown training argument(s) {unknown}; known: {sorted(self.names())}")
        return replace(self, **changes)

    def as_kwargs(self) -> dict:
        """Every field as a keyword argument of a recipe (values as they are, not copied)."""
        return {name: getattr(self, name) for name in self.names()}

    def to_dict(self) -> dict:
        """The settings as JSON-ready values (objects are shown by their repr)."""
        out = {}
        for key, value in self.as_kwargs().items():
            out[key] = value if isinstance(value, (str, int, float, bool, type(None))) else repr(value)
        return out

    def validate(self) -> "TrainArgs":
        """Check every field; return self.

        Raises:
            ValueError: the first bad field, naming it, what was expected and what was given.
        """
        for name in ("epochs", "batch_size", "gradient_accumulation_steps", "eval_batch_size"):
            _positive_int(name, getattr(self, name))
        _positive_number("learning_rate", self.learning_rate)
        if not isinstance(self.weight_decay, (int, float)) or isinstance(self.weight_decay, bool) or self.weight_decay < 0:
            raise ValueError(f"weight_decay: expected a number >= 0, got {self.weight_decay!r}")
        if not isinstance(self.warmup_ratio, (int, float)) or not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"warmup_ratio: expected a number in [0, 1), got {self.warmup_ratio!r}")
        if self.max_grad_norm is not None:
            _positive_number("max_grad_norm", self.max_grad_norm)
        if self.device not in DEVICES:
            raise ValueError(f"device: expected one of {DEVICES}, got {self.device!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision: expected one of {PRECISIONS}, got {self.precision!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"seed: expected an int, got {self.seed!r}")
        if self.optimizer_kwargs is not None and not isinstance(self.optimizer_kwargs, Mapping):
            raise ValueError(f"optimizer_kwargs: expected a dict or None, got {type(self.optimizer_kwargs).__name__}")
        if self.early_stopping is not None and not isinstance(self.early_stopping, Mapping):
            _positive_int("early_stopping", self.early_stopping)
        if isinstance(self.callbacks, (str, bytes)) or not hasattr(self.callbacks, "__iter__"):
            raise ValueError(f"callbacks: expected a list of Callback objects, got {type(self.callbacks).__name__}")
        return self


def _positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}: expected an int >= 1, got {value!r}")


def _positive_number(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{name}: expected a number > 0, got {value!r}")
