"""vagabond gc's finding at the process seam (tests/fake_process.py): what libvirt and Vagrant
answer, and which objects it names as orphans, and why; everything else it leaves alone."""

from __future__ import annotations

import json

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


GONE = "vagabond-gone-11111111-"


def a_world_with_orphans(processes, tmp_path, monkeypatch):
    monkeypatch.setenv("VAGABOND_STATE", str(tmp_path / "state"))
    monkeypatch.setenv("VAGABOND_CACHE", str(tmp_path / "cache"))
    ledger.add_workdir(GONE, tmp_path / "gone")
    ledger.add_networks(["vagabond-net"])
    world(
        processes,
        domains=[f"{GONE}default", "someone-elses-vm"],
        volumes=[f"{GONE}default.img", "someone-elses.img"],
        networks="vagrant-libvirt\nvagabond-net\n",
        disks={f"{GONE}default": f"{GONE}default.img", "someone-elses-vm": "someone-elses.img"},
    )
    processes.answer("virsh", "domstate", f"{GONE}default", stdout="running\n")
    processes.answer("virsh", "destroy")
    processes.answer("virsh", "net-destroy")


def test_collect_removes_the_orphans_and_the_ledger_forgets_them(processes, tmp_path, monkeypatch):
    a_world_with_orphans(processes, tmp_path, monkeypatch)

    def undefined(argv):  # libvirt no longer lists the domain nor its disk
        processes.answer("virsh", "list", "--all", "--name", stdout="someone-elses-vm\n")
        processes.answer("virsh", "vol-list", stdout=POOL_HEADER + " someone-elses.img  /p/someone-elses.img\n")

    processes.answer("virsh", "undefine", f"{GONE}default", "--nvram", effect=undefined)
    processes.answer("virsh", "vol-delete")
    processes.answer(
        "virsh", "net-undefine", effect=lambda argv: processes.answer("virsh", "net-list", stdout="vagrant-libvirt\n")
    )
    orphans = gc.collect()
    assert {(o.kind, o.name, o.removed) for o in orphans} == {
        ("domain", f"{GONE}default", True),
        ("volume", f"{GONE}default.img", True),
        ("network", "vagabond-net", True),
    }
    assert processes.asked("virsh", "destroy", f"{GONE}default"), "a running orphan is stopped first"
    assert [argv[-1] for argv in processes.asked("virsh", "vol-delete")] == [f"{GONE}default.img"]
    touched = " ".join(
        " ".join(a) for a in processes.calls if any(w in a for w in ("undefine", "vol-delete", "destroy"))
    )
    assert "someone-elses" not in touched
    record = ledger.read()
    assert record["workdirs"] == {} and record["networks"] == []


def test_what_libvirt_refuses_to_remove_is_said_and_stays_in_the_ledger(processes, tmp_path, monkeypatch, capsys):
    a_world_with_orphans(processes, tmp_path, monkeypatch)
    processes.fail("virsh", "undefine", stderr="error: Requested operation is not valid")
    processes.fail("virsh", "vol-delete", stderr="error: volume in use")
    processes.fail("virsh", "net-undefine", stderr="error: network is busy")
    orphans = gc.collect()
    assert not any(o.removed for o in orphans) and len(orphans) == 3
    err = " ".join(capsys.readouterr().err.split())
    assert f"could not remove domain {GONE}default" in err and "could not remove network vagabond-net" in err
    record = ledger.read()
    assert GONE in record["workdirs"] and record["networks"] == ["vagabond-net"], (
        "nothing forgotten that is still there"
    )


def test_a_dry_run_names_the_orphans_and_removes_nothing(processes, tmp_path, monkeypatch):
    a_world_with_orphans(processes, tmp_path, monkeypatch)
    assert len(gc.collect(dry_run=True)) == 3
    assert not [a for a in processes.calls if {"undefine", "vol-delete", "destroy", "net-destroy"} & set(a)]
    assert GONE in ledger.read()["workdirs"]


def test_a_work_directory_that_holds_no_vm_or_another_one_no_longer_owns_the_prefix(tmp_path):
    wd = tmp_path / "project" / ".vagabond" / "box"
    wd.mkdir(parents=True)
    assert gc._workdir_verdict(GONE, wd) == f"its work directory {wd} holds no VM (destroyed)"
    (wd / "state.json").write_text(json.dumps({"prefix": "vagabond-box-22222222-"}))
    assert gc._workdir_verdict(GONE, wd) == f"its work directory {wd} now holds another VM"
    (wd / "state.json").write_text(json.dumps({"prefix": GONE}))
    assert gc._workdir_verdict(GONE, wd) is None
