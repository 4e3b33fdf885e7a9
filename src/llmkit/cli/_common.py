"""Shared CLI plumbing: one-line errors instead of tracebacks, consoles, progress bars."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import TypeVar

import typer
from rich.console import Console

F = TypeVar("F", bound=Callable)
console = Console()
err_console = Console(stderr=True)

# Errors a user can cause (bad input, missing or existing files): one line, exit 1.
USER_ERRORS = (ValueError, OSError, KeyError)


def fail(message: str, code: int = 1) -> None:
    """Print ``error: message`` on stderr and exit with ``code``."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _one_line(e: BaseException) -> str:
    """A user-facing line for an exception: OSErrors name their file, KeyErrors their key."""
    if isinstance(e, OSError) and e.strerror and e.filename is not None and str(e.filename) not in str(e.args[-1] if e.args else ""):
        msg = f"{e.filename}: {e.strerror}"
    elif isinstance(e, KeyError):
        msg = f"missing or unknown key {e.args[0]!r}" if e.args else "missing key"
    else:
        msg = str(e) or type(e).__name__
    return msg.splitlines()[0] if msg.strip() else type(e).__name__


def cli_errors(fn: F) -> F:
    """Turn user errors raised by the library into a one-line message and exit code 1."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except USER_ERRORS as e:
            fail(_one_line(e))
        except KeyboardInterrupt:
            err_console.print("interrupted")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def read_text_arg(text: str | None, file: str | None, what: str = "TEXT") -> str:
    """Exactly one of a positional text or ``--file`` (``-`` reads standard input)."""
    if (text is None) == (file is None):
        fail(f"give either {what} or --file, not both and not neither")
    if file is None:
        return text  # type: ignore[return-value]
    if file == "-":
        return sys.stdin.read()
    try:
        with open(file, encoding="utf-8") as f:
            return f.read()
    except UnicodeDecodeError as e:
        fail(f"{file} is not valid UTF-8 (byte {e.object[e.start]:#04x} at offset {e.start})")
    except OSError as e:
        fail(f"cannot read {file}: {e.strerror}")
    raise AssertionError("unreachable")


def progress_bar(description: str, total: int):
    """A rich progress bar on stderr, plus a ``(done, total)`` callback that advances it."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=err_console, transient=False)
    task = bar.add_task(description, total=total)

    def update(done: int, tot: int) -> None:
        bar.update(task, completed=done, total=tot)

    return bar, update
