"""Data-parallel training for every recipe: which items each process trains on, how a step's
loss is weighted so W processes take the step one process would, and the few collectives the
loop needs (all on `torch.distributed`, set up by `accelerate launch` or `torchrun`).

The rule: a run on W processes with a per-process batch of B takes the optimizer steps of one
process with batches of W x B.

- `ShardedBatchSampler` builds each epoch's global batches of W x B items with the recipe's own
  sampler (the same seed gives every process the same list), splits each into W contiguous
  parts and hands process r part r. Every item is seen once per epoch across the processes,
  groups stay whole within a global batch, and every process takes the same number of steps,
  whatever the batch sizes (unlike accelerate's `BatchSamplerShard`, which drops rounds whose
  last batch is short).
- Each process weighs its loss by its share of the global batch (n_r / n items), so DDP's
  gradient average equals the gradient of the item mean over the global batch.
- In-batch losses (a batch's items are each other's negatives) call `gather_in_batch` on the
  embeddings and labels: each process then computes the loss of the whole global batch, its
  own part keeping its gradient (the other parts are constants), and the engine scales it so
  the averaged gradient is exactly the one-process gradient (as in sentence-transformers'
  `gather_across_devices` and OpenCLIP's `gather_features`).
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import torch
import torch.distributed as dist


def world() -> tuple[int, int]:
    """(rank, number of processes) of the running process group, (0, 1) without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class ShardedBatchSampler:
    """The batches one process trains on: part `rank` of each global batch of the epoch.

    Args:
        batch_sampler: the recipe's batch sampler (an iterable of index lists, with
            `set_epoch(e)` for a reproducible order). With `num_replicas` > 1 its batch size is
            multiplied by `num_replicas` (through `set_batch_size`, or the `batch_size` of a
            `torch.utils.data.BatchSampler`), so a global batch is what one process with that
            batch size would train on; a sampler without either is split as it is.
        num_replicas: number of processes W (>= 1).
        rank: this process, in [0, W).

    Attributes:
        batch_size: the per-process batch size (the recipe's, before the scaling above), or
            None for a sampler that has none.

    Iteration yields this process's part of each global batch: the global batch's items split
    into W contiguous runs of sizes differing by at most 1. A process whose part is empty (a
    global batch of fewer than W items) gets the batch's first item, with weight 0
    (`part_sizes` says 0 for it), so every process takes every step.

    Raises:
        ValueError: num_replicas < 1 or rank outside [0, num_replicas).
    """

    def __init__(self, batch_sampler, num_replicas: int = 1, rank: int = 0) -> None:
        if isinstance(num_replicas, bool) or not isinstance(num_replicas, int) or num_replicas < 1:
            raise ValueError(f"num_replicas: expected an int >= 1, got {num_replicas!r}")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank: expected an int in [0, {num_replicas}), got {rank!r}")
        self.inner, self.num_replicas, self.rank = batch_sampler, num_replicas, rank
        self.batch_size: int | None = getattr(batch_sampler, "batch_size", None)  # per process; None if unknown
        self.epoch, self.start = 0, 0
        self._batches: list[list[int]] | None = None
        if num_replicas > 1:
            if hasattr(batch_sampler, "set_batch_size"):
                batch_sampler.set_batch_size(batch_sampler.batch_size * num_replicas)
            elif isinstance(batch_sampler, torch.utils.data.BatchSampler):
                batch_sampler.batch_size *= num_replicas

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch (the inner sampler's order for it); the engine calls it before every
        epoch, and the epoch's batches are drawn once (an inner sampler without `set_epoch`
        draws a new order here)."""
        self.epoch = epoch
        if hasattr(self.inner, "set_epoch"):
            self.inner.set_epoch(epoch)
        self._batches = None

    def skip(self, batches: int) -> None:
        """Start the next iteration at global batch `batches` of the epoch (a resumed epoch)."""
        self.start = int(batches)

    def global_batches(self) -> list[list[int]]:
        """This epoch's global batches (index lists), the same on every process."""
        if self._batches is None:
            self._batches = [[int(i) for i in b] for b in self.inner]
        return self._batches

    def part_sizes(self, i: int) -> list[int]:
        """Items of global batch `i` on each process (0 for a process that holds a dummy item)."""
        n, w = len(self.global_batches()[i]), self.num_replicas
        return [n // w + (1 if r < n % w else 0) for r in range(w)]

    def part(self, i: int) -> list[int]:
        """This process's items of global batch `i`."""
        batch = self.global_batches()[i]
        sizes = self.part_sizes(i)
        start = sum(sizes[: self.rank])
        return batch[start:start + sizes[self.rank]] or batch[:1]

    def __iter__(self) -> Iterator[list[int]]:
        start, self.start = self.start, 0
        for i in range(start, len(self.global_batches())):
            yield self.part(i)

    def __len__(self) -> int:
        return len(self.inner)


# ---- the step context: what gather_in_batch needs to know ---------------------------------------
@dataclass
class Step:
    """One training step on W processes: each process's item count, this rank, the device
    collectives run on; `gathered` is set when the loss was computed on the whole global batch."""

    sizes: Sequence[int]
    rank: int
    device: torch.device
    gathered: bool = False
    counts: Sequence[float] | None = None  # units each process's loss is a mean over (`mean_over`)

    @property
    def world_size(self) -> int:
        """Number of processes."""
        return len(self.sizes)

    def weight(self) -> float:
        """This process's share of the step's loss: 1/W for a loss of the whole global batch;
        else its share of the units its loss is a mean over (`mean_over`), by default items."""
        if self.gathered:
            return 1.0 / self.world_size
        counts = self.counts if self.counts is not None else self.sizes
        return counts[self.rank] / max(sum(counts), 1)


_local = threading.local()


@contextmanager
def step_context(step: Step | None) -> Iterator[Step | None]:
    """Make `step` the current step of this thread while the loss is computed."""
    previous = getattr(_local, "step", None)
    _local.step = step
    try:
        yield step
    finally:
        _local.step = previous


def gather_in_batch(*tensors: torch.Tensor | None) -> Any:
    """The global batch of an in-batch loss: each per-item tensor concatenated over the
    processes, in global-batch order, inside a multi-process training step; the tensors
    themselves otherwise (one process, evaluation, outside the engine).

    This process's rows keep their gradient; the other processes' rows are constants. The
    engine then scales the loss so DDP's averaged gradient equals the one-process gradient of
    the whole global batch. Call it on everything the loss reads per item (embeddings, labels,
    duplicate ids); None passes through.

    Args:
        *tensors: tensors [n_r, ...] (n_r = this process's items), or None.

    Returns:
        One tensor [n, ...] per argument (n = the global batch), the tensor alone for one argument.
    """
    step = getattr(_local, "step", None)
    if step is None or step.world_size == 1:
        return tensors[0] if len(tensors) == 1 else tensors
    out = tuple(None if t is None else _gather(t, step) for t in tensors)
    step.gathered = True
    return out[0] if len(out) == 1 else out


def mean_over(total: torch.Tensor, count: int | float) -> torch.Tensor:
    """`total / count` for a loss that is a mean over `count` units other than the batch's items
    (a language model's labelled tokens), telling the engine to weigh each process's loss by
    its share of the units of the global batch, so W processes take exactly the step of one
    process with the whole global batch. Outside a multi-process step it is `total / count`.

    Args:
        total: the summed loss (scalar tensor); count: the units summed (> 0).
    """
    step = getattr(_local, "step", None)
    if step is not None and step.world_size > 1:
        local = float(count) if step.sizes[step.rank] else 0.0  # a dummy part weighs nothing
        counts = torch.zeros(step.world_size, dtype=torch.float64, device=step.device)
        counts[step.rank] = local
        dist.all_reduce(counts)
        step.counts = counts.tolist()
    return total / count


def _gather(t: torch.Tensor, step: Step) -> torch.Tensor:
    local = t[: step.sizes[step.rank]]  # a dummy item (size 0) contributes nothing
    wire = torch.float32 if t.dtype in (torch.float16, torch.bfloat16) else t.dtype  # gloo: no half types
    width = max(step.sizes)
    buf = torch.zeros((width, *t.shape[1:]), dtype=wire, device=step.device)
    buf[: local.shape[0]] = local.detach().to(step.device, wire)
    parts = [torch.empty_like(buf) for _ in step.sizes]
    dist.all_gather(parts, buf)
    pieces = [local if r == step.rank else parts[r][:n].to(t.device, t.dtype) for r, n in enumerate(step.sizes)]
    return torch.cat(pieces)


# ---- small collectives ----------------------------------------------------------------------------
def all_reduce_sum(values: Sequence[float], device: torch.device) -> list[float]:
    """The sums over processes of a few numbers (float64), the numbers themselves on one process."""
    if world()[1] == 1:
        return [float(v) for v in values]
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """`obj` of process `src` on every process (picklable objects of our own making only:
    metrics dicts, a folder name), itself on one process."""
    if world()[1] == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def on_main(fn, *args, **kwargs) -> Any:
    """Run `fn(*args, **kwargs)` on process 0 only and return its result on every process (the
    evaluation of a run: once, the same numbers everywhere, so early stopping agrees). An error
    on process 0 is raised there, and as a RuntimeError naming it on the others."""
    rank, size = world()
    if size == 1:
        return fn(*args, **kwargs)
    result, failure, error = None, None, None
    if rank == 0:
        try:
            result = fn(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - re-raised on every process below
            failure, error = e, f"{type(e).__name__}: {e}"
    result, error = broadcast_object((result, error))
    if failure is not None:
        raise failure
    if error is not None:
        raise RuntimeError(f"process 0 failed: {error}")
    return result
