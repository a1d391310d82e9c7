"""Batch samplers that keep related items together so every batch holds positives to mine."""

from __future__ import annotations

import numpy as np


class GroupBatchSampler:
    """Batches built from whole chunks of one group, every item once per epoch.

    - Class format (`chunk_size=num_items_per_class`): each class's items are shuffled and cut
      into chunks of `chunk_size`; chunks are shuffled and packed into batches, so a batch of
      256 with 4 items per class holds about 64 classes x 4 items (PK sampling, Hermans et al.,
      2017), and every item is seen once per epoch (unlike samplers that draw with replacement).
    - Session / pair / triplet format (`chunk_size=None`): a chunk is a whole group (a query with
      its matches), never split unless it alone exceeds `batch_size`.

    Args:
        groups: int array [N], the group of each item.
        batch_size: items per batch (>= 2); a batch may run over by less than one chunk so the
            last batch is never a lone group.
        chunk_size: items per chunk, or None for whole groups.
        shuffle: False keeps a fixed order (evaluation).
        seed: with `set_epoch`, makes each epoch's order reproducible (and equal on every process);
            call `set_epoch(e)` before epoch e, as with `DistributedSampler`.

    Raises:
        ValueError: batch_size < 2 or chunk_size < 1.
    """

    def __init__(self, groups: np.ndarray, batch_size: int, chunk_size: int | None = None,
                 shuffle: bool = True, seed: int = 0) -> None:
        if batch_size < 2:
            raise ValueError(f"batch_size: expected an int >= 2, got {batch_size}")
        if chunk_size is not None and chunk_size < 1:
            raise ValueError(f"num_items_per_class: expected an int >= 1, got {chunk_size}")
        self.groups = np.asarray(groups)
        self.batch_size, self.chunk_size, self.shuffle, self.seed = batch_size, chunk_size, shuffle, seed
        self.drop_last = False  # read by accelerate when it shards batches over processes
        self.epoch = 0
        self._batches = self._make_batches()

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order the next iteration yields."""
        if epoch != self.epoch:
            self.epoch = epoch
            self._batches = self._make_batches()

    def _chunks(self, rng: np.random.Generator) -> list[np.ndarray]:
        """This epoch's chunks (item positions): each group cut into pieces of `chunk_size`
        (else `batch_size`) items, random inside a group, the chunks in random order (when
        shuffling)."""
        n = len(self.groups)
        order = rng.permutation(n) if self.shuffle else np.arange(n)
        order = order[np.argsort(self.groups[order], kind="stable")]  # grouped, random inside a group
        starts = np.flatnonzero(np.r_[True, self.groups[order][1:] != self.groups[order][:-1]])
        bounds = np.r_[starts, n]
        step = self.chunk_size or self.batch_size
        chunks = [order[s:e][i:i + step] for s, e in zip(bounds[:-1], bounds[1:]) for i in range(0, e - s, step)]
        if self.shuffle:
            chunks = [chunks[i] for i in rng.permutation(len(chunks))]
        return chunks

    def _make_batches(self) -> list[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        chunks = self._chunks(rng)
        batches, current, n_chunks = [], [], 0
        for chunk in chunks:
            if current and len(current) + len(chunk) > self.batch_size:
                batches.append(current)
                current, n_chunks = [], 0
            current.extend(chunk.tolist())
            n_chunks += 1
        if current:
            # a last batch of a single chunk has nothing to contrast with: fold it into the previous
            if batches and n_chunks == 1:
                batches[-1].extend(current)
            else:
                batches.append(current)
        return batches

    def __iter__(self):
        # like DistributedSampler: the order changes only through set_epoch (the engine calls it)
        return iter(self._batches)

    def __len__(self) -> int:
        return len(self._batches)
