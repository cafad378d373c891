"""A guest back from its memory image (vagabond.vm.warm restores and resets one): its SSH key (the
one it was saved with, or for an image from elsewhere a new one, given through its agent while its
network cards are unplugged), then its address where vagrant-libvirt looks for it, the host's time
and fresh randomness."""

from __future__ import annotations

import re
import secrets
import time
from pathlib import Path

from vagabond import files, process, timeouts
from vagabond.bases import guest
from vagabond.errors import VagabondError, WarmError
from vagabond.host import guestagent, ledger, libvirt
from vagabond.vm import remote
from vagabond.vm.warmimage import Machine, _shown, image_dir, machines, rekeys
from vagabond.vm.workdir import Workdir


def new_key(wd: Workdir, meta: dict) -> str | None:
    """The key pair the restored VM is reached with, in the work directory. An image saved here
    keeps the VM's key pair: it comes back with it (None). One taken in from a VM that can take a
    new key holds none: a new pair, whose public half (returned) the guest's agent makes its only key."""
    if not (image_dir(wd) / wd.ssh_key.name).is_file():
        if not rekeys(meta):
            raise WarmError("the warm image holds no SSH key and its VM cannot take a new one")
        remote.make_key(wd)
        return wd.ssh_key.with_name(wd.ssh_key.name + ".pub").read_text().strip()
    for name in (wd.ssh_key.name, wd.ssh_key.name + ".pub"):
        if (image_dir(wd) / name).is_file():
            wd.claim(name)
            files.copy_regular(image_dir(wd) / name, wd.path / name, mode=0o644 if name.endswith(".pub") else 0o600)
    return None


def can_rekey(domain: str, key: str) -> bool:
    """Whether the running guest can take a new key after a restore: it has the agent's channel and
    its agent answers, may run programs (RHEL's default configuration forbids that), has vagabond's
    key script that knows `rekey` (a box made before it did lacks it), and that script takes the
    key the guest has now (``key``: nothing changes) as it will take a new one."""
    if not guestagent.connected(domain) or not guestagent.answers(domain, within=timeouts.AGENT):
        return False
    try:
        code, _ = guestagent.run(
            domain, "/bin/grep", ["-qsF", REKEY_MARK, guest.AUTHORIZED_KEY_SCRIPT_PATH], timeout=timeouts.AGENT
        )
        if code == 0:
            code, _ = guestagent.run(
                domain, guest.AUTHORIZED_KEY_SCRIPT_PATH, ["rekey"], input=key + "\n", timeout=timeouts.AGENT
            )
    except VagabondError:  # the agent did not run it, or virsh did not answer: the VM keeps its key
        return False
    return code == 0


REKEY_MARK = '[ "$1" = rekey ]'


def restore_machine(wd: Workdir, m: Machine, image: Path, key: str | None) -> None:
    """The domain back from its memory image. Given a public key, the guest's agent makes it the
    guest's only SSH key while its network cards are unplugged: the key it was saved with opens
    nothing by the time it is on the network again (and after a reboot neither: guest.py)."""
    if key is None:
        libvirt.restore(image)
        return
    libvirt.restore(image, paused=True)
    for nic in m.interfaces:
        libvirt.set_link(m.domain, nic["mac"], up=False)
    libvirt.check("resume", m.domain)
    hint = _cold(wd)
    if not guestagent.answers(m.domain, within=timeouts.AGENT):
        raise WarmError(
            f"{m.domain}'s guest agent does not answer after its restore: it cannot get its new SSH key", hint=hint
        )
    code, stderr = guestagent.run(
        m.domain, guest.AUTHORIZED_KEY_SCRIPT_PATH, ["rekey", "--host-keys"], input=key + "\n"
    )
    if code != 0:
        detail = _shown(" ".join(stderr.split())[-200:]) if stderr.strip() else f"exit {code}"
        raise WarmError(f"{m.domain} did not take its new SSH key: {detail}", hint=hint)
    for nic in m.interfaces:
        libvirt.set_link(m.domain, nic["mac"], up=True)


def _cold(wd: Workdir) -> str:
    """What to do when a restored guest does not come back: the VM gone, and a cold boot."""
    return f"vagabond destroy {wd.box.name} && vagabond up {wd.box.name} --cold"


def ports_forward_at_once(meta: dict) -> None:
    """The restored guests' new bridge ports forward at once, on the networks vagabond made."""
    ours = set(ledger.read()["networks"])
    for network in meta.get("networks", {}):
        if network in ours:
            libvirt.forward_at_once(network)


