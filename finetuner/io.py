"""Files and folders that are never half-written: atomic folders and files, the metadata of a
saved folder, and the download cache root.

A folder is written under a unique temporary name beside its target, every file and folder in
it is fsynced, and it is then swapped into place in one atomic rename (`renameat2` with
`RENAME_EXCHANGE` on Linux, `renamex_np` with `RENAME_SWAP` on macOS; elsewhere two renames).
Whatever moment a process is killed, the target holds the old folder or the new one, whole;
what is left over is a hidden `.NAME.tmp-PID-...` folder, removed by the next write of NAME once
the process that made it has ended.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import shutil
import sys
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

META = "finetuner.json"  # what a folder written by finetuner.save holds
FORMAT_VERSION = 1
CACHE_ENV = "FINETUNER_CACHE"
_TMP = ".tmp-"  # temporary siblings: .NAME.tmp-PID-RANDOM
_active: set[str] = set()  # temporary folders this process is writing now (any thread)
_active_lock = threading.Lock()


def cache_root() -> Path:
    """The download / conversion cache folder: env `FINETUNER_CACHE`, else `~/.cache/finetuner`."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "finetuner"


# ---- durability ---------------------------------------------------------------------------------
def fsync_path(path: str | os.PathLike) -> None:
    """fsync one file or folder (folders: where the platform allows opening them, not Windows)."""
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) if os.path.isdir(path) else os.O_RDONLY
    try:
        fd = os.open(path, flags)
    except OSError:
        if os.path.isdir(path):
            return  # Windows cannot open a folder; its metadata is journaled by NTFS
        raise
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: str | os.PathLike) -> None:
    """fsync every file and folder under `root` (a file alone when `root` is a file), deepest first."""
    root = str(root)
    if not os.path.isdir(root):
        fsync_path(root)
        return
    for folder, _, files in os.walk(root, topdown=False):
        for name in files:
            path = os.path.join(folder, name)
            if not os.path.islink(path):
                fsync_path(path)
        fsync_path(folder)


# ---- one atomic swap ------------------------------------------------------------------------------
def _exchange_function():
    """`(src, dst) -> None` swapping two existing paths atomically, or None on this platform."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None
    if sys.platform.startswith("linux") and hasattr(libc, "renameat2"):
        fn, args = libc.renameat2, (lambda s, d: (-100, s, -100, d, 2))  # AT_FDCWD, RENAME_EXCHANGE
    elif sys.platform == "darwin" and hasattr(libc, "renamex_np"):
        fn, args = libc.renamex_np, (lambda s, d: (s, d, 2))  # RENAME_SWAP
    else:
        return None

    def exchange(src: str, dst: str) -> None:
        if fn(*args(os.fsencode(src), os.fsencode(dst))) != 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code), src, None, dst)

    return exchange


_EXCHANGE = _exchange_function()


_REPLACING = threading.Lock()


def replacing() -> threading.Lock:
    """The lock `replace_path` holds while it replaces a path: hold it to inspect a path in
    several steps (exists? a folder? a saved model?) and see it before or after another thread's
    replace, never halfway (moved aside, not yet back)."""
    return _REPLACING


def replace_path(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Put `src` (a file or folder) at `dst`, replacing what is there, then remove the old one.

    One atomic rename when `dst` does not exist, or where the platform swaps two paths (Linux,
    macOS): a kill at any moment leaves `dst` old or new. Elsewhere (or on a file system that
    cannot swap) the old `dst` is renamed aside first; a kill between the two renames leaves it
    at `.NAME.tmp-PID-RANDOM` beside `dst` (removed by the next save). The parent folder is
    fsynced after the rename. Threads of one process replace in turn (on the two-rename path
    another thread's rename aside would otherwise leave `dst` missing for a moment).
    """
    with _REPLACING:
        _replace(Path(src), Path(dst))


