"""The one console of the library: progress bars, tables and run notes, silenced by
`verbose=False`.

Library modules never `print`: what a person watching a run should see (a progress bar, the
before/after table, "restored the best epoch") goes through here, and everything else through
`logging.getLogger(__name__)`. A recipe wraps its run in `verbosity(args.verbose)`; the setting
lives in a context variable, so a quiet fit in a background thread (the Labeler's) does not
silence another one. Only the main process of a multi-process run writes.
"""

from __future__ import annotations

import contextvars
import logging
import os
from contextlib import contextmanager
from typing import Any, Iterator

_VERBOSE: contextvars.ContextVar[bool] = contextvars.ContextVar("finetuner_verbose", default=True)
_CONSOLE = None
logger = logging.getLogger("finetuner")


def is_main_process() -> bool:
    """Whether this process is rank 0 of a launched run (or not launched at all)."""
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")) or 0) == 0


def is_verbose() -> bool:
    """Whether this run shows progress and tables (and is the main process)."""
    return _VERBOSE.get() and is_main_process()


@contextmanager
def verbosity(verbose: bool) -> Iterator[None]:
    """Within the block, `verbose=False` silences `note`, `show` and `progress`."""
    token = _VERBOSE.set(bool(verbose))
    try:
        yield
    finally:
        _VERBOSE.reset(token)


def get_console():
    """The shared `rich.console.Console` (created on first use)."""
    global _CONSOLE
    if _CONSOLE is None:
        from rich.console import Console

        _CONSOLE = Console()
    return _CONSOLE


def note(message: str) -> None:
    """A one-line note about the run: printed when verbose, else logged at INFO."""
    if is_verbose():
        get_console().print(message, markup=False, highlight=False, soft_wrap=True)
    else:
        logger.info(message)


def show(renderable: Any, min_width: int | None = None) -> None:
    """Print a rich renderable (a table) when verbose; `min_width` widens the console for it
    (wide tables of layer names are not wrapped)."""
    if not is_verbose():
        return
    console = get_console()
    if min_width is not None and console.width < min_width:
        from rich.console import Console

        console = Console(width=min_width)
    console.print(renderable)


def progress(*columns: Any, **kwargs: Any):
    """A started `rich.progress.Progress` when verbose, else None (callers skip updates)."""
    if not is_verbose():
        return None
    from rich.progress import Progress

    bar = Progress(*columns, console=get_console(), **kwargs)
    bar.start()
    return bar
