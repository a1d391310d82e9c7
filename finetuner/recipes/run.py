"""The part of a run every recipe shares: the accelerator, the optimizer and schedule, the
standard callbacks, the engine's loop with resume, and the metrics after training.

A recipe builds its model, data, loss and evaluation, then calls `train(...)`; what comes back
goes to `finish`.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch

from ..config import TrainArgs
from ..engine.callbacks import BestModelCheckpoint, Callback, CSVLogger, EarlyStopping, ProgressBar, TensorBoardLogger
from ..engine.distributed import on_main
from ..engine.optim import build_optimizer, build_scheduler
from ..engine.precision import resolve_precision
from ..engine.state import TrainState
from ..engine.trainer import Trainer, make_accelerator
from ..models.saving import check_target, save


@dataclass
class Run:
    """What `train` hands back.

    Attributes:
        model: the trained model: unwrapped, without the training-time autocast wrapper, the
            best epoch's weights when they were restored.
        state: the engine's `TrainState` (history, epoch, best epoch).
        metrics_after: eval metrics of `model` ({} without an evaluate function).
        accelerator: the run's `accelerate.Accelerator` (for `is_main_process`).
    """

    model: torch.nn.Module
    state: TrainState
    metrics_after: dict
    accelerator: object


def prepare(args: TrainArgs):
    """The accelerator of a run (device, the resolved precision, gradient accumulation), after
    seeding every RNG with `args.seed`. Returns (accelerator, precision)."""
    from accelerate.utils import set_seed

    set_seed(args.seed)
    precision = resolve_precision(args.precision, args.device)
    return make_accelerator(args.device, precision, args.gradient_accumulation_steps), precision


def optimizer_for(model: torch.nn.Module, args: TrainArgs, steps_per_epoch: int, params=None):
    """The optimizer (`args.optimizer` over the trainable parameters, or over `params` groups)
    and its per-step schedule over every optimizer step of the run."""
    if params is not None and isinstance(args.optimizer, str):
        from ..engine.optim import OPTIMIZERS

        if args.optimizer.lower() not in OPTIMIZERS:
            raise ValueError(f"optimizer: expected one of {sorted(OPTIMIZERS)}, a class or an instance, "
                             f"got {args.optimizer!r}")
        opt = OPTIMIZERS[args.optimizer.lower()](params, lr=args.learning_rate, **dict(args.optimizer_kwargs or {}))
    else:
        kwargs = dict(args.optimizer_kwargs or {})
        if args.weight_decay and isinstance(args.optimizer, str):
            kwargs.setdefault("weight_decay", args.weight_decay)
        opt = build_optimizer(args.optimizer, model, args.learning_rate, kwargs)
    total = args.epochs * max(math.ceil(steps_per_epoch / args.gradient_accumulation_steps), 1)
    return opt, build_scheduler(args.scheduler, opt, total, args.warmup_ratio)


def standard_callbacks(args: TrainArgs, monitor: str, *, restore_best: bool = False,
                       first: Sequence[Callback] = ()) -> list[Callback]:
    """`first`, then a progress bar (verbose), CSV and TensorBoard logs (with output_dir), early
    stopping (`args.early_stopping`, watching `monitor` unless its dict names another), the
    best-epoch restore (`restore_best`), then the user's callbacks."""
    cbs = list(first) + ([ProgressBar()] if args.verbose else [])
    if args.output_dir:
        cbs += [CSVLogger(), TensorBoardLogger()]
    if args.early_stopping:
        es = dict(args.early_stopping) if isinstance(args.early_stopping, Mapping) else {"patience": int(args.early_stopping)}
        es.setdefault("monitor", monitor)
        cbs.append(EarlyStopping(**es))
    if restore_best:
        cbs.append(BestModelCheckpoint(monitor=monitor, restore_best=True))
    return cbs + list(args.callbacks or [])


def train(model: torch.nn.Module, loader, compute_loss: Callable, *, args: TrainArgs, accelerator, optimizer,
          scheduler, callbacks: Sequence[Callback], evaluate: Callable | None = None, sampler=None,
          precision: str = "fp32", save_fn: Callable | None = save, final_evaluate: Callable | None = None) -> Run:
    """Run the engine: resume when asked, train `args.epochs` epochs, and measure the final model.

    The metrics after training are the last epoch's when that epoch's model is the one handed
    back and it was evaluated in the precision it is returned in (fp32); otherwise (the best
    epoch restored, or training in bf16) the final model is evaluated once more (on process 0,
    its numbers handed to every process), with `final_evaluate` when given (a recipe whose
    per-epoch `evaluate` runs in the training precision measures the returned model in fp32;
    after fp32 training it is not called for the last epoch's model, whose numbers it would repeat).

    Raises:
        FileExistsError: OUTPUT_DIR/model (where `finish` saves with `save_fn`) exists and is
            not a finetuner model, before training starts.
    """
    if save_fn is not None and args.output_dir:
        check_target(Path(args.output_dir) / "model")  # finish saves there: refuse a user's folder now
    trainer = Trainer(model, loader, compute_loss, optimizer=optimizer, scheduler=scheduler, epochs=args.epochs,
                      accelerator=accelerator, evaluate=evaluate, callbacks=callbacks,
                      output_dir=str(args.output_dir) if args.output_dir else None, save_fn=save_fn,
                      max_grad_norm=args.max_grad_norm, sampler=sampler)
    trainer.resume(args.resume)
    state = trainer.fit()
    final = trainer.final_model()
    metrics_after: dict = {}
    if evaluate is not None:
        last = state.history[-1] if state.history else {}
        restored = state.best_epoch not in (None, state.epoch) and any(
            isinstance(cb, BestModelCheckpoint) and cb.restore_best for cb in callbacks)
        reuse = last and not restored and precision == "fp32"  # the same weights, measured in fp32 already
        metrics_after = ({k: v for k, v in last.items() if k not in _TRAIN_KEYS} if reuse
                         else on_main(final_evaluate or evaluate, final))
    return Run(final, state, metrics_after, accelerator)


_TRAIN_KEYS = ("epoch", "train_loss", "epoch_time_s", "train_samples_per_s", "train_tokens", "train_tokens_per_s")


def recipe_arguments(recipe) -> set[str]:
    """The keyword arguments `recipe` takes: its own options, plus every `TrainArgs` field when
    it takes `**train_args`."""
    params = inspect.signature(recipe).parameters
    own = {n for n, p in params.items() if p.kind is not p.VAR_KEYWORD} - {"model", "train_data", "eval_data"}
    takes_train_args = any(p.kind is p.VAR_KEYWORD for p in params.values())
    return own | (set(TrainArgs.names()) if takes_train_args else set())
