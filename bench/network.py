"""The management network vagabond defines against the one vagrant-libvirt defines, side by side
in one run on this host (as root; it starts the sandbox when the host has no service manager):

  .venv/bin/python bench/network.py [--rounds 3] [--json FILE]

Each round, on each side alone: no domain and no management network at the start, then
`vagabond up debian12 --no-provision` until `vagabond run debian12 -- true` answers.
- vagabond's network: vagabond defines it (dnsmasq offers a new lease without pinging the address
  first, the bridge has no spanning tree);
- vagrant-libvirt's network: defined first by this script from vagrant-libvirt's own template with
  its defaults (stp on, dnsmasq pings before each new lease), which vagabond then uses as it is.
The sides alternate in order; the line gives the ratio of the medians and each side's spread
(target: the change is kept only when it is faster, ratio < 1).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from common import ENV, VAGABOND, alternate, ensure_sandbox, report, write_figures

from vagabond import process
from vagabond.host import libvirt

BOX = "debian12"
# vagrant-libvirt 0.12's templates/private_network.xml.erb with the management network's defaults
# (name vagrant-libvirt, 192.168.121.0/24, NAT, DHCP from .1 to .254, stp on, delay 0, IPv6 on).
VAGRANT_LIBVIRTS = f"""<network ipv6='yes'>
  <name>{libvirt.MGMT_NETWORK}</name>
  <bridge stp='on' delay='0'/>
  <forward mode='nat'/>
  <ip address='192.168.121.1' netmask='255.255.255.0'>
    <dhcp>
      <range start='192.168.121.1' end='192.168.121.254'/>
    </dhcp>
  </ip>
</network>
"""


def no_network() -> None:
    if libvirt.MGMT_NETWORK in libvirt.networks():
        assert not libvirt.network_in_use(libvirt.MGMT_NETWORK), "a domain is on the management network"
        libvirt.remove_network(libvirt.MGMT_NETWORK)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="rounds per side (default: 3)")
    parser.add_argument("--json", type=Path, help="also write every figure here")
    args = parser.parse_args()
    ensure_sandbox()
    project = Path(tempfile.mkdtemp(prefix="vagabond-bench-network-"))
    (project / "boxes").mkdir()
    ours, theirs = [], []

    def up(define_theirs: bool) -> float:
        no_network()
        if define_theirs:
            libvirt.ensure_network(libvirt.MGMT_NETWORK, VAGRANT_LIBVIRTS)
        started = time.monotonic()
        process.check([VAGABOND, "up", BOX, "--no-provision"], cwd=project, env=ENV, timeout=3600)
        process.check([VAGABOND, "run", BOX, "--", "true"], cwd=project, env=ENV)
        took = time.monotonic() - started
        xml = libvirt.network_xml(libvirt.MGMT_NETWORK)
        assert ("no-ping" in xml) is not define_theirs, f"the wrong network was used:\n{xml}"
        process.check([VAGABOND, "destroy", BOX], cwd=project, env=ENV)
        no_network()
        return took

    try:
        # Not measured: the base box built, added and uploaded into the pool.
        process.check([VAGABOND, "up", BOX, "--no-provision"], cwd=project, env=ENV, timeout=3600)
        process.check([VAGABOND, "destroy", BOX], cwd=project, env=ENV)
        alternate(
            args.rounds,
            [(lambda: up(False), ours, "vagabond's network"), (lambda: up(True), theirs, "vagrant-libvirt's network")],
        )
        ok = report(
            "up + run on vagabond's network / on vagrant-libvirt's",
            ours,
            theirs,
            1.0,
            labels=("vagabond's network", "vagrant-libvirt's network"),
        )
        print(f"  median saved per boot: {statistics.median(theirs) - statistics.median(ours):.1f}s", flush=True)
        write_figures(
            args.json,
            "network",
            [
                {
                    "title": "Ready: vagabond up --no-provision + run, by the network it boots on",
                    "unit": "s",
                    "series": {"vagabond's network": ours, "vagrant-libvirt's network": theirs},
                }
            ],
        )
        return 0 if ok else 1
    finally:
        process.run([VAGABOND, "destroy", BOX], cwd=project, env=ENV)


if __name__ == "__main__":
    raise SystemExit(main())
