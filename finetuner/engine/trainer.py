"""The one training loop every task runs on, built on `accelerate`.

accelerate brings device placement, bf16 autocast, gradient accumulation and the data-parallel
model (DDP over gloo or NCCL, launched by `accelerate launch` or `torchrun`); the engine itself
decides which items each process trains on and how its loss is weighted
(`finetuner.engine.distributed`), evaluates once, and checkpoints so that a resumed run, even
mid-epoch, continues exactly (`finetuner.engine.checkpoint`). This file only reads top to bottom
as the loop. A task supplies the model, a data loader, `compute_loss(model, batch) -> scalar`
and `evaluate(model) -> dict`.
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
from accelerate.data_loader import prepare_data_loader
from accelerate.state import AcceleratorState, GradientState, PartialState
from accelerate.utils import DistributedDataParallelKwargs

from ..console import note
from .callbacks import Callback
from .checkpoint import Checkpoints, latest_checkpoint, load_checkpoint  # latest_checkpoint: also exported here
from .distributed import ShardedBatchSampler, Step, all_reduce_sum, on_main, step_context
from .optim import Schedule
from .precision import resolve_precision
from .state import TrainState

PRECISIONS = {"fp32": "no", "no": "no", "bf16": "bf16", "fp16": "fp16"}  # ours -> accelerate's


def make_accelerator(device: str = "auto", precision: str = "fp32", gradient_accumulation_steps: int = 1) -> Accelerator:
    """An `Accelerator` for `device` ("auto", "cpu", "cuda", "mps") and `precision`
    ("auto": see `finetuner.engine.precision.resolve_precision`, "fp32", "bf16", "fp16").

    Under a launcher (`torchrun`, `accelerate launch`) it joins the process group; DDP then
    tolerates parameters a step does not use (e.g. a text encoder's pooler). "auto" on a machine
    without an accelerator joins it on the CPU (gloo), as "cpu" does: accelerate would otherwise
    start W unconnected runs, each training on all the data and writing the same files.

    FSDP (`accelerate launch` with `distributed_type: FSDP` or `--use_fsdp`) shards only on GPUs
    (and accelerate's other device types): on the CPU accelerate 1.16 drops the request
    (`AcceleratorState` switches to FSDP only for MULTI_GPU/NPU/XPU/..., not MULTI_CPU) and
    the run is DDP, each process holding the whole model; a warning says so.

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
    launched = int(os.environ.get("WORLD_SIZE", "1")) > 1
    acc = Accelerator(
        mixed_precision=PRECISIONS[precision],
        cpu=device == "cpu" or (device == "auto" and launched and torch.accelerator.current_accelerator() is None),
        gradient_accumulation_steps=gradient_accumulation_steps,
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
    )
    if launched and os.environ.get("ACCELERATE_USE_FSDP", "").lower() == "true" and acc.distributed_type.name != "FSDP":
        warnings.warn(f"FSDP was asked for, but accelerate does not shard on {acc.device.type!r} "
                      f"({acc.distributed_type.name}): the run is data-parallel (DDP), each process holding the "
                      "whole model; FSDP needs GPUs", stacklevel=3)
    return acc


class Trainer:
    """Runs the loop: epochs of (forward, loss, backward, step), evaluation after each epoch,
    callbacks, checkpoints every epoch (`finetuner.engine.checkpoint`), resume from the last one.

    On W processes each global batch (W x the recipe's batch) is split across them
    (`finetuner.engine.distributed.ShardedBatchSampler`): every item is trained once per epoch,
    and the optimizer steps equal those of one process with batches W times larger (a loss that
    calls `gather_in_batch` sees the whole global batch). Evaluation runs once, on process 0,
    and every process gets its numbers; the train loss is the mean over global batches.

    Args:
        model: a torch module.
        train_loader: a `torch.utils.data.DataLoader` with a batch sampler, yielding what
            `compute_loss` takes.
        compute_loss: `(model, batch) -> scalar tensor` (a mean over the batch's items).
        optimizer: a torch optimizer over the model's trainable parameters.
        scheduler: a torch LR scheduler stepped once per optimizer step, or None; its length
            counts the recipe's batches (on W processes it advances W steps per optimizer step).
        epochs: number of epochs (>= 1).
        accelerator: from `make_accelerator`.
        evaluate: `(model) -> dict[str, float]` run after each epoch on the unwrapped model, or None.
        callbacks: `Callback` objects.
        output_dir: where checkpoints and logs go; None keeps nothing on disk.
        save_fn: `(model, path)` used by callbacks that save the model.
        max_grad_norm: clip gradients to this L2 norm (None: no clipping).
        keep_checkpoints: how many epoch checkpoints to keep (the newest), unless a `Checkpoints`
            callback is given (it then decides when checkpoints are written and how many are kept).
        sampler: the loader's batch sampler (default `train_loader.batch_sampler`), told the
            epoch (`set_epoch`) so every process and a resumed run draw the same order.

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
        self.max_grad_norm, self.keep_checkpoints = max_grad_norm, keep_checkpoints
        self.state = TrainState()
        self._model_raw = model
        # FSDP shards the model in place: keep its module tree (sharing the tensors, no copy) to
        # hand back a plain model with the gathered weights at the end
        self._plain = _module_tree(model) if accelerator.distributed_type.name == "FSDP" else None
        self.wrapped, self.optimizer = accelerator.prepare(model, optimizer)
        if self._plain is not None:  # FSDP2 made sharded copies: release the full tensors it no longer uses
            _release(self._plain, keep={id(p) for p in self.wrapped.parameters()})  # FSDP1 keeps them (views)
        self.batches, self.train_loader = self._shard(train_loader, sampler)
        self.sampler = self.batches.inner if self.batches is not None else sampler
        self.scheduler, self._scheduler_steps = scheduler, self._fit_schedule(scheduler)

    def _fit_schedule(self, scheduler) -> int:
        """Scheduler steps per optimizer step. The engine steps the schedule itself (not
        accelerate, which steps it W times per step). On W processes a named schedule
        (`engine.optim.Schedule`, counted by the recipe in its per-process batches) is resized
        to the run's optimizer steps over global batches, so it equals one process's with the
        W times larger batch; any other schedule advances W steps per optimizer step."""
        world = self.accelerator.num_processes
        if scheduler is None or world == 1 or self.batches is None:
            return 1
        lambdas = getattr(scheduler, "lr_lambdas", [])
        if not lambdas or not all(isinstance(f, Schedule) for f in lambdas):
            return world
        per_epoch = max(math.ceil(len(self.batches.inner) / self.accelerator.gradient_accumulation_steps), 1)
        for f in lambdas:
            f.resize(self.epochs * per_epoch)
        lrs = [base * f(scheduler.last_epoch) for base, f in zip(scheduler.base_lrs, lambdas)]
        for group, lr in zip(scheduler.optimizer.param_groups, lrs):  # the current rate, of the resized schedule
            group["lr"] = lr
        scheduler._last_lr = lrs
        return 1

    def _shard(self, loader, sampler) -> tuple[ShardedBatchSampler | None, object]:
        """This process's loader: the recipe's batch sampler behind a `ShardedBatchSampler`,
        batches moved to the device by accelerate (not sharded again by it)."""
        acc = self.accelerator
        inner = sampler if sampler is not None else getattr(loader, "batch_sampler", None)
        if inner is None or not isinstance(loader, torch.utils.data.DataLoader):
            return None, acc.prepare(loader)  # an iterable dataset: accelerate's own sharding
        batches = ShardedBatchSampler(inner, acc.num_processes, acc.process_index)
        workers = loader.num_workers
        own = torch.utils.data.DataLoader(
            loader.dataset, batch_sampler=batches, collate_fn=loader.collate_fn, num_workers=workers,
            pin_memory=loader.pin_memory, timeout=loader.timeout, worker_init_fn=loader.worker_init_fn,
            generator=torch.Generator(),  # its seed draw must not move the global RNG (exact resume)
            persistent_workers=loader.persistent_workers if workers else False,
            prefetch_factor=loader.prefetch_factor if workers else None)
        return batches, prepare_data_loader(own, acc.device, num_processes=1, process_index=0, put_on_device=True)

    @property
    def model(self) -> torch.nn.Module:
        """The unwrapped model (no DDP wrapper): what users and callbacks see."""
        return self.accelerator.unwrap_model(self.wrapped)

    @property
    def steps_per_epoch(self) -> int:
        """Batches per epoch on each process (global batches on W processes)."""
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
        precision it is saved and loaded in. Under FSDP every process calls it (the weights are
        gathered: a collective) and gets the same plain, unsharded model with the full weights."""
        if self._plain is not None:
            from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

            full = get_model_state_dict(self.wrapped, options=StateDictOptions(full_state_dict=True))
            self._plain.load_state_dict(full, assign=True)  # assign: in place of the released (meta) tensors
            if callable(getattr(self._plain, "tie_weights", None)):
                self._plain.tie_weights()  # a transformers model's tied input / output embeddings
            return self._plain.to(self.accelerator.device).train(self.wrapped.training)
        model = self.accelerator.unwrap_model(self.wrapped, keep_fp32_wrapper=False)
        bound = model.__dict__.get("forward")
        if getattr(bound, "__func__", None) is getattr(type(model), "forward", None):
            del model.forward  # accelerate left the class's own forward as an attribute: the pickle stays plain
        return model

    def resume_from(self, path: str | os.PathLike) -> None:
        """Load weights, optimizer, scheduler, RNG, `TrainState` and callback states from a
        checkpoint folder; a checkpoint saved within an epoch continues at its next batch."""
        load_checkpoint(self, path)
        where = f", {self.state.batches_done} batches into epoch {self.state.epoch + 1}" if self.state.batches_done else ""
        note(f"resumed from {path} (epoch {self.state.epoch} done{where})")

    def evaluate(self) -> dict:
        """`evaluate(model)` once, on process 0 (on every process under FSDP, whose forward is
        collective), with the same result on every process; {} without an evaluate function."""
        if self.evaluate_fn is None:
            return {}
        if self.accelerator.distributed_type.name == "FSDP":
            return self.evaluate_fn(self.model)
        return on_main(self.evaluate_fn, self.model)

    # ---- the loop ----------------------------------------------------------------------
    def fit(self) -> TrainState:
        acc, state = self.accelerator, self.state
        self._call("on_fit_start")
        while state.epoch < self.epochs and not state.should_stop:
            # accelerate's loader re-sets its sampler's epoch from its own iteration counter, which
            # restarts at 0 in a resumed process: set both, or a resumed epoch replays epoch 0's order
            if hasattr(self.train_loader, "set_epoch"):
                self.train_loader.set_epoch(state.epoch)
            if self.batches is not None:
                self.batches.set_epoch(state.epoch)
                self.batches.skip(state.batches_done)
            elif self.sampler is not None and hasattr(self.sampler, "set_epoch"):
                self.sampler.set_epoch(state.epoch)
            self.wrapped.train()
            self._call("on_epoch_start")
            start, seconds_before = time.perf_counter(), state.epoch_seconds
            for batch in self.train_loader:
                step = self._step_context()
                with acc.accumulate(self.wrapped):
                    with step_context(step):
                        loss = self.compute_loss(self.wrapped, batch)
                    local = loss.detach().float().item()
                    weight = step.weight() if step is not None else 1.0
                    value, items = all_reduce_sum([local * weight, self._items(step, batch)], acc.device)
                    if not math.isfinite(value):
                        raise FloatingPointError(
                            f"the loss is {value} at epoch {state.epoch + 1}, step {state.batches_done + 1}: lower "
                            "`learning_rate`, set `max_grad_norm`, or check the inputs for NaN/inf")
                    acc.backward(loss * (weight * acc.num_processes) if step is not None else loss)
                    if acc.sync_gradients and self.max_grad_norm:
                        acc.clip_grad_norm_(self.wrapped.parameters(), self.max_grad_norm)
                    self.optimizer.step()
                    if self.scheduler is not None and acc.sync_gradients and not self.optimizer.step_was_skipped:
                        for _ in range(self._scheduler_steps):
                            self.scheduler.step()
                    self.optimizer.zero_grad(set_to_none=True)
                if acc.sync_gradients:
                    state.global_step += 1
                state.batches_done += 1
                state.epoch_loss_sum += value
                state.epoch_items += int(items)
                state.epoch_seconds = seconds_before + time.perf_counter() - start
                self._call("on_batch_end", value)
            state.epoch += 1
            seconds = seconds_before + time.perf_counter() - start
            logs = {"epoch": state.epoch, "train_loss": state.epoch_loss_sum / max(state.batches_done, 1),
                    "epoch_time_s": seconds, "train_samples_per_s": state.epoch_items / max(seconds, 1e-9)}
            state.start_epoch()
            logs.update(self.evaluate())
            state.history.append(logs)
            self._call("on_epoch_end", logs)
        self._call("on_fit_end")
        return state

    def _step_context(self) -> Step | None:
        """The current global batch's split over the processes (None on one process)."""
        if self.batches is None or self.accelerator.num_processes == 1:
            return None
        sizes = self.batches.part_sizes(self.state.batches_done)
        return Step(sizes, self.accelerator.process_index, self.accelerator.device)

    @staticmethod
    def _items(step: Step | None, batch) -> int:
        """Items of this process's part of the batch (0 for a dummy part)."""
        return step.sizes[step.rank] if step is not None else _batch_len(batch)


def _module_tree(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of `model`'s modules that shares its parameters and buffers (no tensor is copied)."""
    import copy

    memo = {id(t): t for t in [*model.parameters(), *model.buffers()]}
    return copy.deepcopy(model, memo)


def _release(tree: torch.nn.Module, keep: set[int]) -> None:
    """Put meta tensors of the same shapes in place of `tree`'s parameters whose id is not in
    `keep` (parameters shared by several modules stay shared)."""
    empty: dict[int, torch.nn.Parameter] = {}
    for module in tree.modules():
        for name, p in list(module._parameters.items()):
            if p is not None and id(p) not in keep:
                if id(p) not in empty:
                    empty[id(p)] = torch.nn.Parameter(torch.empty_like(p, device="meta"), requires_grad=p.requires_grad)
                module._parameters[name] = empty[id(p)]


def _batch_len(batch) -> int:
    """Number of items in a batch: the labels' length when the batch is (inputs, labels)."""
    if isinstance(batch, (tuple, list)) and batch and hasattr(batch[-1], "shape"):
        return int(batch[-1].shape[0])
    if isinstance(batch, dict):
        for v in batch.values():
            if hasattr(v, "shape"):
                return int(v.shape[0])
    return 0
