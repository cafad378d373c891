"""Terminal output: rich when on a TTY, plain timestamped lines otherwise (CI logs); long steps
with a spinner or start and end lines. Under GitHub Actions the same calls also speak the
runner's workflow commands (vagabond.github)."""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.markup import escape

from vagabond import github
from vagabond.redaction import redact

# Progress and diagnostics go to stderr so stdout stays clean for --json and piped output.
err = Console(stderr=True, highlight=False)
out = Console(highlight=False, soft_wrap=True)


_depth = 0


def interactive() -> bool:
    return err.is_terminal


# Their debug logs carry request headers: the access key id, the session token. Never under --debug.
WIRE_LOGGERS = ("botocore", "boto3", "s3transfer", "urllib3")


class _Redacting(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = redact(record.getMessage()), None
        return True


def setup_logging(debug: bool) -> None:
    """--debug shows each command vagabond runs; every record passes the secret redaction."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    handler.addFilter(_Redacting())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if debug else logging.WARNING)
    for name in WIRE_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def info(message: str) -> None:
    message = redact(message)
    # A reader that went away (a cancelled CI job closing the log pipe) must not stop vagabond
    # half-way, least of all in the middle of cleaning up after itself.
    with contextlib.suppress(OSError, ValueError):
        if interactive():
            err.print(message, markup=False, highlight=False)  # registry and guest text is not markup
        else:
            print(f"{time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


def error(message: str, title: str = "vagabond") -> None:
    message = redact(message)
    with contextlib.suppress(OSError, ValueError):
        for line in message.splitlines() or [""]:
            print(f"error: {line}", file=sys.stderr, flush=True)
    github.annotation("error", message, title)


def warning(message: str, title: str = "vagabond") -> None:
    """A warning on stderr, and under GitHub Actions an annotation on the job's page."""
    info(f"warning: {message}")
    github.annotation("warning", message, title)


@contextmanager
def step(title: str) -> Iterator[None]:
    """A long step: a spinner on a TTY, start/finish lines with durations otherwise; a log group
    under GitHub Actions (outermost steps only: groups do not nest there), and a line of the job's
    step summary."""
    global _depth
    started = time.monotonic()
    ok = False
    with github.group(title) if _depth == 0 else contextlib.nullcontext():
        _depth += 1
        try:
            if interactive():
                with err.status(escape(title)):
                    yield
                err.print(f"[green]✓[/] {escape(title)} ({time.monotonic() - started:.0f}s)")
            else:
                info(f"{title} ...")
                yield
                info(f"{title}: done in {time.monotonic() - started:.1f}s")
            ok = True
        finally:
            _depth -= 1
            github.record_step(title, time.monotonic() - started, ok)
