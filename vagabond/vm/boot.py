"""`vagrant up` as vagabond runs it: its output logged and watched (the DHCP lease it would wait
ten minutes for, the moment it is ready for SSH, an upload into the pool), in turn with other
runs while it creates the domain (and, when there is none, the management network, made faster
than vagrant-libvirt makes it: libvirt.MGMT_NETWORK_XML), and the SSH configuration written as
early as it can be."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable

from vagabond import timeouts, ui
from vagabond.errors import VagabondError
from vagabond.host import libvirt
from vagabond.vm import remote
from vagabond.vm.workdir import Workdir

log = logging.getLogger(__name__)

WAITING = "Waiting for domain to get an IP address"
READY = "Machine booted and ready!"


def log_sink(wd: Workdir, name: str):
    """A sink for a program's output lines: into logs/<name>.log, and shown as progress."""
    fh = wd.log_file(name)

    def sink(line: str) -> None:
        fh.write(line)
        fh.flush()
        text = line.strip()
        # vagrant-libvirt redraws a progress bar with escape codes: keep those out of the log lines.
        if text and "Progress:" not in text:
            ui.info(f"vagrant: {text}")

    return sink, fh


class LeaseWatch:
    """vagrant-libvirt waits up to 10 minutes for a DHCP lease whatever boot_timeout says: stop
    `vagrant up` when the guest has no IP address after the boot timeout."""

    def __init__(self, limit: float) -> None:
        self.limit = limit
        self.since: float | None = None
        self.done = False

    def see(self, line: str) -> None:
        if WAITING in line and self.since is None:
            self.since = time.monotonic()
        elif "SSH address:" in line or "Waiting for machine to boot" in line:
            self.done = True

    def __call__(self) -> str | None:
        if self.since is not None and not self.done and time.monotonic() - self.since > self.limit:
            return f"the guest got no IP address within {self.limit:.0f}s (its serial console log is kept in logs/)"
        return None


class EarlySshConfig:
    """Ask Vagrant for the SSH config as soon as it says the machine is ready, and open the shared
    connection with it.

    `vagrant up` goes on for a few seconds after "Machine booted and ready!"; `vagrant ssh-config`
    takes no machine lock and costs ~2 s, and the first SSH handshake with an emulated guest ~1 s:
    done then, both stay off the critical path, and the first command after `up` finds the shared
    connection open. Multi-machine boxes fetch the config afterwards as usual.
    """

    def __init__(self, wd: Workdir) -> None:
        self.wd = wd
        self.thread: threading.Thread | None = None
        self.written = False

    def see(self, line: str) -> None:
        if READY in line and self.thread is None and len(self.wd.box.machine_names()) == 1:
            self.thread = threading.Thread(target=self._fetch, daemon=True)
            self.thread.start()

    def _fetch(self) -> None:
        with contextlib.suppress(VagabondError):
            text = self.wd.vagrant(timeout=timeouts.VAGRANT_QUERY).ssh_config(vm_name=self.wd.box.primary())
            if not text:
                return
            remote.write_ssh_config(self.wd, text)
            self.written = True
            remote.run(self.wd, self.wd.box.primary(), ["true"], stream=False, timeout=timeouts.VAGRANT_QUERY)

    def result(self) -> bool:
        """Whether the config was written (the thread is waited for: it may still be connecting)."""
        if self.thread is None:
            return False
        self.thread.join(timeout=2 * timeouts.VAGRANT_QUERY)
        return self.written


def refresh_ssh_config(wd: Workdir) -> None:
    v = wd.vagrant(timeout=timeouts.VAGRANT_QUERY)
    configs = [v.ssh_config(vm_name=m) for m in wd.box.machine_names()]
    remote.write_ssh_config(wd, "\n".join(configs))


def vagrant_up(wd: Workdir, driver: str, boot_timeout: float, watchers: list[Callable[[str], None]]) -> EarlySshConfig:
    """`vagrant up --no-provision`, stopped when the guest gets no lease in time; the host-wide turn
    is held until its domain exists (waiting for a lease), so boots still run side by side.
    Returns the SSH configuration fetched while vagrant finished (see EarlySshConfig)."""
    sink, fh = log_sink(wd, "vagrant")
    early = EarlySshConfig(wd)
    lease = LeaseWatch(boot_timeout)
    turn = libvirt.CreationTurn()

    def watch(line: str) -> None:
        lease.see(line)
        for watcher in watchers:
            watcher(line)
        if WAITING in line:
            turn.release()  # the domain exists: the next run may create its own
        sink(line)
        early.see(line)

    try:
        with ui.step(f"vagrant up ({driver})"):
            turn.acquire(on_wait=lambda: ui.info("waiting for another vagabond to create its domain first"))
            if libvirt.make_management_network():
                log.debug("defined %s (no address ping, no spanning tree)", libvirt.MGMT_NETWORK)
            wd.claim(".vagrant")  # Vagrant's machine state, made by this up
            v = wd.vagrant(timeout=boot_timeout + timeouts.UP_SLACK, stream=watch)
            v.watchdog = lease
            v.up(provider="libvirt", provision=False)
    finally:
        turn.release()
        fh.close()
    return early


def write_ssh_config(wd: Workdir, early: EarlySshConfig | None = None) -> None:
    """The SSH configuration of the VM's machines: the one fetched early, else asked for now."""
    if early is None or not early.result():
        refresh_ssh_config(wd)
