"""How an item is shown on the page: text, or an image encoded as a PNG data URI."""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping
from typing import Any

import numpy as np

MAX_TEXT_CHARS = 4000
TEXT_KEYS = ("text", "question", "sentence", "query", "title", "content")


def render_item(item: Any) -> dict:
    """What the page needs to show one item.

    Args:
        item: a string; a dict with a text field (first of `TEXT_KEYS`, e.g. a Covid-QA row
            {"question", "answer"}: question and answer are both shown); a numeric numpy array /
            tensor image, grey [H, W], channels-first [C, H, W] or channels-last [H, W, C] with
            C in {1, 3, 4}, values in [0, 1] or [0, 255]; anything else is shown as its `str`.

    Returns:
        {"kind": "text", "text": str} (cut to `MAX_TEXT_CHARS`) or
        {"kind": "image", "src": "data:image/png;base64,...", "width": W, "height": H}.
    """
    if isinstance(item, str):
        return {"kind": "text", "text": item[:MAX_TEXT_CHARS]}
    if isinstance(item, Mapping):
        key = next((k for k in TEXT_KEYS if isinstance(item.get(k), str)), None)
        if key is not None:
            text = item[key]
            if isinstance(item.get("answer"), str):
                text = f"{text}\n\n{item['answer']}"
            return {"kind": "text", "text": text[:MAX_TEXT_CHARS]}
    if hasattr(item, "detach"):
        item = item.detach().cpu().numpy()
    if isinstance(item, np.ndarray) and item.dtype.kind in "fiub" and _image_shape(item) is not None:
        return _image(item)
    return {"kind": "text", "text": str(item)[:MAX_TEXT_CHARS]}


def _image_shape(a: np.ndarray) -> tuple[int, int] | None:
    """(H, W) when `a` looks like an image, else None."""
    if a.ndim == 2:
        return a.shape
    if a.ndim == 3 and a.shape[0] in (1, 3, 4):
        return a.shape[1:]
    if a.ndim == 3 and a.shape[2] in (1, 3, 4):
        return a.shape[:2]
    if a.ndim == 1 and int(np.sqrt(a.size)) ** 2 == a.size and a.size >= 16:
        return (int(np.sqrt(a.size)),) * 2  # a flattened square image (e.g. 784 = 28 x 28)
    return None


def _image(a: np.ndarray) -> dict:
    from PIL import Image

    h, w = _image_shape(a)
    if a.ndim == 1:
        a = a.reshape(h, w)
    elif a.ndim == 3 and a.shape[0] in (1, 3, 4) and a.shape[2] not in (1, 3, 4):
        a = np.moveaxis(a, 0, -1)  # channels first -> last
    a = a.astype(np.float32)
    if a.max(initial=0) <= 1.0 and a.min(initial=0) >= 0.0:
        a = a * 255.0
    elif a.max(initial=0) > 255.0 or a.min(initial=0) < 0.0:  # e.g. normalised: stretch to 0..255
        a = (a - a.min()) / max(float(a.max() - a.min()), 1e-9) * 255.0
    a = np.clip(a, 0, 255).astype(np.uint8)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return {"kind": "image", "src": "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii"),
            "width": int(w), "height": int(h)}
