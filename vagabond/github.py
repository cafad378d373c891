"""GitHub Actions' workflow commands, for a vagabond that runs in a job: log groups, annotations on
the job's page, step outputs, and what it did in the job's step summary. Outside a job (no
GITHUB_ACTIONS=true) each is silent."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator

from vagabond import files
from vagabond.errors import UnsafePath, UsageError
from vagabond.redaction import redact

# (title, seconds, ok) of every step this process ran, and lines a reader must see (a warning):
# the job's step summary lists them.
steps: list[tuple[str, float, bool]] = []
summary_lines: list[str] = []


def active() -> bool:
    return os.environ.get("GITHUB_ACTIONS") == "true"


def command(text: str) -> None:
    """A workflow command. The runner reads them from stderr as well as stdout, and stdout stays
    clean for --json."""
    with contextlib.suppress(OSError, ValueError):
        print(text, file=sys.stderr, flush=True)


def escape_data(text: str) -> str:
    """Workflow command data: %, CR and LF are escaped so the message stays one command."""
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def annotation(kind: str, message: str, title: str) -> None:
    """An annotation (error, warning, notice) on the job's page; a property escapes ':' and ',' too."""
    if active():
        title = escape_data(title).replace(":", "%3A").replace(",", "%2C")  # as @actions/core's escapeProperty
        command(f"::{kind} title={title}::{escape_data(redact(message))}")


@contextlib.contextmanager
def group(title: str) -> Iterator[None]:
    """A collapsible log group (they do not nest: only the outermost caller asks for one)."""
    if active():
        command(f"::group::{escape_data(title)}")
    try:
        yield
    finally:
        if active():
            command("::endgroup::")


def outputs(values: dict[str, object]) -> str:
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
    """A step and how it went, for the step summary."""
    steps.append((title, seconds, ok))


def summary_line(text: str) -> None:
    summary_lines.append(redact(text))


def write_step_summary(command_words: str, ok: bool, seconds: float, detail: str = "") -> None:
    """Append what ran and how long each step took to $GITHUB_STEP_SUMMARY."""
    path = os.environ.get("GITHUB_STEP_SUMMARY")
    if not active() or not path:
        return
    lines = [f"### {'✅' if ok else '❌'} `vagabond {command_words}` ({seconds:.0f}s)", ""]
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
    with contextlib.suppress(OSError, UnsafePath):
        with files.open_append(path) as fh:
            fh.write("\n".join(lines) + "\n")
