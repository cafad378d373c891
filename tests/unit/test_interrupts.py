"""Signals: the first SIGINT, SIGTERM or SIGHUP stops the command; its cleanup then runs to the end."""

from __future__ import annotations

import os
import signal
import sys
import textwrap

import pytest

from vagabond import interrupts, process
from vagabond.errors import Interrupted


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_the_first_signal_interrupts_and_later_ones_wait_for_the_cleanup(sig):
    cleaned = []
    with pytest.raises(Interrupted, match=f"^interrupted by {sig.name}$"):
        with interrupts.handled():
            try:
                os.kill(os.getpid(), sig)
                raise AssertionError("the signal did not interrupt")
            finally:
                os.kill(os.getpid(), signal.SIGTERM)  # GitHub's second signal, 7.5 s later
                os.kill(os.getpid(), signal.SIGINT)  # and a second Ctrl-C
                cleaned.append("done")
    assert cleaned == ["done"]


def test_a_cleanup_section_is_never_cut_short():
    with interrupts.handled(), interrupts.cleanup():
        os.kill(os.getpid(), signal.SIGTERM)
        finished = True
    assert finished


def test_the_handlers_are_restored():
    before = signal.getsignal(signal.SIGTERM)
    with interrupts.handled():
        pass
    assert signal.getsignal(signal.SIGTERM) is before


def test_an_interrupted_command_takes_its_child_process_group_with_it(tmp_path):
    """The child runs in a session of its own (so a terminal's Ctrl-C misses it): vagabond kills it."""
    pidfile = tmp_path / "pid"
    script = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {str(os.getcwd())!r})
        from vagabond import interrupts, process
        signal.alarm(1)  # SIGALRM's default would end us: turn it into the "signal"
        signal.signal(signal.SIGALRM, lambda *a: os.kill(os.getpid(), signal.SIGTERM))
        with interrupts.handled():
            process.run(["sh", "-c", "echo $$ > {pidfile}; sleep 60 & wait"], timeout=30)
    """)
    result = process.run([sys.executable, "-c", script], timeout=30)
    assert "interrupted by SIGTERM" in result.stderr
    child = int(pidfile.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(child, 0)
