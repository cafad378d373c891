"""Terminal output: rich when on a TTY, plain timestamped lines otherwise (CI logs).

Under GitHub Actions (GITHUB_ACTIONS=true) long steps also become collapsible log groups, errors
become annotations, and every step and its duration is kept for the job's step summary.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console

from vagabond.errors import UsageError
from vagabond.redaction import redact

# Progress and diagnostics go to stderr so stdout stays clean for --json and piped output.
err = Console(stderr=True, highlight=False)
out = Console(highlight=False, soft_wrap=True)


# (title, seconds, ok) of every step this process ran: the GitHub step summary lists them.
steps: list[tuple[str, float, bool]] = []
_depth = 0


def interactive() -> bool:
    return err.is_terminal


def github() -> bool:
    return os.environ.get("GITHUB_ACTIONS") == "true"


def _command(text: str) -> None:
    """A GitHub workflow command. The runner reads them from stderr as well as stdout, and stdout
    stays clean for --json."""
    with contextlib.suppress(OSError, ValueError):
        print(text, file=sys.stderr, flush=True)


def escape_data(text: str) -> str:
    """Workflow command data: %, CR and LF are escaped so the message stays one command."""
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


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
            err.print(message)
        else:
            print(f"{time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


def error(message: str, title: str = "vagabond") -> None:
    message = redact(message)
    with contextlib.suppress(OSError, ValueError):
        for line in message.splitlines() or [""]:
            print(f"error: {line}", file=sys.stderr, flush=True)
    _annotation("error", message, title)


def _annotation(kind: str, message: str, title: str) -> None:
    """Under GitHub Actions, an annotation on the job's page (a property value escapes ':' and ',' too)."""
    if github():
        title = escape_data(title).replace(":", "%3A").replace(",", "%2C")  # as @actions/core's escapeProperty
        _command(f"::{kind} title={title}::{escape_data(redact(message))}")


def warning(message: str, title: str = "vagabond") -> None:
    """A warning on stderr, and under GitHub Actions an annotation on the job's page."""
    info(f"warning: {message}")
    _annotation("warning", message, title)


# Lines for the job's step summary beyond the steps themselves (a warning a reader must see).
summary_lines: list[str] = []


def summary_line(text: str) -> None:
    summary_lines.append(redact(text))


@contextmanager
def step(title: str) -> Iterator[None]:
    """A long step: a spinner on a TTY, start/finish lines with durations otherwise; a log group
    under GitHub Actions (outermost steps only: groups do not nest there)."""
    global _depth
    started = time.monotonic()
    group = github() and _depth == 0
    if group:
        _command(f"::group::{escape_data(title)}")
    _depth += 1
    ok = False
    try:
        if interactive():
            with err.status(title):
                yield
            err.print(f"[green]✓[/] {title} ({time.monotonic() - started:.0f}s)")
        else:
            info(f"{title} ...")
            yield
            info(f"{title}: done in {time.monotonic() - started:.1f}s")
        ok = True
    finally:
        _depth -= 1
        steps.append((title, time.monotonic() - started, ok))
        if group:
            _command("::endgroup::")


def github_outputs(values: dict[str, object]) -> str:
    """name=value lines for $GITHUB_OUTPUT. A line break in a value would start an output of its
    own (a box file's value could set any output), so a value with one is refused."""
    lines = []
    for name, value in values.items():
        text = "" if value is None else str(value)
        if any(ch in text for ch in "\r\n\x00") or "\u2028" in text or "\u2029" in text:
            raise UsageError(f"output {name} {text[:40]!r}: a line break cannot go into $GITHUB_OUTPUT")
        lines.append(f"{name}={text}\n")
    return "".join(lines)


def record_step(title: str, seconds: float, ok: bool) -> None:
    """A step timed elsewhere (a phase of `vagabond test`), for the step summary."""
    steps.append((title, seconds, ok))


def write_step_summary(command: str, ok: bool, seconds: float, detail: str = "") -> None:
    """Append what ran and how long each step took to $GITHUB_STEP_SUMMARY (GitHub Actions)."""
    path = os.environ.get("GITHUB_STEP_SUMMARY")
    if not github() or not path:
        return
    lines = [f"### {'✅' if ok else '❌'} `vagabond {command}` ({seconds:.0f}s)", ""]
    detail = redact(detail)
    if detail:
        lines += [f"> {line}" for line in detail.splitlines()] + [""]
    if summary_lines:
        lines += [*summary_lines, ""]
    if steps:
        lines += ["| step | time | result |", "|---|---:|---|"]
        for title, took, good in steps:
            cell = title.replace("|", "\\|")
            lines.append(f"| {cell} | {took:.1f}s | {'ok' if good else 'failed'} |")
        lines.append("")
    with contextlib.suppress(OSError):
        with open(path, "a", encoding="utf-8") as fh:
            fh.write("\n".join(lines) + "\n")
