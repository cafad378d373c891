"""Boot benchmark, side by side in one run on this host (as root; it starts the sandbox when the
host has no service manager):

  .venv/bin/python bench/boot.py [--rounds 3] [--calls 15] [--json FILE]

1. Ready: `vagabond up debian12 --no-provision` until `vagabond run debian12 -- true` answers,
   a new VM each round, the base box built and in the pool           (target <= 15 s)
2. What up adds: that time over the guest's own time to SSH, from the domain's start (libvirt's
   log of it) to sshd answering on the guest's address (a watcher in the VMs' namespace reads
   the lease and knocks every 0.1 s)                                 (target <= 1.10x)
3. Ready from a prebuilt box in a local catalog: `vagabond up debian12-selinux` (download, box
   add, upload into the pool, boot, mode checks) until `run` answers, the box removed from the
   store and the pool before each round, over the median of 1        (target <= 1.5x)
4. `vagabond run BOX -- true` against `vagrant ssh -c true` on the same VM (target <= 0.03x),
   with the split: the interpreter and vagabond's imports, and ssh over the shared connection.

The sides of 1 and 3 alternate, each alone on the machine (the other's VM destroyed first).
Each line gives the ratio of the medians and the spread (min / median / max) of each side.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

from common import (
    ENV,
    VAGABOND,
    alternate,
    ensure_sandbox,
    publish_prebuilt,
    report,
    selinux_project,
    spread,
    timed,
    write_figures,
)
from common import SELINUX_BOX as PREBUILT_BOX

from vagabond import process, sandbox
from vagabond.host import libvirt
from vagabond.vm.workdir import Workdir, domain_prefix

BOX = "debian12"
NAME = "vagabond-bench/boot-selinux"
CATALOG_PORT = 8326
# libvirt's dnsmasq keeps each network's leases in BRIDGE.status (virbr1.status, ...): the watcher
# reads them all, as the management network's bridge is named only once up has made it.
LEASES = Path("/var/lib/libvirt/dnsmasq")

# Runs in the VMs' namespace: waits for a lease that was not there at its start, then for sshd's
# banner on that address; prints the wall-clock time it answered.
WATCHER = r"""
import glob, json, os, socket, sys, time
where, deadline = sys.argv[1], time.time() + float(sys.argv[2])
def leases():
    found = set()
    for path in glob.glob(os.path.join(where, "*.status")):
        try:
            found |= {(l["mac-address"], l["ip-address"]) for l in json.load(open(path))}
        except (OSError, ValueError, KeyError, TypeError):
            pass
    return found
before, address = leases(), None
print("ready", flush=True)
while time.time() < deadline:
    if address is None:
        new = leases() - before
        address = next(iter(new))[1] if new else None
    if address is not None:
        try:
            with socket.create_connection((address, 22), timeout=0.5) as s:
                s.settimeout(2)
                if s.recv(4) == b"SSH-":
                    print(time.time(), flush=True)
                    sys.exit(0)
        except OSError:
            pass
    time.sleep(0.1)
sys.exit(1)
"""


class GuestClock:
    """The guest's own time to SSH in one `up`: from the domain's start, as libvirt logs it, to sshd
    answering on the address the guest leased."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            sandbox.wrap([sys.executable, "-c", WATCHER, str(LEASES), "900"]), stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdout.readline().strip() == "ready"

    def seconds(self, domain: str) -> float:
        try:  # the guest answered `run` already: the watcher has seen sshd, or it never will
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        line = self.proc.stdout.read().strip()
        if not line:
            raise SystemExit(f"bench: the watcher saw no new lease with sshd answering in {LEASES}/*.status")
        answered = float(line)
        started = _domain_started(domain)
        return answered - started


