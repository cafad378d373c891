"""`vagabond prepare` on this host, for real: a swap file made, kept and removed; Docker's firewall
chain opened in a network namespace of the test's own; libvirtd started when it is not running."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from tests import helpers
from tests.conftest import NETNS, REPO

pytestmark = pytest.mark.real

VAGABOND = [sys.executable, "-m", "vagabond"]


@pytest.fixture(autouse=True)
def root_only():
    if os.geteuid() != 0:
        pytest.skip("REAL TOOL MISSING: prepare changes the host and needs root")


# The record of the swap files these tests make, and only theirs.
STATE = Path(tempfile.mkdtemp(prefix="vagabond-prepare-state-"))


def prepare(*args: str, netns: str | None = None, project: Path = REPO) -> tuple[int, list[dict] | str]:
    """On the host, as a user runs it (libvirtd, when it must be started, goes into the VMs'
    namespace); inside ``netns`` when the test needs a firewall of its own."""
    inside = ["ip", "netns", "exec", netns] if netns else []
    out = subprocess.run(
        [*inside, *VAGABOND, "prepare", "--json", *args],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=600,
        env=dict(os.environ, VAGABOND_NETNS=NETNS, VAGABOND_STATE=str(STATE)),
    )
    return out.returncode, (json.loads(out.stdout) if out.returncode == 0 else out.stderr)


def by_step(actions: list[dict]) -> dict[str, dict]:
    return {a["step"]: a for a in actions}


def swaps() -> str:
    return Path("/proc/swaps").read_text()


def test_swap_file_is_made_once_and_removed(tmp_path):
    swap_file = Path("/var/tmp") / f"vagabond-test-swap-{uuid.uuid4().hex[:8]}"  # /tmp may be tmpfs: no swap there
    try:
        code, actions = prepare("--swap", "256M", "--swap-file", str(swap_file))
        assert code == 0, actions
        assert by_step(actions)["swap"] == {
            "step": "swap",
            "changed": True,
            "detail": f"created and enabled {swap_file} (256 MiB; --swap 256M)",
        }
        assert str(swap_file) in swaps() and oct(swap_file.stat().st_mode & 0o777) == "0o600"
        code, actions = prepare("--swap", "256M", "--swap-file", str(swap_file))
        assert by_step(actions)["swap"]["changed"] is False, "a second run must change nothing"
        code, actions = prepare("--swap", "0", "--swap-file", str(swap_file))
        assert by_step(actions)["swap"]["changed"] is True
        assert str(swap_file) not in swaps() and not swap_file.exists()
    finally:
        if str(swap_file) in swaps():
            subprocess.run(["swapoff", str(swap_file)])
        swap_file.unlink(missing_ok=True)


@pytest.mark.parametrize("size", ["256M", "0"])
def test_a_file_that_is_not_vagabonds_swap_file_is_never_touched(tmp_path, size):
    victim = Path("/var/tmp") / f"vagabond-test-victim-{uuid.uuid4().hex[:8]}"
    victim.write_text("precious\n")
    try:
        code, err = prepare("--swap", size, "--swap-file", str(victim))
        assert code == 2 and f"error: {victim} exists and is not a swap file vagabond made" in err
        assert victim.read_text() == "precious\n" and str(victim) not in swaps()
    finally:
        victim.unlink(missing_ok=True)


def test_swap_beyond_the_disk_is_refused_clearly(tmp_path):
    (tmp_path / "boxes").mkdir()
    (tmp_path / "boxes" / "huge.yaml").write_text("description: x\nbase: {box: a/b}\nresources: {memory: 1048576}\n")
    swap_file = Path("/var/tmp") / f"vagabond-test-swap-{uuid.uuid4().hex[:8]}"
    code, err = prepare("--swap-file", str(swap_file), project=tmp_path)
    assert code != 0
    assert "error: not enough disk for a" in err and f"swap file in {swap_file.parent}" in err
    assert not swap_file.exists() and str(swap_file) not in swaps()


def test_docker_user_chain_is_opened_for_vagabonds_guests_only_and_undone():
    """Docker's chain (and an earlier vagabond's rules for every bridge) in a namespace of its own,
    with a default route through an uplink: prepare opens the management subnet's way out through
    that uplink and the replies back, nothing else, and removes the old rules; --undo removes its
    own and leaves another's rule alone."""
    netns = f"vagabond-fw-{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", netns], check=True)
    try:
        ns = ["ip", "netns", "exec", netns]
        subprocess.run([*ns, "ip", "link", "add", "uplink0", "type", "veth", "peer", "name", "uplink1"], check=True)
        subprocess.run([*ns, "ip", "link", "set", "uplink0", "up"], check=True)
        subprocess.run([*ns, "ip", "route", "add", "default", "dev", "uplink0"], check=True)
        ipt = [*ns, "iptables", "-w"]
        subprocess.run([*ipt, "-N", "DOCKER-USER"], check=True)
        subprocess.run([*ipt, "-A", "DOCKER-USER", "-j", "RETURN"], check=True)
        subprocess.run([*ipt, "-I", "DOCKER-USER", "-i", "virbr+", "-j", "ACCEPT"], check=True)  # an earlier vagabond's
        subprocess.run([*ipt, "-I", "DOCKER-USER", "-s", "10.9.9.0/24", "-j", "DROP"], check=True)  # someone else's
        code, actions = prepare(netns=netns)
        assert code == 0, actions
        assert by_step(actions)["firewall"]["changed"] is True
        rules = subprocess.run([*ipt, "-S", "DOCKER-USER"], capture_output=True, text=True, check=True).stdout
        assert rules.splitlines()[1:3] == [
            "-A DOCKER-USER -s 192.168.121.0/24 -i virbr+ -o uplink0 -m comment --comment vagabond -j ACCEPT",
            "-A DOCKER-USER -d 192.168.121.0/24 -i uplink0 -o virbr+ -m conntrack --ctstate RELATED,ESTABLISHED "
            "-m comment --comment vagabond -j ACCEPT",
        ], rules
        assert "-A DOCKER-USER -i virbr+ -j ACCEPT" not in rules, "the old rule for every bridge is gone"
        code, actions = prepare(netns=netns)
        assert by_step(actions)["firewall"]["changed"] is False
        code, actions = prepare("--undo", netns=netns)
        assert code == 0 and by_step(actions)["firewall"]["changed"] is True, actions
        rules = subprocess.run([*ipt, "-S", "DOCKER-USER"], capture_output=True, text=True, check=True).stdout
        assert rules.splitlines() == [
            "-N DOCKER-USER",
            "-A DOCKER-USER -s 10.9.9.0/24 -j DROP",
            "-A DOCKER-USER -j RETURN",
        ], rules
    finally:
        subprocess.run(["ip", "netns", "delete", netns])


