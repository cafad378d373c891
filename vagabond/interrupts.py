"""Signals: SIGINT, SIGTERM and SIGHUP stop any vagabond command the same way, once, and the
cleanup that follows runs to its end.

GitHub Actions cancels a job with SIGINT, then SIGTERM 7.5 s later, then SIGKILL 2.5 s after that;
a person presses Ctrl-C twice. The first signal raises Interrupted wherever the command is, so that
every `finally`, context manager and cleanup step runs (process.run kills the child it waits for).
Later signals, and any signal while a `cleanup()` section runs, are said and ignored: they must not
cut the cleanup short, and a rerun then starts clean.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator

from vagabond import ui
from vagabond.errors import Interrupted

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_state: dict = {"first": None, "cleaning": 0}


def _handler(signum, frame) -> None:
    name = signal.Signals(signum).name
    if _state["first"] is None and not _state["cleaning"]:
        _state["first"] = name
        raise Interrupted(f"interrupted by {name}")
    ui.info(f"{name}: still cleaning up after {_state['first'] or 'a failure'}; it ends by itself in a moment")


@contextlib.contextmanager
def handled() -> Iterator[None]:
    """Around a whole command (the CLI's funnel)."""
    previous = {s: signal.signal(s, _handler) for s in SIGNALS}
    _state.update(first=None, cleaning=0)
    try:
        yield
    except KeyboardInterrupt:  # a signal that arrived before the handler was in place
        raise Interrupted("interrupted by SIGINT") from None
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


@contextlib.contextmanager
def cleanup() -> Iterator[None]:
    """A section that must finish once started (removing what a run created): signals wait."""
    _state["cleaning"] += 1
    try:
        yield
    finally:
        _state["cleaning"] -= 1
