"""The scripts a resumed guest runs (vagabond.vm.resume), run here by /bin/sh with the guest's
programs stubbed on PATH: what the agent's script sets the clock to, what it asks networkd, and
what it prints."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from vagabond.vm import resume


@pytest.fixture
def guest_bin(tmp_path) -> Path:
    """date, busctl and pidof that record their arguments; networkd "runs"."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("date", "busctl", "pidof"):
        stub = bin_dir / name
        stub.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path}/{name}.args\n')
        stub.chmod(0o755)
    return bin_dir


def run(script: str, guest_bin: Path, stdin: str) -> subprocess.CompletedProcess:
    env = {"PATH": f"{guest_bin}:/usr/bin:/bin"}
    return subprocess.run(["/bin/sh", "-c", script], input=stdin, env=env, capture_output=True, text=True, timeout=30)


def test_the_agents_clock_script_sets_the_time_it_was_given(guest_bin):
    now = f"{time.time():.3f}"
    result = run(resume.AGENT_CLOCK, guest_bin, f"{now}\n")
    assert result.returncode == 0 and result.stdout == "", result
    assert (guest_bin.parent / "date.args").read_text() == f"-u -s @{now}\n"


def test_the_clock_script_fails_when_the_clock_is_not_set(guest_bin):
    (guest_bin / "date").write_text("#!/bin/sh\nexit 1\n")
    assert run(resume.AGENT_CLOCK, guest_bin, "1.000\n").returncode != 0, "the SSH connection then sets it"


def test_the_renewal_asks_networkd_for_each_link_and_does_not_wait_for_its_answer(guest_bin):
    """Each busctl stays connected until networkd answers (systemd 252 asks the bus who called, and
    renews nothing for a caller already gone), and the script does not wait for them (SELinux may
    deny the answer), nor do they hold its output or die with sudo's pty."""
    args = guest_bin.parent / "busctl.args"
    (guest_bin / "busctl").write_text(
        f'#!/bin/sh\nsleep 2\nread -r x || echo "$@ stdin=eof $(grep SigIgn /proc/$$/status)" >> {args}\n'
    )
    started = time.monotonic()
    result = run(resume.RENEW_SCRIPT, guest_bin, "not for busctl\n")
    assert time.monotonic() - started < 1.5, "the script waited for busctl"
    assert result.returncode == 0 and result.stdout == "renewed\n", result
    links = [n for n in os.listdir("/sys/class/net") if n != "lo"]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and len(args.read_text().splitlines() if args.exists() else []) < len(links):
        time.sleep(0.1)
    asked = args.read_text().splitlines()
    indexes = sorted(int(Path(f"/sys/class/net/{n}/ifindex").read_text()) for n in links)
    assert sorted(int(a.split("RenewLink i ")[1].split()[0]) for a in asked) == indexes
    assert all("--expect-reply=no" not in a and "--timeout=" in a and "stdin=eof" in a for a in asked), asked
    assert all(int(a.split("SigIgn:")[1], 16) & 1 for a in asked), "SIGHUP (sudo's pty closing) would end busctl"


def test_without_networkd_the_renewal_says_nothing_and_the_links_go_down_and_up(guest_bin):
    (guest_bin / "pidof").write_text("#!/bin/sh\nexit 1\n")
    result = run(resume.RENEW_SCRIPT, guest_bin, "")
    assert result.returncode == 0 and result.stdout == "" and not (guest_bin.parent / "busctl.args").exists()


def test_the_ssh_script_gives_the_kernel_its_stdin_and_takes_no_time():
    """Over SSH the clock is a command of its own, after the connection opened."""
    assert resume.RESUME_SCRIPT.startswith(resume.RESEED + " && ") and "date" not in resume.RESUME_SCRIPT
    assert "read" not in resume.RESEED and "/dev/urandom" in resume.RESEED
