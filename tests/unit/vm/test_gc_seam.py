"""vagabond gc's finding at the process seam (tests/fake_process.py): what libvirt and Vagrant
answer, and which objects it names as orphans, and why; everything else it leaves alone."""

from __future__ import annotations

from vagabond.host import ledger
from vagabond.vm import gc

POOL_HEADER = " Name   Path\n------------\n"


def world(processes, *, domains, volumes, networks="vagrant-libvirt\n", disks=None, store=""):
    processes.answer("virsh", "list", "--all", "--name", stdout="".join(f"{d}\n" for d in domains))
    processes.answer("virsh", "domstate", stdout="shut off\n")
    processes.answer("virsh", "vol-list", stdout=POOL_HEADER + "".join(f" {v}  /p/{v}\n" for v in volumes))
    processes.answer("virsh", "net-list", stdout=networks)
    processes.answer("virsh", "dumpxml", stdout="<domain/>")
    for domain, disk in (disks or {}).items():
        processes.answer(
            "virsh",
            "dumpxml",
            domain,
            stdout=f"<domain><source file='/p/{disk}'/><source network='vagrant-libvirt'/></domain>",
        )
    processes.answer("qemu-img", "info", stdout="[]")
    processes.answer("vagrant", "box", "list", stdout=store)


def test_a_gone_work_directorys_domain_and_volumes_are_orphans_and_nothing_else(processes, tmp_path, monkeypatch):
    monkeypatch.setenv("VAGABOND_STATE", str(tmp_path / "state"))
    monkeypatch.setenv("VAGABOND_CACHE", str(tmp_path / "cache"))
    ledger.add_workdir("vagabond-gone-11111111-", tmp_path / "gone")  # its directory never existed
    world(
        processes,
        domains=["vagabond-gone-11111111-default", "someone-elses-vm"],
        volumes=["vagabond-gone-11111111-default.img", "someone-elses.img"],
    )
    found = {(o.kind, o.name): o.reason for o in gc.find()}
    gone = f"its work directory {tmp_path / 'gone'} is gone"
    assert found == {
        ("domain", "vagabond-gone-11111111-default"): gone,
        ("volume", "vagabond-gone-11111111-default.img"): gone,
    }
    assert not processes.asked("virsh", "undefine") and not processes.asked("virsh", "vol-delete"), (
        "find removes nothing"
    )


def test_a_box_image_is_an_orphan_only_when_vagabond_uploaded_it_and_nothing_uses_it(processes, tmp_path, monkeypatch):
    monkeypatch.setenv("VAGABOND_STATE", str(tmp_path / "state"))
    monkeypatch.setenv("VAGABOND_CACHE", str(tmp_path / "cache"))
    ours, used, theirs = (f"org-VAGRANTSLASH-{b}_vagrant_box_image_1.0_box.img" for b in ("a", "b", "c"))
    ledger.add_volumes([ours, used])
    world(
        processes,
        domains=["a-vm-someone-runs"],
        volumes=[ours, used, theirs],
        disks={"a-vm-someone-runs": used},
    )
    found = {(o.kind, o.name) for o in gc.find()}
    assert found == {("box image", ours)}, "in use, or not uploaded by vagabond: left alone"


def test_a_recorded_network_is_an_orphan_only_when_no_domain_uses_it(processes, tmp_path, monkeypatch):
    monkeypatch.setenv("VAGABOND_STATE", str(tmp_path / "state"))
    monkeypatch.setenv("VAGABOND_CACHE", str(tmp_path / "cache"))
    ledger.add_networks(["vagrant-libvirt"])
    world(processes, domains=["a-vm"], volumes=[], disks={"a-vm": "a-vm.img"})
    assert gc.find() == [], "a domain is on it"
    processes.answer("virsh", "list", "--all", "--name", stdout="")
    assert [(o.kind, o.name) for o in gc.find()] == [("network", "vagrant-libvirt")]