def _domain_started(domain: str) -> float:
    """The last start of the domain in libvirt's log of it: `2026-12-02 01:59:32.123+0000: starting up`."""
    text = libvirt.qemu_log(domain).read_text(errors="replace")
    stamp = re.findall(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+)\+0000: starting up", text, re.M)[-1]
    return datetime.strptime(stamp + "+0000", "%Y-%m-%d %H:%M:%S.%f%z").timestamp()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="rounds per side for 1-3 (default: 3)")
    parser.add_argument("--calls", type=int, default=15, help="calls per side for 4 (default: 15)")
    parser.add_argument("--json", type=Path, help="also write every figure here")
    args = parser.parse_args()
    ensure_sandbox()
    project, servers = selinux_project("vagabond-bench-boot-", NAME, CATALOG_PORT)
    domain = domain_prefix(BOX, project / ".vagabond" / BOX) + "default"
    ready, guest, prebuilt = [], [], []
    verdicts, figures = [], []

    def forget_prebuilt() -> None:
        process.run(["vagrant", "box", "remove", "--force", "--all", NAME], env=ENV)
        for vol in libvirt.box_images(NAME):
            libvirt.delete_volume(vol)

    def up_debian12() -> float:
        clock = GuestClock()
        started = time.monotonic()
        process.check([VAGABOND, "up", BOX, "--no-provision"], cwd=project, env=ENV, timeout=3600)
        process.check([VAGABOND, "run", BOX, "--", "true"], cwd=project, env=ENV)
        took = time.monotonic() - started
        guest.append(clock.seconds(domain))
        process.check([VAGABOND, "destroy", BOX], cwd=project, env=ENV)
        return took

    def up_prebuilt() -> float:
        forget_prebuilt()
        started = time.monotonic()
        result = process.check([VAGABOND, "up", PREBUILT_BOX], cwd=project, env=ENV, timeout=3600)
        process.check([VAGABOND, "run", PREBUILT_BOX, "--", "true"], cwd=project, env=ENV)
        took = time.monotonic() - started
        assert f"using prebuilt {NAME} 1.0.0" in result.stderr, "vagabond up did not use the prebuilt box"
        process.check([VAGABOND, "destroy", PREBUILT_BOX], cwd=project, env=ENV)
        return took

    try:
        # Not measured: the base box built, added and uploaded into the pool; the prebuilt box
        # built from debian12-selinux and published to the project's catalog.
        process.check([VAGABOND, "up", BOX, "--no-provision"], cwd=project, env=ENV, timeout=3600)
        process.check([VAGABOND, "destroy", BOX], cwd=project, env=ENV)
        publish_prebuilt(project, CATALOG_PORT, version="1.0.0")

        alternate(args.rounds, [(up_debian12, ready, "up debian12"), (up_prebuilt, prebuilt, "up prebuilt")])
        target = 15.0
        median = statistics.median(ready)
        ok = median <= target
        verdicts.append(ok)
        print(
            f"ready (up --no-provision, then run): median {median:.1f}s ({'meets' if ok else 'MISSES'} target "
            f"<= {target:.0f}s)\n  vagabond  s: {spread(ready)} ({len(ready)} runs)",
            flush=True,
        )
        verdicts.append(
            report(
                "what up adds over the guest's own time to ssh",
                ready,
                guest,
                1.10,
                labels=("vagabond up + run", "guest: domain start to sshd"),
            )
        )
        verdicts.append(
            report(
                "ready from a prebuilt box / ready",
                prebuilt,
                ready,
                1.5,
                labels=("prebuilt up + run", "up debian12 + run"),
            )
        )

        process.check([VAGABOND, "up", BOX, "--no-provision"], cwd=project, env=ENV, timeout=3600)
        process.check([VAGABOND, "run", BOX, "--", "true"], cwd=project, env=ENV)  # the shared connection
        wd = project / ".vagabond" / BOX
        run_ours, run_theirs, ssh_alone, python_alone = [], [], [], []
        as_vagabond = Workdir.at(wd).vagrant_env()  # vagrant in vagabond's work directory, as vagabond runs it
        ssh = sandbox.wrap(["ssh", "-F", str(wd / "ssh_config"), "-q", "-T", "default", "--", "true"])
        for _ in range(args.calls):
            run_ours.append(timed([VAGABOND, "run", BOX, "--", "true"], project)[0])
            run_theirs.append(timed(["vagrant", "ssh", "-c", "true"], wd, vm_network=True, env_extra=as_vagabond)[0])
            ssh_alone.append(timed(ssh, project)[0])
            python_alone.append(timed([sys.executable, "-c", "import vagabond.cli.quickrun"], project)[0])
        verdicts.append(report("run", run_ours, run_theirs, 0.03, labels=("vagabond run", "vagrant ssh -c")))
        print(
            f"  split of vagabond run: interpreter + imports {spread(python_alone)} s, "
            f"ssh over the shared connection {spread(ssh_alone)} s",
            flush=True,
        )
        figures = [
            {
                "title": "Ready to run a command (software emulation)",
                "unit": "s",
                "series": {
                    "guest alone: domain start to sshd": guest,
                    "vagabond up + run (base box)": ready,
                    "vagabond up + run (prebuilt box, from the catalog)": prebuilt,
                },
            },
            {
                "title": "One command in the VM",
                "unit": "s",
                "series": {
                    "vagrant ssh -c true": run_theirs,
                    "vagabond run BOX -- true": run_ours,
                    "ssh over the shared connection": ssh_alone,
                    "interpreter + vagabond's imports": python_alone,
                },
            },
        ]
    finally:
        process.run([VAGABOND, "destroy", BOX], cwd=project, env=ENV)
        process.run([VAGABOND, "destroy", PREBUILT_BOX], cwd=project, env=ENV)
        forget_prebuilt()
        for server in servers:
            server.terminate()
    if figures:
        write_figures(args.json, "boot", figures)
    return 0 if all(verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