def test_libvirtd_is_started_when_nothing_runs_it():
    if subprocess.run(
        ["virsh", "-c", "qemu:///system", "list", "--name"], capture_output=True, text=True
    ).stdout.strip():
        pytest.skip("a VM is running: stopping libvirtd now would disturb it")
    # The sandbox's libvirtd, not a runner twin's in its own namespace (tests/lanes.py), and gone
    # from the process table (a dead one that was not reaped yet still looks like a libvirtd).
    killed = helpers.sandbox_pids("libvirtd", NETNS)
    subprocess.run(["kill", *killed], capture_output=True)
    for _ in range(300):
        if not any(Path(f"/proc/{pid}").exists() for pid in killed):
            break
        time.sleep(0.1)
    code, actions = prepare()
    assert code == 0, actions
    assert by_step(actions)["libvirt"]["changed"] is True
    assert "started virtlogd and libvirtd (no service manager)" in by_step(actions)["libvirt"]["detail"]
    assert len(helpers.sandbox_pids("libvirtd", NETNS)) == 1, "libvirtd started again, in the VMs' namespace"
    code, actions = prepare()
    assert by_step(actions)["libvirt"] == {
        "step": "libvirt",
        "changed": False,
        "detail": "libvirtd answers; storage pool default is running",
    }


def test_a_ci_user_is_let_in_to_libvirt_and_kvm_without_root():
    user = f"vagabond-ci-{uuid.uuid4().hex[:6]}"
    subprocess.run(["useradd", *helpers.USER_IDS, "--no-create-home", user], check=True)
    try:
        code, actions = prepare("--user", user)
        assert code == 0, actions
        step = by_step(actions)["user"]
        assert step["changed"] and "added to group libvirt" in step["detail"] and "added to group kvm" in step["detail"]
        groups = subprocess.run(["id", "-nG", user], capture_output=True, text=True).stdout.split()
        assert {"libvirt", "kvm"} <= set(groups)
        acl = subprocess.run(
            ["getfacl", "--omit-header", "/run/libvirt/libvirt-sock"], capture_output=True, text=True
        ).stdout
        assert f"user:{user}:rw" in acl
        # The serial log vagrant-libvirt creates as that user (FileUtils.touch), as that user.
        serial = Path("/var/log/libvirt/qemu") / f"vagabond-ci-test-{user}-serial.log"
        touched = subprocess.run(["setpriv", f"--reuid={user}", "--regid=nogroup", "--clear-groups", "touch", serial])
        serial.unlink(missing_ok=True)
        assert touched.returncode == 0, "the user may create a VM's serial log"
        code, actions = prepare("--user", user)
        assert by_step(actions)["user"]["changed"] is False, "a second run changes nothing"
    finally:
        subprocess.run(["setfacl", "--remove", f"u:{user}", "/run/libvirt/libvirt-sock"], capture_output=True)
        subprocess.run(["setfacl", "--remove", f"u:{user}", "/var/log/libvirt/qemu"], capture_output=True)
        subprocess.run(["userdel", user], capture_output=True)