# In the guest, after a resume, as root: where systemd-networkd runs, its DHCP leases renewed (a
# request for the address it has: the network's server then holds the lease vagrant-libvirt looks
# for). Each request is left to run on its own (nohup: sudo's pty hangs up as the script ends): the
# caller must stay connected until networkd has asked the bus who it is (systemd 252 fails the call
# of one already gone, NameHasNoOwner, and renews nothing), and SELinux policies (Debian's among
# them) deny networkd's reply to an unconfined caller, whom it would then keep waiting until its
# timeout, the renewal long done. Prints "renewed" where networkd runs (the requests are on their way).
RENEW_SCRIPT = (
    "if command -v busctl >/dev/null 2>&1 && pidof systemd-networkd >/dev/null 2>&1; then "
    'for l in /sys/class/net/*; do [ "${l##*/}" = lo ] || '
    "nohup busctl call --timeout=10 org.freedesktop.network1 /org/freedesktop/network1 "
    'org.freedesktop.network1.Manager RenewLink i "$(cat "$l/ifindex")" </dev/null >/dev/null 2>&1 & '
    "done; echo renewed; fi"
)
# Fresh randomness from the host (stdin), which any user may give the kernel: it goes over SSH, as
# no program's arguments (the agent's requests are virsh's) show it.
RESEED = "cat > /dev/urandom"
# Over SSH (sudo): the randomness, then the renewal.
RESUME_SCRIPT = f"{RESEED} && {RENEW_SCRIPT}"
# By the guest's agent (root), as the guest resumes: the host's time, the first line of its stdin,
# sent as the agent starts it (a fraction of a second off, where over SSH it waited for the
# connection and sudo).
AGENT_CLOCK = 'read -r t && date -u -s "@$t" >/dev/null'


def after_resume(wd: Workdir, meta: dict) -> None:
    """Resumed guests: reachable at the address they had (the SSH configuration as saved), given the
    host's time and fresh randomness, and their leases renewed (by networkd in the guest; else their
    links go down and up, and the guest asks again), so that vagrant-libvirt finds them; the SSH
    configuration follows an address that changed.

    SSH goes to the address the guest has only where the network leases that address to this guest
    (a reset) and to no other. A NIC the network has no lease for (a network made anew), or whose
    lease names another address, goes down and up first, and the network's DHCP server decides
    which address the guest gets before the first connection goes anywhere. A guest whose agent ran
    programs at the save has its clock set by the agent meanwhile; the randomness, and the renewal
    of a known lease (with sudo), go over that first connection. Any other guest, or one whose
    agent fails it now, gets all of it over SSH with sudo."""
    saved = meta.get("ssh") or ""
    config = saved.split("\nHost *\n")[0]  # Vagrant's part: write_ssh_config adds vagabond's own
    remote.write_ssh_config(wd, config)
    for m in machines(meta):
        first = m.interfaces[0] if m.interfaces else None
        address = remote.addresses(wd).get(m.name)
        clock = _agent_start(m, AGENT_CLOCK, f"{time.time():.3f}\n")
        unleased = [nic for nic in m.interfaces if not (_ours(nic, address) if nic is first else _lease(nic))]
        if first and address and first not in unleased:
            libvirt.announce(first["network"], address, first["mac"])
        config = _ask_afresh(wd, m, unleased, config)
        leased = [nic for nic in m.interfaces if nic not in unleased]
        if clock is None:
            out = _resume_over_ssh(wd, m).stdout
        else:
            # The connection the next commands share, opened while the agent sets the clock: the
            # randomness, and where a lease is known (not just granted afresh) its renewal, with sudo.
            command = ["sudo", "-n", "sh", "-c", RESUME_SCRIPT] if leased else ["sh", "-c", RESEED]
            out = _ssh(wd, m, command, input=secrets.token_hex(256)).stdout
            if not _agent_done(m, clock):
                _ssh(wd, m, ["sudo", "-n", "date", "-u", "-s", f"@{time.time():.3f}"])
        if "renewed" not in out:
            config = _ask_afresh(wd, m, leased, config)


def _lease(nic: dict) -> str | None:
    """The address the NIC's network has leased to its MAC address (the last listed)."""
    mine = [a for mac, a in libvirt.leases(nic["network"]) if mac == nic["mac"].lower()]
    return mine[-1] if mine else None


