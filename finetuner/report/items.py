"""How eval items are shown in a report: image arrays become small uint8 thumbnails, everything
else becomes (short) text."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

THUMB_SIZE = 32  # longest side in pixels: enough to recognise an item, small to store 10k of them
MAX_TEXT = 20_000  # characters kept per text item: whole FAQ answers, not whole books (the page shows less)


def image_layout(shape: tuple[int, ...]) -> str | None:
    """The image layout of an items array of `shape` ([N, ...]), or None when it is not images.

    "hw": [N, H, W] grey; "chw": [N, C, H, W] with C in {1, 3, 4}; "hwc": [N, H, W, C] with C in
    {1, 3, 4}. A flat [N, D] array (feature vectors) is not shown as images.
    """
    if len(shape) == 3 and min(shape[1:]) >= 4:
        return "hw"
    if len(shape) == 4 and shape[1] in (1, 3, 4) and min(shape[2:]) >= 4:
        return "chw"
    if len(shape) == 4 and shape[3] in (1, 3, 4) and min(shape[1:3]) >= 4:
        return "hwc"
    return None


def to_thumbnails(images: np.ndarray, size: int = THUMB_SIZE) -> np.ndarray:
    """Image arrays as display thumbnails.

    Args:
        images: numeric array [N, H, W], [N, C, H, W] or [N, H, W, C] (C = 1, 3 or 4; see
            `image_layout`). Floats in [0, 1] are read as intensities, uint8 as bytes, anything
            else (e.g. mean/std-normalised inputs) is min-max scaled per image.
        size: longest side of a thumbnail in pixels; smaller images are kept as they are.

    Returns:
        uint8 array [N, h, w] (grey) or [N, h, w, 3] (colour; alpha dropped), h, w <= size.

    Raises:
        ValueError: `images` has no image layout.
    """
    layout = image_layout(images.shape)
    if layout is None:
        raise ValueError(f"images: expected [N, H, W], [N, C, H, W] or [N, H, W, C], got shape {images.shape}")
    x = np.asarray(images)
    if layout == "chw":
        x = np.moveaxis(x, 1, -1)
    if x.ndim == 4:
        x = x[..., 0] if x.shape[-1] == 1 else x[..., :3]
    if x.dtype != np.uint8:
        x = x.astype(np.float32)
        lo, hi = np.nanmin(x), np.nanmax(x)
        if not (lo >= 0.0 and hi <= 1.0):  # not intensities: stretch each image to [0, 1]
            axes = tuple(range(1, x.ndim))
            lo_i, hi_i = x.min(axis=axes, keepdims=True), x.max(axis=axes, keepdims=True)
            x = (x - lo_i) / np.maximum(hi_i - lo_i, 1e-12)
        x = np.round(np.nan_to_num(x) * 255).astype(np.uint8)
    h, w = x.shape[1:3]
    if max(h, w) <= size:
        return np.ascontiguousarray(x)
    from PIL import Image

    scale = size / max(h, w)
    new = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.stack([np.asarray(Image.fromarray(img).resize(new, Image.BILINEAR)) for img in x])


def to_text(item: Any) -> str:
    """A short text for one item: strings as they are, dicts / tuples of strings joined, any
    other object by its repr (all cut at `MAX_TEXT` characters)."""
    if isinstance(item, bytes):
        item = item.decode("utf-8", "replace")
    if isinstance(item, str):
        text = item
    elif isinstance(item, dict):
        text = " | ".join(f"{k}: {to_text(v)}" for k, v in item.items())
    elif isinstance(item, (tuple, list)) and all(isinstance(v, str) for v in item):
        text = " | ".join(item)
    elif isinstance(item, np.ndarray) or hasattr(item, "shape"):
        text = f"array {tuple(item.shape)}"
    else:
        try:
            text = json.dumps(item, default=repr)
        except (TypeError, ValueError):
            text = repr(item)
    return text[:MAX_TEXT]


def displayable(items: Any) -> np.ndarray | list[str]:
    """Eval items in the form a report shows: uint8 thumbnails (see `to_thumbnails`) when the
    items are an image array (or a list of equally shaped image arrays / tensors), else a list
    of strings (see `to_text`).

    Args:
        items: a numpy array [N, ...], a torch tensor, or a sequence of N items.
    """
    if hasattr(items, "detach"):  # torch tensor
        items = items.detach().cpu().numpy()
    if not isinstance(items, np.ndarray) and len(items) and all(hasattr(v, "shape") for v in items[:1]):
        first = items[0]
        if image_layout((1, *first.shape)) is not None and all(getattr(v, "shape", None) == first.shape for v in items):
            items = np.stack([v.detach().cpu().numpy() if hasattr(v, "detach") else np.asarray(v) for v in items])
    if isinstance(items, np.ndarray) and items.dtype.kind in "biuf" and image_layout(items.shape) is not None:
        return to_thumbnails(items)
    return [to_text(v) for v in items]
