"""Terminal output: rich when on a TTY, plain timestamped lines otherwise (CI logs)."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console

# Progress and diagnostics go to stderr so stdout stays clean for --json and piped output.
err = Console(stderr=True, highlight=False)
out = Console(highlight=False, soft_wrap=True)


def interactive() -> bool:
    return err.is_terminal


def info(message: str) -> None:
    # A reader that went away (a cancelled CI job closing the log pipe) must not stop vagabond
    # half-way, least of all in the middle of cleaning up after itself.
    with contextlib.suppress(OSError, ValueError):
        if interactive():
            err.print(message)
        else:
            print(f"{time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


def error(message: str) -> None:
    with contextlib.suppress(OSError, ValueError):
        for line in message.splitlines() or [""]:
            print(f"error: {line}", file=sys.stderr, flush=True)


@contextmanager
def step(title: str) -> Iterator[None]:
    """A long step: a spinner on a TTY, start/finish lines with durations otherwise."""
    started = time.monotonic()
    if interactive():
        with err.status(title):
            yield
        err.print(f"[green]✓[/] {title} ({time.monotonic() - started:.0f}s)")
    else:
        info(f"{title} ...")
        yield
        info(f"{title}: done in {time.monotonic() - started:.1f}s")
