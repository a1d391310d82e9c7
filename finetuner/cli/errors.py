"""Clean errors on the command line: the library's own errors (bad data, a bad setting, a missing
file or package) and usage errors print one line, `error: <message>`, on stderr and exit with
code 2; `--debug` (anywhere on the line) or FINETUNER_DEBUG=1 shows the traceback instead."""

from __future__ import annotations

import os
import sys
from typing import Any, Sequence

import typer

# what the library raises for a problem the user can fix; anything else is a bug: traceback
USER_ERRORS = (ValueError, TypeError, OSError, ImportError, FloatingPointError, NotImplementedError, KeyError)
EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


class CleanApp(typer.Typer):
    """A `typer.Typer` whose call turns `USER_ERRORS` into one line on stderr and exit code 2
    (the console script `finetuner = "finetuner.cli:app"` and `python -m finetuner` both call it)."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        given = kwargs.pop("args", args[0] if args else None)
        args = args[1:]
        argv = list(sys.argv[1:] if given is None else given)
        debug = "--debug" in argv or os.environ.get("FINETUNER_DEBUG", "") not in ("", "0")
        argv = [a for a in argv if a != "--debug"]
        kwargs.pop("standalone_mode", None)
        try:
            code = super().__call__(*args, args=argv, standalone_mode=False, **kwargs)
        except typer.Abort:
            print("aborted", file=sys.stderr)
            sys.exit(1)
        except typer.TyperException as e:  # a usage error (typer's click): also one line, no box
            if debug:
                raise
            ctx = getattr(e, "ctx", None)
            if type(e).__name__ == "NoArgsIsHelpError" and ctx is not None:
                help_text = ctx.get_help()  # typer prints the rich help itself and returns ""
                if help_text:
                    print(help_text)
            else:
                hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
                print(f"error: {one_line(e.format_message())}{hint}", file=sys.stderr)
            sys.exit(getattr(e, "exit_code", EXIT_USER_ERROR))
        except KeyboardInterrupt:
            if debug:
                raise
            print("interrupted", file=sys.stderr)
            sys.exit(EXIT_INTERRUPTED)
        except USER_ERRORS as e:
            if debug:
                raise
            print(f"error: {one_line(e)}", file=sys.stderr)
            sys.exit(EXIT_USER_ERROR)
        sys.exit(code if isinstance(code, int) else 0)


def one_line(error: BaseException) -> str:
    """The error's message on one line (a KeyError's quotes dropped; the type when it is empty)."""
    text = str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)
    text = " ".join(text.split())
    return text or type(error).__name__


def fail(message: str, hint: str | None = None) -> None:
    """Stop with `error: message` (exit code 2); `hint` names the option at fault."""
    raise typer.BadParameter(message, param_hint=hint)


def split_csv(values: Sequence[str] | None) -> list[str]:
    """Option values given repeatedly or comma-separated, as one list."""
    return [v.strip() for value in values or () for v in str(value).split(",") if v.strip()]
