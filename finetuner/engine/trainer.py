"""The one training loop every task runs on, built on `accelerate`.

accelerate brings device placement, bf16 autocast, gradient accumulation, data-parallel
processes (DDP over gloo or NCCL, launched by `accelerate launch` or `torchrun`) and
`save_state` / `load_state`; this file only reads top to bottom as the loop. A task supplies the
model, a data loader, `compute_loss(model, batch) -> scalar` and `evaluate(model) -> dict`.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from pathlib import Path
from typing import Callable, Sequence

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState, GradientState, PartialState
from accelerate.utils import set_seed

from ..console import note
from .callbacks import Callback
from .checkpoint import Checkpoints, latest_checkpoint, load_checkpoint  # latest_checkpoint: also exported here
from .precision import resolve_precision
from .state import TrainState

PRECISIONS = {"fp32": "no", "no": "no", "bf16": "bf16", "fp16": "fp16"}  # ours -> accelerate's


def make_accelerator(device: str = "auto", precision: str = "fp32", gradient_accumulation_steps: int = 1) -> Accelerator:
    """An `Accelerator` for `device` ("auto", "cpu", "cuda", "mps") and `precision`
    ("auto": see `finetuner.engine.precision.resolve_precision`, "fp32", "bf16", "fp16").

    Raises:
        ValueError: an unknown precision or device.
    """
    precision = resolve_precision(precision, device) if precision == "auto" else precision
    if precision not in PRECISIONS:
        raise ValueError(f"precision: expected one of {sorted(PRECISIONS)}, got {precision!r}")
    if device not in ("auto", "cpu", "cuda", "mps"):
        raise ValueError(f"device: expected 'auto', 'cpu', 'cuda' or 'mps', got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device: 'cuda' was asked for but no CUDA device is available; use device='cpu' or 'auto'")
    # accelerate keeps process-wide singletons; a new fit may ask for another precision
    AcceleratorState._reset_state()
    GradientState._reset_state()
    if "WORLD_SIZE" not in os.environ:
        PartialState._reset_state()
    return Accelerator(
        mixed_precision=PRECISIONS[precision],
        cpu=device == "cpu",
        gradient_accumulation_steps=gradient_accumulation_steps,
    )


class Trainer:
    """Runs the loop: epochs of (forward, loss, backward, step), evaluation after each epoch,
    callbacks, checkpoints every epoch (`finetuner.engine.checkpoint`), resume from the last one.

    Args:
        model: a torch module.
        train_loader: a `torch.utils.data.DataLoader` yielding what `compute_loss` takes.
        compute_loss: `(model, batch) -> scalar tensor`.
        optimizer: a torch optimizer over the model's trainable parameters.
        scheduler: a torch LR scheduler stepped once per optimizer step, or None.
        epochs: number of epochs (>= 1).
        accelerator: from `make_accelerator`.
        evaluate: `(model) -> dict[str, float]` run after each epoch on the unwrapped model, or None.
        callbacks: `Callback` objects.
        output_dir: where checkpoints and logs go; None keeps nothing on disk.
        save_fn: `(model, path)` used by callbacks that save the model.
        max_grad_norm: clip gradients to this L2 norm (None: no clipping).
        keep_checkpoints: how many epoch checkpoints to keep (the newest), unless a `Checkpoints`
            callback is given (it then decides when checkpoints are written and how many are kept).
        sampler: the batch sampler, told the epoch (`set_epoch`) so order is reproducible on resume.

    Raises:
        FloatingPointError: the loss became NaN or infinite (says at which step, and what to try).
    """

    def __init__(self, model: torch.nn.Module, train_loader, compute_loss: Callable, *, optimizer, scheduler=None,
                 epochs: int = 1, accelerator: Accelerator, evaluate: Callable | None = None,
                 callbacks: Sequence[Callback] = (), output_dir: str | None = None, save_fn: Callable | None = None,
                 max_grad_norm: float | None = None, keep_checkpoints: int = 2, sampler=None) -> None:
        self.accelerator = accelerator
        self.compute_loss, self.evaluate_fn = compute_loss, evaluate
        self.epochs = epochs
        # checkpoints run after the other callbacks, so they hold what those logged
        policy = [cb for cb in callbacks if isinstance(cb, Checkpoints)]
        policy = policy or ([Checkpoints(keep=keep_checkpoints)] if output_dir else [])
        self.callbacks = [cb for cb in callbacks if not isinstance(cb, Checkpoints)] + policy
        self.output_dir, self.save_fn = output_dir, save_fn
        self.max_grad_norm, self.keep_checkpoints, self.sampler = max_grad_norm, keep_checkpoints, sampler
        self.state = TrainState()
        self._model_raw = model
        prepared = accelerator.prepare(model, optimizer, train_loader, *([scheduler] if scheduler else []))
        self.wrapped, self.optimizer, self.train_loader = prepared[:3]
        self.scheduler = prepared[3] if scheduler else None
        accelerator.register_for_checkpointing(self.state)

    @property
    def model(self) -> torch.nn.Module:
        """The unwrapped model (no DDP wrapper): what users and callbacks see."""
        return self.accelerator.unwrap_model(self.wrapped)

    @property
    def steps_per_epoch(self) -> int:
        return len(self.train_loader)

    def _call(self, hook: str, *args) -> None:
        for cb in self.callbacks:
            getattr(cb, hook)(self, *args)

    # ---- checkpoints -------------------------------------------------------------------
    def resume(self, resume: bool | str | os.PathLike) -> None:
        """Apply `fit(..., resume=...)`: True continues from the newest complete checkpoint in
        output_dir (a warning, and a fresh start, when there is none); a path continues from
        that checkpoint folder; False does nothing."""
        if not resume:
            return
        if resume is True:
            ckpt = latest_checkpoint(self.output_dir) if self.output_dir else None
        else:
            ckpt = Path(resume)
        if ckpt is None:
            warnings.warn("resume: no checkpoint found; starting from scratch", stacklevel=4)
        else:
            self.resume_from(ckpt)

    def final_model(self) -> torch.nn.Module:
        """The trained model to hand back: unwrapped, and without accelerate's autocast wrapper
        on its forward (kept while training, where callbacks use it), so it computes in the
        precision it is saved and loaded in."""
        return self.accelerator.unwrap_model(self.wrapped, keep_fp32_wrapper=False)

    def resume_from(self, path: str | os.PathLike) -> None:
        """Load weights, optimizer, scheduler, RNG and `TrainState` from a checkpoint folder."""
        load_checkpoint(self, path)
        note(f"resumed from {path} (epoch {self.state.epoch} done)")

    # ---- the loop ----------------------------------------------------------------------
    def fit(self) -> TrainState:
        acc = self.accelerator
        self._call("on_fit_start")
        while self.state.epoch < self.epochs and not self.state.should_stop:
            # accelerate's loader re-sets its sampler's epoch from its own iteration counter, which
            # restarts at 0 in a resumed process: set both, or a resumed epoch replays epoch 0's order
            if hasattr(self.train_loader, "set_epoch"):
                self.train_loader.set_epoch(self.state.epoch)
            if self.sampler is not None and hasattr(self.sampler, "set_epoch"):
                self.sampler.set_epoch(self.state.epoch)
            self.wrapped.train()
            self._call("on_epoch_start")
            start, total, n_batches, n_items = time.perf_counter(), 0.0, 0, 0
            for batch in self.train_loader:
                with acc.accumulate(self.wrapped):
                    loss = self.compute_loss(self.wrapped, batch)
                    value = loss.detach().float().item()
                    if not math.isfinite(value):
                        raise FloatingPointError(
                            f"the loss is {value} at epoch {self.state.epoch + 1}, step {n_batches + 1}: lower "
                            "`learning_rate`, set `max_grad_norm`, or check the inputs for NaN/inf")
                    acc.backward(loss)
                    if acc.sync_gradients and self.max_grad_norm:
                        acc.clip_grad_norm_(self.wrapped.parameters(), self.max_grad_norm)
                    self.optimizer.step()
                    if self.scheduler is not None and acc.sync_gradients:
                        self.scheduler.step()
                    self.optimizer.zero_grad(set_to_none=True)
                if acc.sync_gradients:
                    self.state.global_step += 1
                total, n_batches = total + value, n_batches + 1
                n_items += _batch_len(batch)
                self._call("on_batch_end", value)
            seconds = time.perf_counter() - start
            self.state.epoch += 1
            logs = {"epoch": self.state.epoch, "train_loss": total / max(n_batches, 1),
                    "epoch_time_s": seconds, "train_samples_per_s": n_items * acc.num_processes / seconds}
            if self.evaluate_fn is not None:
                logs.update(self.evaluate_fn(self.model))
            self.state.history.append(logs)
            self._call("on_epoch_end", logs)
        self._call("on_fit_end")
        return self.state


def _batch_len(batch) -> int:
    """Number of items in a batch: the labels' length when the batch is (inputs, labels)."""
    if isinstance(batch, (tuple, list)) and batch and hasattr(batch[-1], "shape"):
        return int(batch[-1].shape[0])
    if isinstance(batch, dict):
        for v in batch.values():
            if hasattr(v, "shape"):
                return int(v.shape[0])
    return 0
