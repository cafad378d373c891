"""Several `up`s at once on one host, as CI jobs and checkouts do: two boxes and the same box from a
second checkout, started together while the management network does not exist yet (vagrant-libvirt
races when two runs create it, or remove it, at the same moment)."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from tests.e2e.conftest import Vagabond
from tests.helpers import virsh

pytestmark = [pytest.mark.real, pytest.mark.slow]


def networks() -> list[str]:
    return virsh("net-list", "--all", "--name").split()


def test_three_ups_at_once_each_reach_their_own_vm_and_the_network_goes_with_the_last(vagabond, tmp_path):
    assert not virsh("list", "--name").split(), "this test wants the host to itself"
    if "vagrant-libvirt" in networks():
        virsh("net-destroy", "vagrant-libvirt")
        virsh("net-undefine", "vagrant-libvirt")
    second = tmp_path / "second-checkout"
    (second / "boxes").mkdir(parents=True)
    shutil.copy(vagabond.cwd / "boxes" / "debian12.yaml", second / "boxes")
    (vagabond.cwd / "boxes" / "debian12-twin.yaml").write_text(
        (vagabond.cwd / "boxes" / "debian12.yaml").read_text().replace("memory: 1024", "memory: 768")
    )
    other = Vagabond(second)
    runs = [(vagabond, "debian12"), (vagabond, "debian12-twin"), (other, "debian12")]
    try:
        procs = [
            subprocess.Popen(
                v.argv("up", box, "--no-provision"),
                cwd=v.cwd,
                env=v.env(),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            for v, box in runs
        ]
        outputs = [p.communicate(timeout=2400)[0] for p in procs]
        for (_, box), proc, out in zip(runs, procs, outputs, strict=True):
            print(out[-2000:])
            assert proc.returncode == 0, f"up {box} failed:\n{out[-3000:]}"
        # Each run reaches its own VM: its hostname's machine-id differs, and its domain is its own.
        seen = {}
        for v, box in runs:
            status = json.loads(v("status", box, "--json").stdout)
            seen[status["machines"][0]["domain"]] = v("run", box, "--", "cat", "/etc/machine-id").stdout.strip()
        assert len(seen) == 3 and len(set(seen.values())) == 3, seen
        # Destroying one leaves the others running, and the network they share.
        vagabond("destroy", "debian12-twin")
        for v, box in (runs[0], runs[2]):
            assert json.loads(v("status", box, "--json").stdout)["machines"][0]["state"] == "running"
            assert v("run", box, "--", "true").returncode == 0
        assert "vagrant-libvirt" in networks()
        other("destroy", "debian12")
        assert "vagrant-libvirt" in networks(), "the network still serves the first checkout's VM"
        vagabond("destroy", "debian12")
        assert "vagrant-libvirt" not in networks(), "the last destroy removes the network vagabond's run created"
    finally:
        for v, box in runs:
            v("destroy", box, check=False)
        (vagabond.cwd / "boxes" / "debian12-twin.yaml").unlink(missing_ok=True)
