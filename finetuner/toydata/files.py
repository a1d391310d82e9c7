"""Where the toy-data loaders find their files: a caller's data folder, else a download cache.

Look-up order for `<subdir>/<filename>`:

1. the data folder: the `data_dir=` argument, else the `FINETUNER_DATA` environment variable
   (trusted as given: nothing is downloaded or checked there);
2. the cache: `FINETUNER_CACHE`, else `~/.cache/finetuner` (md5-checked when one is known);
3. a download into the cache (written to a temporary file, md5-checked, then moved in place
   with `os.replace`, so a half-written or corrupt file never sits at the final path).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from ..io import cache_root

DATA_ENV = "FINETUNER_DATA"
TIMEOUT_S = 60.0
_CHUNK = 1 << 20


class DownloadError(OSError):
    """A download failed (network error, HTTP error, or a checksum mismatch)."""


def data_root(data_dir: str | os.PathLike | None = None) -> Path | None:
    """The caller's data folder: `data_dir`, else env `FINETUNER_DATA`, else None."""
    if data_dir is not None:
        return Path(data_dir).expanduser()
    env = os.environ.get(DATA_ENV)
    return Path(env).expanduser() if env else None


def md5sum(path: str | os.PathLike) -> str:
    """Hex MD5 digest of a file, read in chunks."""
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fetch(
    subdir: str,
    filename: str,
    url: str,
    md5: str | None = None,
    data_dir: str | os.PathLike | None = None,
    download: bool = True,
    timeout: float = TIMEOUT_S,
) -> Path:
    """The local path of `<subdir>/<filename>`, downloading it from `url` if needed.

    Returns:
        `data_root(data_dir)/subdir/filename` if that exists, else
        `cache_root()/subdir/filename` if that exists and matches `md5` (when given), else
        the same cache path after downloading `url` there.

    Raises:
        FileNotFoundError: the file is in neither place and `download` is False.
        DownloadError (an OSError): the download failed (offline, HTTP error, timeout) or the
            downloaded bytes do not match `md5`; nothing is left in the cache then.
    """
    root = data_root(data_dir)
    if root is not None and (root / subdir / filename).is_file():
        return root / subdir / filename

    cached = cache_root() / subdir / filename
    # a cached file that fails its checksum (truncated by hand, bit rot) is fetched again
    if cached.is_file() and (md5 is None or md5sum(cached) == md5):
        return cached

    if not download:
        where = f"{root / subdir / filename}" if root is not None else (
            f"no data folder (data_dir=None and {DATA_ENV} is not set)"
        )
        raise FileNotFoundError(
            f"{subdir}/{filename} not found: looked in {where} and in the cache {cached}; "
            f"pass download=True, data_dir=<folder holding {subdir}/{filename}>, or set {DATA_ENV}"
        )

    cached.parent.mkdir(parents=True, exist_ok=True)
    # the temporary file sits in the target folder so os.replace is a same-filesystem rename
    fd, tmp_name = tempfile.mkstemp(dir=cached.parent, prefix=f".{filename}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        digest = hashlib.md5()
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
                for chunk in iter(lambda: resp.read(_CHUNK), b""):
                    digest.update(chunk)
                    out.write(chunk)
        except OSError as err:  # URLError, HTTPError, timeouts and refused connections are all OSError
            # HTTPError's own text carries the status code; URLError's reason is the useful part
            detail = err if isinstance(err, urllib.error.HTTPError) else getattr(err, "reason", err)
            raise DownloadError(
                f"could not download {url}: {detail}. If you are offline, "
                f"pass data_dir=<folder holding {subdir}/{filename}> or set {DATA_ENV}"
            ) from err
        if md5 is not None and digest.hexdigest() != md5:
            raise DownloadError(
                f"checksum mismatch for {url}: expected md5 {md5}, got {digest.hexdigest()}; "
                f"the file was discarded (a corrupt download or a wrong URL)"
            )
        os.replace(tmp, cached)
    finally:
        tmp.unlink(missing_ok=True)
    return cached