def _replace(src: Path, dst: Path) -> None:
    if not os.path.lexists(dst):
        try:
            os.rename(src, dst)
        except OSError as e:  # a folder appeared at dst meanwhile (another thread's save): swap below
            if e.errno not in (errno.ENOTEMPTY, errno.EEXIST) or not os.path.lexists(dst):
                raise
        else:
            fsync_path(dst.parent)
            return
    if _EXCHANGE is not None:
        try:
            _EXCHANGE(str(src), str(dst))
        except OSError as e:
            if e.errno not in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
                raise
        else:
            fsync_path(dst.parent)
            _remove(src)  # src now holds the old one
            return
    aside = temporary_sibling(dst, folder=False)  # unique per call: threads do not share a backup name
    try:
        os.rename(dst, aside)  # replaces the empty placeholder file (a folder: rename it over the file fails)
    except (IsADirectoryError, NotADirectoryError):
        aside.unlink()
        os.rename(dst, aside)
    try:
        os.rename(src, dst)
        fsync_path(dst.parent)
        _remove(aside)
    finally:
        release(aside)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists (another user's) or cannot tell: keep its files
    return True


def clean_leftovers(path: str | os.PathLike) -> list[Path]:
    """Remove the temporary siblings of `path` (`.NAME.tmp-PID-...`) left by writes that were
    killed: those of ended processes, and this process's own that no thread is writing now.
    Returns what was removed."""
    path = Path(path)
    if not path.parent.is_dir():
        return []
    prefix, removed = f".{path.name}{_TMP}", []
    for p in path.parent.iterdir():
        if not p.name.startswith(prefix):
            continue
        pid = p.name[len(prefix):].split("-", 1)[0]
        if not pid.isdigit():
            continue
        with _active_lock:
            busy = str(p) in _active
        if busy or (int(pid) != os.getpid() and _alive(int(pid))):
            continue
        _remove(p)
        removed.append(p)
    return removed


def temporary_sibling(path: str | os.PathLike, folder: bool = True) -> Path:
    """A new, unique, empty temporary folder (or file name) beside `path`, registered as being
    written by this process until `release(tmp)`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{path.name}{_TMP}{os.getpid()}-"
    with _active_lock:  # created and registered at once: another thread's clean_leftovers never sees it unregistered
        if folder:
            tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=path.parent))
        else:
            fd, name = tempfile.mkstemp(prefix=prefix, dir=path.parent)
            os.close(fd)
            tmp = Path(name)
        _active.add(str(tmp))
    return tmp


def release(tmp: Path) -> None:
    """Forget a temporary path of `temporary_sibling` (it was moved into place or removed)."""
    with _active_lock:
        _active.discard(str(tmp))


@contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a new temporary folder beside `path`; when the body succeeds, fsync everything in
    it and swap it into `path` in one atomic rename (see `replace_path`), then remove the old one.

    If the body raises, `path` is left as it was and the temporary folder is removed. Leftovers
    of earlier writes that were killed are removed first (`clean_leftovers`). Whatever is at
    `path` is replaced: callers that must not destroy a user's files check it first (as
    `finetuner.save` does).
    """
    path = Path(path)
    clean_leftovers(path)
    tmp = temporary_sibling(path)
    try:
        yield tmp
        fsync_tree(tmp)
        replace_path(tmp, path)
    except BaseException:
        _remove(tmp)
        raise
    finally:
        release(tmp)


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
        fsync_tree(tmp)
        for name in last:
            (folder / name).unlink(missing_ok=True)
        names = sorted(p.name for p in tmp.iterdir() if p.name not in last) + [n for n in last if (tmp / n).exists()]
        for name in names:
            replace_path(tmp / name, folder / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` through a unique temporary file, fsynced, and one rename."""
    path = Path(path)
    tmp = temporary_sibling(path, folder=False)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_path(path.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        release(tmp)
    return path


def write_json(path: str | os.PathLike, data: Any) -> Path:
    """Write `data` as indented JSON to `path` atomically (`write_bytes`): numpy scalars and other
    objects with `.item()` become numbers, anything else its string."""
    return write_bytes(path, json.dumps(data, indent=2, default=_json_default).encode())


def is_saved_model(path: str | os.PathLike) -> bool:
    """Whether `path` is a folder written by `finetuner.save` (it holds a readable `finetuner.json`)."""
    try:
        return isinstance(json.loads((Path(path) / META).read_text()), dict)
    except (OSError, ValueError):
        return False


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


def untie_shared(state: dict) -> dict:
    """A state dict safetensors can write: a tensor that shares memory with an earlier one (tied
    weights, e.g. an LM head tied to its embeddings) is replaced by its own copy.

    Args:
        state: name -> torch.Tensor. Returns: a new dict with the same names and values.
    """
    seen, out = set(), {}
    for k, v in state.items():
        key = (v.untyped_storage().data_ptr(), v.storage_offset(), tuple(v.shape)) if v.numel() else None
        out[k] = v.clone() if key in seen else v
        seen.add(key)
    return out
