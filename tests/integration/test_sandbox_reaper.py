"""scripts/sandbox.sh starts libvirt's daemons under a reaper, as a service manager would: an orphan
(each QEMU libvirtd stops) is reaped at once, not when this machine's PID 1 gets to it (seconds
late: libvirtd waited for every QEMU it stopped to be gone). Run for real, with a daemon of its own."""

from __future__ import annotations

import os
import select
import subprocess
import time
from pathlib import Path

SANDBOX = Path(__file__).resolve().parents[2] / "scripts" / "sandbox.sh"


def test_a_daemon_started_under_the_reaper_returns_its_status_and_its_orphans_are_reaped_at_once(tmp_path):
    pidfile = tmp_path / "orphan"
    # The script's functions, without its command dispatch; a "daemon" that leaves a child behind.
    script = (
        f'source <(sed "/^case /,\\$d" {SANDBOX}); '
        f"reaped sh -c 'sleep 2 >/dev/null 2>&1 & echo $! > {pidfile}; exit 3' "
        '&& echo "status 0" || echo "status $?"'
    )
    held_r, held_w = os.pipe()  # a file of the caller's that no reaper or daemon may keep open
    started = time.monotonic()
    try:
        result = subprocess.run(
            ["bash", "-c", script], capture_output=True, text=True, timeout=30, pass_fds=(held_w,), cwd=tmp_path
        )
    finally:
        os.close(held_w)
    assert result.stdout.strip() == "status 3", result
    assert time.monotonic() - started < 1.5, "returned when the daemon returned, not when its orphan ended"
    assert select.select([held_r], [], [], 2)[0] and os.read(held_r, 1) == b"", "the caller's pipe let go"
    os.close(held_r)
    orphan = int(pidfile.read_text())
    parent = int(next(line.split()[1] for line in Path(f"/proc/{orphan}/status").open() if line.startswith("PPid:")))
    assert parent != 1 and "PR_SET_CHILD_SUBREAPER" in Path(f"/proc/{parent}/cmdline").read_text()
    assert os.readlink(f"/proc/{parent}/cwd") == "/", "the reaper holds no directory of the caller's"
    deadline = time.monotonic() + 10
    while state(orphan) not in ("Z", None):
        assert time.monotonic() < deadline, "the orphan ends (sleep 2)"
        time.sleep(0.01)
    ended = time.monotonic()
    while state(orphan) is not None:
        assert time.monotonic() < deadline, "the orphan reaped"
        time.sleep(0.01)
    assert time.monotonic() - ended < 0.5, "reaped as it ended, not when PID 1 got to it"
    while state(parent) not in ("Z", None):  # then the reaper, with nothing left to reap, ends
        assert time.monotonic() < deadline, "the reaper ends with its last orphan"
        time.sleep(0.01)


def state(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None
