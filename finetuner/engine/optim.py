"""Optimizers and learning-rate schedules by name."""

from __future__ import annotations

import math
from typing import Any, Callable

import torch

OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD, "rmsprop": torch.optim.RMSprop}
SCHEDULERS = ("constant", "linear", "cosine")


def build_optimizer(optimizer: Any, model: torch.nn.Module, learning_rate: float,
                    optimizer_kwargs: dict | None = None) -> torch.optim.Optimizer:
    """An optimizer over the model's trainable parameters.

    Args:
        optimizer: a name ("adam", "adamw", "sgd", "rmsprop"), an optimizer class or factory
            `(params, lr=...) -> Optimizer`, or a ready `torch.optim.Optimizer`.
        learning_rate: the step size (> 0).

    Raises:
        ValueError: an unknown name, learning_rate <= 0, or no trainable parameter.
    """
    if learning_rate <= 0:
        raise ValueError(f"learning_rate: expected a positive number, got {learning_rate}")
    if isinstance(optimizer, torch.optim.Optimizer):
        return optimizer
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model: it has no trainable parameter (everything is frozen): nothing to train")
    if isinstance(optimizer, str):
        if optimizer.lower() not in OPTIMIZERS:
            raise ValueError(f"optimizer: expected one of {sorted(OPTIMIZERS)}, a class or an instance, got {optimizer!r}")
        optimizer = OPTIMIZERS[optimizer.lower()]
    return optimizer(params, lr=learning_rate, **(optimizer_kwargs or {}))


def build_scheduler(scheduler: Any, optimizer: torch.optim.Optimizer, total_steps: int,
                    warmup_ratio: float = 0.0):
    """A per-step LR schedule: None or "constant", "linear" (decay to 0), "cosine" (to 0),
    each after a linear warm-up over `warmup_ratio` of the steps; or a factory
    `(optimizer) -> scheduler`, or a ready scheduler.

    Raises:
        ValueError: an unknown name or warmup_ratio outside [0, 1).
    """
    if scheduler is None:
        return None
    if not isinstance(scheduler, str):
        return scheduler(optimizer) if callable(scheduler) and not hasattr(scheduler, "step") else scheduler
    if scheduler not in SCHEDULERS:
        raise ValueError(f"scheduler: expected one of {SCHEDULERS}, a factory or a scheduler, got {scheduler!r}")
    if not 0 <= warmup_ratio < 1:
        raise ValueError(f"warmup_ratio: expected a number in [0, 1), got {warmup_ratio}")
    return torch.optim.lr_scheduler.LambdaLR(optimizer, Schedule(scheduler, total_steps, warmup_ratio))


class Schedule:
    """The LR factor of optimizer step `step` (0-based) for a named schedule: a linear warm-up
    over the first int(total x warmup_ratio) steps, then constant, linear decay to 0 or cosine
    decay to 0 at step `total`. An object (not a closure) so that its state is saved with the
    scheduler and the engine can `resize` it (a multi-process run takes fewer, larger steps)."""

    def __init__(self, name: str, total_steps: int, warmup_ratio: float) -> None:
        self.name, self.warmup_ratio = name, warmup_ratio
        self.resize(total_steps)

    def resize(self, total_steps: int) -> None:
        """Span `total_steps` optimizer steps from now on (the warm-up keeps its ratio)."""
        self.total = max(int(total_steps), 1)
        self.warmup = int(int(total_steps) * self.warmup_ratio)

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / (self.warmup + 1)
        progress = (step - self.warmup) / max(self.total - self.warmup, 1)
        if self.name == "linear":
            return max(0.0, 1.0 - progress)
        if self.name == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
        return 1.0
