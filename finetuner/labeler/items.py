"""The items a labeling session shows: read from what the user holds, and fingerprinted so a
label store is never reused with other data."""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import torch

from ..data.labeled import LabeledData


def as_items(data: Any, name: str = "data") -> Any:
    """The items of unlabelled (or labelled, labels ignored) data: a numpy array [N, ...] or a list.

    Args:
        data: a numpy array / torch tensor [N, ...], a `LabeledData`, or a sequence of items
            (strings, dicts, arrays).

    Raises:
        TypeError: `data` is none of these; ValueError: fewer than 3 items.
    """
    if isinstance(data, LabeledData):
        items = data.items
    elif isinstance(data, torch.Tensor):
        items = data.detach().cpu().numpy()
    elif isinstance(data, np.ndarray):
        items = data
    elif isinstance(data, (str, bytes, dict)) or not hasattr(data, "__len__") or not hasattr(data, "__getitem__"):
        raise TypeError(f"{name}: expected a numpy array, a tensor, a LabeledData or a list of items, "
                        f"got {type(data).__name__}")
    else:
        items = list(data)
    if isinstance(items, np.ndarray) and items.dtype.kind == "f":
        items = items.astype(np.float32, copy=False)
    if len(items) < 3:
        raise ValueError(f"{name}: expected at least 3 items (a query and two results), got {len(items)}")
    return items


def fingerprint(items: Any) -> str:
    """A short hash of the data (its length and up to 64 evenly spaced items), so a label store
    is never reused with other data, where its item positions would mean other items."""
    n = len(items)
    h = hashlib.sha256(str(n).encode())
    for i in np.linspace(0, n - 1, num=min(n, 64)).astype(int):
        x = items[i]
        h.update(np.ascontiguousarray(x).tobytes() if isinstance(x, np.ndarray) else repr(x).encode())
    return h.hexdigest()[:16]
