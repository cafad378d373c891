"""The process gateway: argv in, Result or a CommandFailed that names the command out."""

from __future__ import annotations

import os
import sys
import time

import pytest

from vagabond import process, redaction
from vagabond.errors import CommandFailed, ToolMissing


def test_run_captures_output():
    r = process.check([sys.executable, "-c", "import sys; print('out'); print('err', file=sys.stderr)"])
    assert (r.returncode, r.stdout, r.stderr) == (0, "out\n", "err\n")


def test_failure_names_the_command_and_keeps_output():
    with pytest.raises(CommandFailed) as info:
        process.check([sys.executable, "-c", "import sys; print('boom', file=sys.stderr); sys.exit(3)"])
    err = info.value
    assert err.returncode == 3 and err.stderr == "boom\n"
    assert str(err).startswith(f"Command '{sys.executable} -c ")
    assert str(err).endswith("' returned 3. Last output: boom")


def test_check_false_returns_the_code():
    assert process.run(["false"]).returncode == 1


def test_missing_tool():
    with pytest.raises(ToolMissing, match="^'no-such-tool-xyz' was not found"):
        process.check(["no-such-tool-xyz"])


def test_arguments_are_never_shell_parsed(tmp_path):
    r = process.check(["echo", "$(touch x)", ";", "rm", "-rf", "/"], cwd=tmp_path)
    assert r.stdout == "$(touch x) ; rm -rf /\n"
    assert not (tmp_path / "x").exists()


def test_timeout_kills_the_whole_process_group(tmp_path):
    pidfile = tmp_path / "child.pid"
    script = (
        "import subprocess,time; p=subprocess.Popen(['sleep','60']); "
        f"open('{pidfile}','w').write(str(p.pid)); time.sleep(60)"
    )
    started = time.monotonic()
    with pytest.raises(CommandFailed, match="timed out after 1s"):
        process.check([sys.executable, "-c", script], timeout=1)
    assert time.monotonic() - started < 10
    child = int(pidfile.read_text())
    time.sleep(0.2)
    assert not _alive(child), "the grandchild survived the timeout"


def _pidfd_opens() -> bool:
    try:
        os.close(os.pidfd_open(os.getpid()))
    except (AttributeError, OSError):
        return False
    return True


@pytest.mark.skipif(not _pidfd_opens(), reason="no pidfd here (an old kernel, or seccomp): Popen's own wait is used")
def test_the_end_of_a_command_is_seen_at_once_not_looked_for_in_sleeps(monkeypatch):
    """Popen.wait with a timeout sleeps between looks (up to 50 ms): each short virsh paid it."""
    slept: list[float] = []
    real_sleep = time.sleep
    monkeypatch.setattr(time, "sleep", lambda s: (slept.append(s), real_sleep(s)))
    result = process.run(["sleep", "0.2"], timeout=30)
    assert result.returncode == 0 and slept == []
    assert process.run(["true"], timeout=10**8).returncode == 0, "a timeout beyond poll's 24.8 days"
    with pytest.raises(CommandFailed, match="timed out after 0.3s"):
        process.check(["sleep", "5"], timeout=0.3)


def test_without_a_pidfd_the_wait_still_ends_and_times_out(monkeypatch):
    def no_pidfd(pid: int) -> int:
        raise OSError(38, "Function not implemented")

    monkeypatch.setattr(process.os, "pidfd_open", no_pidfd)
    assert process.run(["true"], timeout=30).returncode == 0
    with pytest.raises(CommandFailed, match="timed out"):
        process.check(["sleep", "5"], timeout=0.3)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            state = fh.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"  # a zombie is dead; only its parent (init here) has yet to reap it


def test_stream_to_callback_keeps_a_copy():
    seen = []
    r = process.check(["printf", "a\\nb\\n"], stream=seen.append)
    assert seen == ["a\n", "b\n"] and r.stdout == "a\nb\n"


def test_input_is_fed():
    assert process.check(["cat"], input="hello").stdout == "hello"


def test_secrets_are_redacted_from_errors():
    redaction.register_secret("s3cr3t-token")
    with pytest.raises(CommandFailed) as info:
        process.check([sys.executable, "-c", "import sys; print('token s3cr3t-token', file=sys.stderr); sys.exit(1)"])
    assert "s3cr3t-token" not in str(info.value) and "***" in info.value.stderr


def test_watchdog_stops_a_command_with_its_reason():
    started = time.monotonic()
    seen = []
    with pytest.raises(CommandFailed, match=r"' was stopped: no progress\. Last output: waiting$") as info:
        process.check(
            ["sh", "-c", "echo waiting; sleep 60"], stream=seen.append, watchdog=lambda: "no progress" if seen else None
        )
    assert time.monotonic() - started < 10
    assert info.value.stdout == "waiting\n"


def test_watchdog_that_stays_quiet_changes_nothing():
    assert process.check(["sh", "-c", "sleep 1.5; echo ok"], watchdog=lambda: None).stdout == "ok\n"
