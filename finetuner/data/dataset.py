"""A map-style dataset over `LabeledData` that fetches a whole batch at once, and its collate."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch

from .labeled import LabeledData


class LabeledDataset(torch.utils.data.Dataset):
    """Items and labels of a `LabeledData`, fetched a batch at a time (`__getitems__`: one numpy
    slice instead of B Python calls).

    Args:
        data: the labeled data.
        preprocess_fn: applied to each item before collation (e.g. augmentation), or None.
    """

    def __init__(self, data: LabeledData, preprocess_fn: Callable | None = None) -> None:
        self.data, self.preprocess_fn = data, preprocess_fn

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int):
        return self.__getitems__([i])

    def __getitems__(self, index) -> tuple[Any, np.ndarray]:
        items = self.data.take(index)
        if self.preprocess_fn is not None:
            items = [self.preprocess_fn(x) for x in items]
        return items, self.data.labels(index)


def default_collate(items: Any) -> Any:
    """Stack a batch of items into a model input.

    numpy arrays / tensors -> one tensor (float64 becomes float32); strings -> the list itself
    (text models bring their own collate); anything else -> `torch.utils.data.default_collate`.
    """
    if isinstance(items, np.ndarray):
        t = torch.from_numpy(items)
        return t.float() if t.is_floating_point() else t
    if isinstance(items, list) and items:
        first = items[0]
        if isinstance(first, str):
            return items
        if isinstance(first, np.ndarray):
            return default_collate(np.stack(items))
        if isinstance(first, torch.Tensor):
            t = torch.stack(items)
            return t.float() if t.dtype == torch.float64 else t
    return torch.utils.data.default_collate(items)


class Collate:
    """(items, labels) -> (model inputs, label tensor), with the user's `collate_fn` if given.

    The user's `collate_fn` receives a list of items (as in the seed examples:
    `collate_fn(inputs: List[str]) -> tokenizer output`).
    """

    def __init__(self, collate_fn: Callable | None = None) -> None:
        self.collate_fn = collate_fn

    def __call__(self, batch):
        items, labels = batch
        if self.collate_fn is not None:
            inputs = self.collate_fn(list(items))
        else:
            inputs = default_collate(items)
        return inputs, torch.from_numpy(np.asarray(labels))
