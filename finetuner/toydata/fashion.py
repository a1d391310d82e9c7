"""Fashion-MNIST as `LabeledData`, in class or session format.

Data: Fashion-MNIST by Zalando Research (https://github.com/zalandoresearch/fashion-mnist),
MIT licence, Copyright (c) 2017 Zalando SE. 70000 grey 28x28 article images in 10 classes,
read from the original IDX `.gz` files (checked against the official MD5s).
"""

from __future__ import annotations

import functools
import gzip
import os
from pathlib import Path

import numpy as np

from finetuner.data.labeled import LabeledData
from finetuner.toydata.files import fetch

BASE_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
URL_ENV = "FINETUNER_FASHION_URL"
SUBDIR = "fashion_mnist"
CLASS_NAMES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]
# official MD5s (Fashion-MNIST README)
MD5 = {
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}
_IMAGES_MAGIC, _LABELS_MAGIC = 2051, 2049  # unsigned bytes, 3 dims / 1 dim


@functools.lru_cache(maxsize=4)
def _read_idx(path: str, magic: int) -> np.ndarray:
    """Decode a gzip'ed IDX file of unsigned bytes (cached per path: decoding 60000 images
    takes a few hundred ms). The array is read-only because every caller shares it."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    found = int.from_bytes(raw[:4], "big")
    if found != magic:
        raise ValueError(f"{path}: expected IDX magic number {magic}, got {found}")
    ndim = magic & 0xFF
    dims = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise ValueError(f"{path}: header says shape {dims}, found {data.size} values")
    return data.reshape(dims)  # frombuffer over bytes is already read-only


def _check_int(name: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name}: expected an int >= {minimum}, got {value!r}")


def _draw(rng: np.random.Generator, rows: int, pool: int, k: int, skip: np.ndarray | None = None) -> np.ndarray:
    """[rows, k] indices into range(pool), distinct within a row when the pool allows it
    (else drawn with replacement); row r never gets `skip[r]`."""
    if k == 0:
        return np.empty((rows, 0), dtype=np.int64)
    avail = pool - (skip is not None)
    r = rng.integers(0, avail, size=(rows, k))
    if 1 < k <= avail:
        # draw with replacement (vectorised), then redraw only the rows that picked an item
        # twice: rare when the pool is large, and the pool is cheap to sample when it is not
        s = np.sort(r, axis=1)
        for i in np.flatnonzero((s[:, 1:] == s[:, :-1]).any(axis=1)):
            r[i] = rng.choice(avail, size=k, replace=False)
    if skip is not None:
        r += r >= skip[:, None]  # shift past the skipped index: uniform over the others
    return r


def _sessions(labels: np.ndarray, num_pos: int, num_neg: int, seed: int) -> np.ndarray:
    """[N, 1 + num_pos + num_neg] indices: each row is a query, then `num_pos` other items of
    its class, then `num_neg` items of other classes."""
    rng = np.random.default_rng(seed)
    out = np.empty((len(labels), 1 + num_pos + num_neg), dtype=np.int64)
    out[:, 0] = np.arange(len(labels))
    for c in np.unique(labels):
        same, other = np.flatnonzero(labels == c), np.flatnonzero(labels != c)
        if num_pos and len(same) < 2:
            raise ValueError(
                f"num_pos: class {c} has only 1 item among the loaded ones, so it has no positives; "
                f"load more items (num_total) or set num_pos=0"
            )
        if num_neg and len(other) == 0:
            raise ValueError("num_neg: all loaded items share one class; load more items (num_total) or set num_neg=0")
        out[same, 1: 1 + num_pos] = same[_draw(rng, len(same), len(same), num_pos, skip=np.arange(len(same)))]
        out[same, 1 + num_pos:] = other[_draw(rng, len(same), len(other), num_neg)]
    return out


def _reshape(items: np.ndarray, channels: int | None, size) -> np.ndarray:
    """Resize [N, 28, 28] to `size` (bilinear) and repeat the grey channel `channels` times."""
    if size is not None:
        import torch
        import torch.nn.functional as F

        x = F.interpolate(torch.from_numpy(items)[:, None], size=size, mode="bilinear", align_corners=False)
        items = x[:, 0].numpy()
    if channels is not None:
        items = np.repeat(items[:, None], channels, axis=1)
    return np.ascontiguousarray(items, dtype=np.float32)


def generate_fashion(
    num_total: int = 60000,
    is_testset: bool = False,
    *,
    data_dir: str | os.PathLike | None = None,
    download: bool = True,
    base_url: str | None = None,
    format: str = "class",
    num_pos: int = 10,
    num_neg: int = 10,
    seed: int = 0,
    channels: int | None = None,
    size: int | tuple[int, int] | None = None,
) -> LabeledData:
    """Fashion-MNIST images with labels, as `LabeledData`.

    Source: Fashion-MNIST, Zalando Research (https://github.com/zalandoresearch/fashion-mnist),
    MIT licence, Copyright (c) 2017 Zalando SE. 60000 training / 10000 test grey 28x28 images of
    10 article classes (`CLASS_NAMES`), 6000 / 1000 per class. The original IDX `.gz` files are
    read from `data_dir/fashion_mnist/` (or `$FINETUNER_DATA/fashion_mnist/`), else from the
    cache (`$FINETUNER_CACHE` or `~/.cache/finetuner`), else downloaded there and checked
    against the official MD5s. Decoded files are kept in memory, so a second call is cheap.

    Args:
        num_total: how many items to take, the first ones of the set (clamped to its size).
        is_testset: the 10000-item test set ("t10k") instead of the 60000-item training set.
        data_dir: folder holding `fashion_mnist/<original file names>`.
        download: allow a download when the files are in neither the data folder nor the cache.
        base_url: where to download from (a folder URL); default env `FINETUNER_FASHION_URL`,
            else the official `BASE_URL`.
        format: "class" (one item per image, group = class id) or "session" (below).
        num_pos, num_neg: session format: per query, how many random items of the same class
            (relevance 1; never the query itself) and of other classes (relevance 0). Drawn
            without repeats when enough items are loaded, else with repeats.
        seed: random seed of the session sampling (same seed, same sessions).
        channels: None keeps grey images [N, H, W]; an int C gives [N, C, H, W] with the grey
            channel repeated (3 for a pretrained RGB CNN).
        size: (H, W) or an int for a square: resize with bilinear interpolation; default 28x28.

    Returns:
        `LabeledData` whose items are a float32 numpy array [N, 28, 28] (or [N, C, H, W], see
        `channels` / `size`) of pixel intensities in [0, 1] (raw byte / 255).

        - format "class": N = min(num_total, set size); groups = class ids 0-9 (int64);
          relevance None; `class_names` = `CLASS_NAMES`.
        - format "session": N = n * (1 + num_pos + num_neg) for n loaded images: session s is
          the contiguous block [query, num_pos relevant, num_neg irrelevant] (images copied,
          so memory grows by that factor); groups = session id; relevance 1, 1..., 0....

    Raises:
        ValueError: an argument is out of range (num_total < 1, unknown format, num_pos or
            num_neg < 0, channels < 1, bad size), or too few items/classes are loaded to draw
            the requested positives/negatives, or a data file is not valid IDX.
        FileNotFoundError: the files are not found and `download` is False.
        OSError (`DownloadError`): the download failed or did not match the official MD5.
    """
    _check_int("num_total", num_total, 1)
    if format not in ("class", "session"):
        raise ValueError(f"format: expected 'class' or 'session', got {format!r}")
    _check_int("num_pos", num_pos, 0)
    _check_int("num_neg", num_neg, 0)
    if channels is not None:
        _check_int("channels", channels, 1)
    if size is not None:
        size = (size, size) if isinstance(size, (int, np.integer)) else tuple(size)
        if len(size) != 2 or any(isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 1 for s in size):
            raise ValueError(f"size: expected (H, W) with ints >= 1 or one int, got {size!r}")

    split = "t10k" if is_testset else "train"
    base = (base_url or os.environ.get(URL_ENV) or BASE_URL).rstrip("/") + "/"

    def load(kind: str, magic: int) -> np.ndarray:
        name = f"{split}-{kind}.gz"
        path = fetch(SUBDIR, name, base + name, md5=MD5[name], data_dir=data_dir, download=download)
        return _read_idx(str(Path(path).resolve()), magic)

    images = load("images-idx3-ubyte", _IMAGES_MAGIC)
    labels = load("labels-idx1-ubyte", _LABELS_MAGIC)
    if len(images) != len(labels):
        raise ValueError(f"{split}: {len(images)} images but {len(labels)} labels")

    n = min(num_total, len(labels))
    items = _reshape(images[:n].astype(np.float32) / 255.0, channels, size)
    labels = labels[:n].astype(np.int64)
    if format == "class":
        return LabeledData(items, groups=labels, format="class", class_names=list(CLASS_NAMES))

    index = _sessions(labels, num_pos, num_neg, seed)
    per = index.shape[1]
    relevance = np.zeros(per, dtype=np.float32)
    relevance[: 1 + num_pos] = 1.0  # the query and its relevant matches
    return LabeledData(
        items[index.ravel()],
        groups=np.repeat(np.arange(n), per),
        relevance=np.tile(relevance, n),
        format="session",
    )
