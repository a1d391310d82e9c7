"""Batch samplers: `GroupBatchSampler` keeps related items together so every batch holds
positives to mine; `LengthGroupedBatchSampler` also puts items of similar length together, so
padded batches waste little compute (every text recipe uses it: embedding pairs, classifier
rows, LLM sequences)."""

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
        contrastive: True (metric learning): a last batch of one chunk joins the previous batch
            (it has nothing to contrast with) and batches hold at least 2 items; False (a
            classifier's rows, an LLM's sequences): batches are simply packed.

    Raises:
        ValueError: batch_size < 2 (1 when not contrastive) or chunk_size < 1.
    """

    def __init__(self, groups: np.ndarray, batch_size: int, chunk_size: int | None = None,
                 shuffle: bool = True, seed: int = 0, contrastive: bool = True) -> None:
        if batch_size < (2 if contrastive else 1):
            raise ValueError(f"batch_size: expected an int >= {2 if contrastive else 1}, got {batch_size}")
        if chunk_size is not None and chunk_size < 1:
            raise ValueError(f"num_items_per_class: expected an int >= 1, got {chunk_size}")
        self.groups = np.asarray(groups)
        self.batch_size, self.chunk_size, self.shuffle, self.seed = batch_size, chunk_size, shuffle, seed
        self.contrastive = contrastive
        self.epoch = 0
        self._batches = self._make_batches()

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order the next iteration yields."""
        if epoch != self.epoch:
            self.epoch = epoch
            self._batches = self._make_batches()

    def set_batch_size(self, batch_size: int) -> None:
        """Build batches of `batch_size` items from now on (the engine makes the global batches
        of a multi-process run: processes x the per-process batch size, see
        `finetuner.engine.distributed.ShardedBatchSampler`).

        Raises:
            ValueError: batch_size below the minimum of this sampler (2 when contrastive, else 1).
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < (2 if self.contrastive else 1):
            raise ValueError(f"batch_size: expected an int >= {2 if self.contrastive else 1}, got {batch_size!r}")
        if batch_size != self.batch_size:
            self.batch_size = batch_size
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
            if batches and n_chunks == 1 and self.contrastive:
                batches[-1].extend(current)
            else:
                batches.append(current)
        return self._mix_lone_classes(batches)

    def _mix_lone_classes(self, batches: list[list[int]]) -> list[list[int]]:
        """Class format, contrastive: a batch whose chunks all came from one class has no
        negative (an in-batch-negative loss is 0 there, a wasted step; with 2 classes and 8
        chunks a batch, 1 batch in 128). Swap its last item with an item of another class from a
        batch that keeps two classes and a positive pair after the swap; each such batch gives
        one item, in order. Every item stays once per epoch and the batch sizes stay."""
        if not self.contrastive or self.chunk_size is None:
            return batches
        donors = iter(batches)
        for b in batches:
            g = int(self.groups[b[0]])
            if len(b) < 3 or (self.groups[b] != g).any():
                continue
            for c in donors:
                j = self._swappable(c, g)
                if j is not None:
                    c[j], b[-1] = b[-1], c[j]
                    break
        return batches

    def _swappable(self, batch: list[int], g: int) -> int | None:
        """The position in `batch` of an item not of class `g` whose swap for an item of `g`
        leaves the batch two classes and a positive pair, or None."""
        labels, counts = np.unique(self.groups[batch], return_counts=True)
        for h in labels.tolist():
            if h == g:
                continue
            after = dict(zip(labels.tolist(), counts.tolist()))
            after[h] -= 1
            after[g] = after.get(g, 0) + 1
            if sum(v > 0 for v in after.values()) >= 2 and max(after.values()) >= 2:
                return next(i for i, item in enumerate(batch) if self.groups[item] == h)
        return None

    def __iter__(self):
        # like DistributedSampler: the order changes only through set_epoch (the engine calls it)
        return iter(self._batches)

    def __len__(self) -> int:
        return len(self._batches)


class LengthGroupedBatchSampler(GroupBatchSampler):
    """`GroupBatchSampler` whose batches hold chunks of similar length, so padding is small.

    Each epoch: chunks (whole groups, `chunk_size` items of a class, or single items when there
    are no groups) are shuffled, cut into pools of about `pool_batches` batches, sorted by length
    inside a pool (a chunk's length is its longest item), packed into batches, and the batches
    are shuffled. This is the "mega-batch" order of transformers' `LengthGroupedSampler`
    (`get_length_grouped_indices`), applied to whole groups so pairs and sessions stay together
    for in-batch mining. Without shuffling (evaluation) the whole set is sorted, longest first.

    Args:
        lengths: int array [N], the length of each item (tokens, or characters as a proxy).
        batch_size: items per batch.
        groups: int array [N], the group of each item; None: every item alone (classifier rows,
            LLM sequences), and batches are packed without the contrastive rules.
        chunk_size, shuffle, seed: as in `GroupBatchSampler`.
        pool_batches: batches per sorted pool (>= 1); 1 gives random batches, a large value
            sorts the whole epoch (least padding, most length-alike batches).

    Raises:
        ValueError: lengths and groups differ in length, or pool_batches < 1 (and see
            `GroupBatchSampler`).
    """

    def __init__(self, lengths, batch_size: int, *, groups=None, chunk_size: int | None = None,
                 pool_batches: int = 32, shuffle: bool = True, seed: int = 0) -> None:
        self.lengths = np.asarray(lengths, dtype=np.int64)
        contrastive = groups is not None
        groups = np.arange(len(self.lengths)) if groups is None else np.asarray(groups)
        if len(self.lengths) != len(groups):
            raise ValueError(f"lengths: expected one per item ({len(groups)}), got {len(self.lengths)}")
        if isinstance(pool_batches, bool) or not isinstance(pool_batches, (int, np.integer)) or pool_batches < 1:
            raise ValueError(f"group_by_length: expected an int >= 1 (batches per sorted pool), got {pool_batches!r}")
        self.pool_batches = int(pool_batches)
        super().__init__(groups, batch_size, chunk_size, shuffle, seed, contrastive)

    def _make_batches(self) -> list[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        chunks = self._chunks(rng)
        pool_size = self.pool_batches * self.batch_size if self.shuffle else len(self.groups)
        batches: list[list[int]] = []
        start = 0
        while start < len(chunks):
            stop, size = start, 0
            while stop < len(chunks) and size < pool_size:
                size += len(chunks[stop])
                stop += 1
            pool = chunks[start:stop]
            pool.sort(key=lambda c: -int(self.lengths[c].max()))
            batches += _pack(pool, self.batch_size)
            start = stop
        if self.contrastive and len(batches) > 1 and len({int(self.groups[i]) for i in batches[-1]}) == 1:
            last = batches.pop()  # a lone group has nothing to contrast with
            batches[-1].extend(last)
        batches = self._mix_lone_classes(batches)
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        return batches


def _pack(chunks: list[np.ndarray], batch_size: int) -> list[list[int]]:
    """Pack chunks in order into batches of at most `batch_size` items (a chunk is never split)."""
    batches, current = [], []
    for chunk in chunks:
        if current and len(current) + len(chunk) > batch_size:
            batches.append(current)
            current = []
        current.extend(chunk.tolist())
    if current:
        batches.append(current)
    return batches
