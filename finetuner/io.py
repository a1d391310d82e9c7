"""Files and folders that are never half-written: atomic folders and files, the metadata of a
saved folder, and the download cache root."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

META = "finetuner.json"  # what a folder written by finetuner.save holds
FORMAT_VERSION = 1
CACHE_ENV = "FINETUNER_CACHE"


def cache_root() -> Path:
    """The download / conversion cache folder: env `FINETUNER_CACHE`, else `~/.cache/finetuner`."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "finetuner"


@contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder beside `path`; on success it replaces `path` in one rename.

    If the body raises, `path` is left as it was and the temporary folder is removed, so a
    crash mid-save never leaves a half-written folder (or destroys the previous one).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        yield tmp
        old = None
        if path.exists():
            old = path.parent / f".{path.name}.old-{os.getpid()}"
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextmanager
def atomic_files(folder: str | os.PathLike, last: tuple[str, ...] = ()) -> Iterator[Path]:
    """Yield a temporary folder inside `folder`; on success move each file and folder written
    there into `folder` (replacing those of the same name, keeping the others), the names in
    `last` at the end.

    The `last` entries are removed from `folder` before anything moves, so a folder that holds
    them always holds a complete set (a crash mid-move leaves it without them). If the body
    raises, `folder` is left as it was.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".save-", dir=folder))
    try:
        yield tmp
        for name in last:
            (folder / name).unlink(missing_ok=True)
        names = sorted(p.name for p in tmp.iterdir() if p.name not in last) + [n for n in last if (tmp / n).exists()]
        for name in names:
            target = folder / name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            os.replace(tmp / name, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_json(path: str | os.PathLike, data: Any) -> Path:
    """Write `data` as indented JSON to `path` through a temporary file and one rename (numpy
    scalars and other objects with `.item()` become numbers, anything else its string)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2, default=_json_default))
    os.replace(tmp, path)
    return path


def read_meta(path: str | os.PathLike) -> dict:
    """The `finetuner.json` of a saved folder.

    Raises:
        FileNotFoundError: `path` has none (it was not written by `finetuner.save`).
    """
    meta_file = Path(path) / META
    if not meta_file.is_file():
        raise FileNotFoundError(f"path: {str(path)!r} is not a model saved by finetuner.save (no {META})")
    return json.loads(meta_file.read_text())


def _json_default(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else str(value)