def _ours(nic: dict, address: str | None) -> bool:
    """Whether the network leases ``address`` to this NIC's MAC address and to no other."""
    holders = {mac for mac, a in libvirt.leases(nic["network"]) if a == address}
    return address is not None and holders == {nic["mac"].lower()}


def _ask_afresh(wd: Workdir, m: Machine, nics: list[dict], config: str) -> str:
    """Each NIC's link down and up, so the guest asks for a lease afresh; the SSH configuration,
    once the first NIC (when among them) has its lease."""
    for nic in nics:
        libvirt.set_link(m.domain, nic["mac"], up=False)
        libvirt.set_link(m.domain, nic["mac"], up=True)
    return _leased(wd, m, config) if m.interfaces and m.interfaces[0] in nics else config


def _leased(wd: Workdir, m: Machine, config: str) -> str:
    """Once the network has leased the machine's first NIC an address, and a guest with an agent
    holds it (the table may still list the lease the NIC had before it asked afresh, and a first
    connection sent before networkd has set the address is lost, sent again by TCP a second later):
    the SSH configuration, changed (and written) when the address did."""
    first = m.interfaces[0]
    deadline = time.monotonic() + timeouts.LEASE
    while (address := _lease(first)) is None or (m.agent and not _holds(m, address)):
        if time.monotonic() > deadline:
            raise WarmError(
                f"{m.domain} got no address from network {first['network']} "
                f"within {timeouts.LEASE:.0f}s after its restore",
                hint=_cold(wd),
            )
        time.sleep(0.05)
    if remote.addresses(wd).get(m.name) != address:
        remote.close_master(wd, m.name)
        config = _with_address(config, m.name, address)
        remote.write_ssh_config(wd, config)
    return config


def _holds(m: Machine, address: str) -> bool:
    """Whether the guest holds the address, as its agent sees it; an agent that does not answer
    tells nothing, and the lease stands."""
    try:
        found = libvirt.run("domifaddr", m.domain, "--source", "agent", timeout=timeouts.PROBE)
    except VagabondError:
        return True
    return not found.ok or re.search(rf"\s{re.escape(address)}/\d+", found.stdout) is not None


def _agent_start(m: Machine, script: str, input: str) -> int | None:
    """``sh -c SCRIPT`` started by the guest's agent, ``input`` on its stdin: its pid in the guest;
    None when the guest's agent did not run programs at the save, or does not take this one now."""
    if not m.agent:
        return None
    try:
        return guestagent.start(m.domain, "/bin/sh", ["-c", script], input=input)
    except VagabondError:
        return None


def _agent_done(m: Machine, pid: int) -> bool:
    """Whether the agent's script ended well; not when it failed or did not end (SSH stands in)."""
    try:
        # `date` takes a fraction of a second; an agent that has not run it by then, SSH stands in for.
        code, _, _ = guestagent.wait(m.domain, pid, "the guest's clock", timeout=5)
    except VagabondError:
        return False
    return code == 0


def _resume_over_ssh(wd: Workdir, m: Machine) -> process.Result:
    """RESUME_SCRIPT, then the host's time, over SSH."""
    result = _ssh(wd, m, ["sudo", "-n", "sh", "-c", RESUME_SCRIPT], input=secrets.token_hex(256))
    # The host's time, sent over the connection now open (the first one may take seconds).
    _ssh(wd, m, ["sudo", "-n", "date", "-u", "-s", f"@{time.time():.3f}"])
    return result


def _ssh(wd: Workdir, m: Machine, command: list[str], *, input: str | None = None) -> process.Result:
    """A command in the resumed guest, tried again while the guest is not reachable yet (ssh's 255);
    WarmError when it fails."""
    deadline = time.monotonic() + timeouts.GUEST_COMMAND
    while True:
        result = remote.run(wd, m.name, command, stream=False, timeout=timeouts.GUEST_COMMAND, input=input)
        if result.returncode != 255 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    if result.returncode != 0:
        detail = result.stderr.strip()[-200:] or f"exit {result.returncode}"
        raise WarmError(f"{m.domain} does not answer over SSH after its restore: {detail}", hint=_cold(wd))
    return result


def _with_address(config: str, machine: str, address: str) -> str:
    """Vagrant's ssh-config of the machine with its HostName set to the address it has now."""
    lines, host = [], None
    for line in config.splitlines():
        words = line.split()
        if len(words) == 2 and words[0] == "Host":
            host = words[1]
        if host == machine and len(words) == 2 and words[0] == "HostName":
            line = line[: line.index("HostName")] + f"HostName {address}"
        lines.append(line)
    return "\n".join(lines) + "\n"
