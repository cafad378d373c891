"""Warm images without a VM: the key and the one line `up` says when it boots cold, the description
read back only when every name in it is this work directory's own, the address a restored guest
gets written into its SSH configuration. (tests/e2e/test_lifecycle.py saves and restores a real VM.)"""

from __future__ import annotations

import copy
import json
import re
import time
from types import SimpleNamespace

import pytest

from tests.conftest import write_box
from tests.helpers import pool_as_files
from vagabond import files
from vagabond.bases import guest
from vagabond.definition import boxfile
from vagabond.errors import CommandFailed, UnsafePath
from vagabond.host import libvirt
from vagabond.host.detect import Decision
from vagabond.vm import lifecycle, resume, warm, warmimage
from vagabond.vm.lifecycle import UpOptions, UpRun
from vagabond.vm.workdir import Workdir

KEY = {
    "format": 1,
    "definition": "d" * 64,
    "provisioning": {"extra_vars": warmimage.extra_vars_digest(()), "sync": None, "provision": True},
    "driver": "kvm",
    "arch": "x86_64",
    "qemu": "QEMU 7.2.0",
    "cpu": "host-passthrough (Some CPU)",
    "memory": {"default": 1024},
    "domains": ["vagabond-b-01234567-default"],
}


def test_the_key_names_the_part_that_differs():
    assert warmimage.difference(KEY, copy.deepcopy(KEY)) is None
    assert warmimage.difference(KEY, KEY | {"driver": "qemu"}) == "the driver differs (saved kvm, now qemu)"
    assert warmimage.difference(KEY, KEY | {"qemu": "QEMU 9.2.0"}) == (
        "the QEMU version differs (saved QEMU 7.2.0, now QEMU 9.2.0)"
    )
    changed = warmimage.difference(KEY, KEY | {"definition": "e" * 64})
    assert changed == "the box definition (its playbooks or settings changed) differs"
    given = {"extra_vars": warmimage.extra_vars_digest(["x=1"]), "sync": None, "provision": True}
    extra = KEY | {"provisioning": given}
    assert warmimage.difference(KEY, extra) == "how it was provisioned (-e, --sync, --no-provision) differs"


@pytest.fixture
def box_wd(project, tmp_path, monkeypatch):
    monkeypatch.setenv("VAGABOND_CACHE", str(tmp_path / "cache"))
    write_box(project, "b", "description: x\nbase: {box: org/base}\n")
    box = boxfile.find_box("b", project / "boxes")
    return box, Workdir.for_box(box)


def description(wd: Workdir) -> dict:
    return {
        "key": KEY,
        "saved_at": 1.0,
        "box": "b",
        "machines": [
            {
                "name": "default",
                "domain": wd.domain("default"),
                "uuid": "0b0e5e5e-1111-4222-8333-444455556666",
                "memory_image": "default.20261206.save",
                "disk": str(libvirt.POOL_DIR / f"{wd.prefix}default.img"),
                "frozen": [warmimage.frozen_prefix(wd) + "default-20261206.qcow2"],
                "interfaces": [{"mac": "52:54:00:12:34:56", "network": "vagrant-libvirt"}],
                "agent": False,
            }
        ],
    }


@pytest.mark.parametrize(
    "field, value",
    [
        ("disk", "/etc/shadow"),
        ("disk", str(libvirt.POOL_DIR / "someone-elses.img")),
        ("disk", str(libvirt.POOL_DIR / "sub" / "vagabond-b-x-default.img")),
        ("domain", "another-domain"),
        ("memory_image", "../../../root/.ssh/authorized_keys"),
        ("memory_image", ".hidden"),
        ("frozen", ["theirs.qcow2"]),
        ("frozen", ["vagabond-warm-b-99999999-default-20261206.qcow2"]),
        ("frozen", ["vagabond-warm-x/../../etc/passwd"]),
        ("frozen", []),
        ("name", "other"),
        ("interfaces", [{"mac": 1}]),
    ],
)
def test_a_description_naming_what_is_not_this_work_directorys_own_is_not_used(box_wd, field, value):
    box, wd = box_wd
    path = warmimage.image_dir(wd) / warmimage.META
    files.make_dirs(path.parent)
    meta = description(wd)
    files.write_json(path, meta)
    assert warmimage.load(wd) == meta  # as save writes it
    meta["machines"][0][field] = value
    files.write_json(path, meta)
    assert warmimage.load(wd) is None


def test_a_description_that_is_a_link_is_refused_and_one_that_is_not_json_not_used(box_wd, tmp_path):
    box, wd = box_wd
    path = warmimage.image_dir(wd) / warmimage.META
    files.make_dirs(path.parent)
    elsewhere = tmp_path / "elsewhere.json"
    elsewhere.write_text(json.dumps(description(wd)))
    path.symlink_to(elsewhere)
    with pytest.raises(UnsafePath, match="symbolic link"):
        warmimage.load(wd)
    path.unlink()
    path.write_text("{not json")
    assert warmimage.load(wd) is None


def test_the_restored_guests_address_goes_into_its_own_host_entry_only():
    config = "Host default\n  HostName 192.168.121.7\n  User vagrant\nHost db\n  HostName 192.168.121.8\n"
    got = resume._with_address(config, "default", "192.168.121.99")
    assert "  HostName 192.168.121.99\n  User vagrant\nHost db\n  HostName 192.168.121.8\n" in got


@pytest.fixture
def saved(box_wd, monkeypatch):
    box, wd = box_wd
    path = warmimage.image_dir(wd) / warmimage.META
    files.make_dirs(path.parent)
    files.write_json(path, description(wd))
    # What this host would say now: the same key but for what a test changes.
    monkeypatch.setattr(warmimage, "key_for", lambda box, wd, driver, **k: copy.deepcopy(KEY) | {"driver": driver})
    return box, wd


@pytest.mark.parametrize(
    "opts, decision, said",
    [
        ({}, "qemu", "the driver differs (saved kvm, now qemu)"),
        ({"warm": False}, "kvm", "--cold"),
        ({"prebuilt": False}, "kvm", "--fresh asks for the base box"),
        ({}, "kvm", "its memory image default.20261206.save is gone"),
    ],
)
def test_up_boots_cold_and_says_why_in_one_line(saved, capsys, opts, decision, said):
    box, wd = saved
    run = UpRun(box, wd, UpOptions(**opts), Decision(decision, "test"), None)
    assert lifecycle.warm_image(run) is None
    err = capsys.readouterr().err
    assert f"booting cold, not from the warm image saved here: {said}" in " ".join(err.split())


def test_up_takes_a_warm_image_whose_key_and_files_match(saved, monkeypatch, capsys):
    box, wd = saved
    monkeypatch.setattr(warmimage, "missing_parts", lambda wd, meta: None)
    run = UpRun(box, wd, UpOptions(), Decision("kvm", "test"), None)
    assert lifecycle.warm_image(run)["key"] == KEY
    assert "booting cold" not in capsys.readouterr().err


def test_up_says_nothing_of_warm_images_when_there_is_none(box_wd, capsys):
    box, wd = box_wd
    run = UpRun(box, wd, UpOptions(), Decision("qemu", "test"), None)
    assert lifecycle.warm_image(run) is None
    assert "warm" not in capsys.readouterr().err


def test_a_restore_that_fails_removes_what_it_made_says_why_and_up_boots_cold(saved, monkeypatch, capsys):
    box, wd = saved
    removed = []

    def fails(box, wd, meta):
        wd.write_state(provisioned=True)  # as far as a restore gets before the guest does not answer
        raise warm.WarmError("the guest does not answer over SSH after its restore")

    monkeypatch.setattr(warm, "restore", fails)
    monkeypatch.setattr(lifecycle, "remove_vm", lambda wd: removed.append(wd.prefix) or [])
    run = UpRun(box, wd, UpOptions(), Decision("kvm", "test"), None)
    assert lifecycle.restore_warm(run, description(wd)) is False
    assert removed == [wd.prefix] and wd.read_state() == {}, "nothing of the attempt stays for the cold boot"
    said = " ".join(capsys.readouterr().err.split())
    assert "the warm image did not restore (the guest does not answer over SSH after its restore); booting cold" in said


@pytest.mark.parametrize(
    "field, value",
    [
        ("ssh", "Host default\n  HostName 192.168.121.7\n  ProxyCommand sh -c 'touch /tmp/owned'\n"),
        ("networks", {"default": "<network/>"}),  # a network no interface of the VM uses
        ("networks", ["vagrant-libvirt"]),
        ("vagrant", {"default": {"id": 1}}),
        ("state", "provisioned"),
    ],
)
def test_a_description_with_a_hostile_part_is_not_used(box_wd, field, value):
    box, wd = box_wd
    path = warmimage.image_dir(wd) / warmimage.META
    files.make_dirs(path.parent)
    files.write_json(path, description(wd) | {field: value})
    assert warmimage.load(wd) is None


def test_gc_drops_the_warm_image_of_a_work_directory_that_is_gone_and_keeps_the_others(box_wd, tmp_path, monkeypatch):
    box, wd = box_wd
    pool = pool_as_files(monkeypatch, tmp_path / "pool")
    monkeypatch.setattr(libvirt, "volumes_in_use", lambda names=None: set())
    monkeypatch.setenv("VAGABOND_STATE", str(tmp_path / "state"))
    kept_dir = tmp_path / "kept"
    kept_dir.mkdir()
    for name, workdir in (("gone", tmp_path / "gone"), ("kept", kept_dir)):
        meta = description(wd) | {"workdir": str(workdir)}
        meta["machines"][0]["frozen"] = [f"vagabond-warm-{name}-default.qcow2"]
        meta["machines"][0]["disk"] = str(pool / f"{wd.prefix}default.img")
        (pool / f"vagabond-warm-{name}-default.qcow2").write_bytes(b"layer")
        files.make_dirs(tmp_path / "cache" / "warm" / name)
        files.write_json(tmp_path / "cache" / "warm" / name / warmimage.META, meta)
    removed = warmimage.drop_orphaned()
    assert removed == ["disk layer vagabond-warm-gone-default.qcow2", f"warm image {tmp_path / 'cache/warm/gone'}"]
    assert sorted(p.name for p in pool.iterdir()) == ["vagabond-warm-kept-default.qcow2"]
    assert (tmp_path / "cache" / "warm" / "kept").is_dir()


@pytest.fixture
def resume_world(box_wd, monkeypatch):
    """after_resume against a recorded libvirt, guest agent and guest: what it asked of each, in
    order. world["agent"]: None (no agent at the save), or what the agent's script does now: "ok",
    "fails" (exit 1), "refuses" (guest-exec not taken), "hangs" (does not end)."""
    box, wd = box_wd
    calls: list[tuple] = []
    world = {"leases": {}, "ours": ["vagrant-libvirt"], "networkd": True, "agent": None, "others": [], "holds": None}
    monkeypatch.setattr(warm.remote, "write_ssh_config", lambda wd, config: calls.append(("ssh_config",)))
    monkeypatch.setattr(warm.remote, "addresses", lambda wd: {"default": "192.168.121.7"})
    monkeypatch.setattr(warm.remote, "close_master", lambda wd, machine: calls.append(("close_master", machine)))
    monkeypatch.setattr(libvirt, "announce", lambda net, address, mac: calls.append(("announce", net, address)))
    monkeypatch.setattr(libvirt, "forward_at_once", lambda net: calls.append(("forward_at_once", net)))
    # world["leases"]: the NIC's own, by MAC address; world["others"]: more (MAC, address) lines
    monkeypatch.setattr(libvirt, "leases", lambda net: [*world["leases"].items(), *world["others"]])

    def set_link(domain, mac, up):
        calls.append(("set_link", mac, up))
        if up:  # the guest asks afresh and the network's DHCP server leases it its address
            world["leases"][mac] = "192.168.121.7"

    monkeypatch.setattr(libvirt, "set_link", set_link)

    def virsh(*args, timeout):
        assert args[0] == "domifaddr" and args[2:] == ("--source", "agent"), args
        calls.append(("guest's addresses",))
        holds = world["holds"] or world["leases"].get(LEASE, "none")
        return SimpleNamespace(ok=True, stdout=f" vnet0  52:54:00:12:34:56  ipv4  {holds}/24\n")

    monkeypatch.setattr(libvirt, "run", virsh)
    renewed = lambda: "renewed\n" if world["networkd"] else "\n"  # noqa: E731

    def ssh(wd, m, command, input=None):
        calls.append(("ssh", " ".join(command)[:20]))
        if "urandom" in " ".join(command):  # the randomness goes over SSH, never in an argument
            assert re.fullmatch(r"[0-9a-f]{512}", input or "")
        return SimpleNamespace(stdout=renewed() if "RenewLink" in " ".join(command) else "")

    def start(domain, path, args, input=""):
        script = {resume.AGENT_CLOCK: "clock"}[args[1]]
        calls.append(("agent start", script))
        assert path == "/bin/sh" and args[0] == "-c"
        if script == "clock":
            assert re.fullmatch(r"\d+\.\d{3}\n", input), "the host's time, and no secret: virsh's arguments carry it"
            assert abs(float(input) - time.time()) < 1, "the time as the agent starts the script"
        if world["agent"] == "refuses":
            raise warm.WarmError("the agent did not run /bin/sh")
        return 41

    def wait(domain, pid, path, timeout):
        calls.append(("agent wait", pid))
        assert timeout <= 5, "date takes a fraction of a second: not the agent's 30 s"
        if world["agent"] == "hangs":
            raise warm.WarmError(f"{path} did not end within {timeout}s")
        if world["agent"] != "ok":
            return 1, "", "date: cannot set date"
        return 0, "", ""

    monkeypatch.setattr(resume, "_ssh", ssh)
    monkeypatch.setattr(resume.guestagent, "start", start)
    monkeypatch.setattr(resume.guestagent, "wait", wait)
    monkeypatch.setattr(warm.ledger, "read", lambda: {"networks": list(world["ours"])})
    return wd, calls, world


def meta_of(wd, world) -> dict:
    meta = description(wd)
    meta["machines"][0]["agent"] = world["agent"] is not None
    return meta


RESEED = ("ssh", "sh -c cat > /dev/ura")
CLOCK = ("ssh", "sudo -n date -u -s @")
RESUME_OVER_SSH = [("ssh", "sudo -n sh -c cat > "), CLOCK]
LEASE = "52:54:00:12:34:56"


def kinds(calls) -> list[str]:
    return [c[0] if c[0] not in ("ssh", "agent start", "agent wait") else f"{c[0]} {c[1]}" for c in calls]


def test_a_resumed_guest_whose_lease_the_network_knows_keeps_its_link(resume_world):
    wd, calls, world = resume_world
    world["leases"][LEASE] = "192.168.121.7"
    resume.after_resume(wd, meta_of(wd, world))
    assert calls == [("ssh_config",), ("announce", "vagrant-libvirt", "192.168.121.7"), *RESUME_OVER_SSH]


def test_a_resumed_guest_on_a_network_made_anew_gets_its_link_taken_down_and_up_first(resume_world):
    """The network's DHCP server decides which address the guest has before SSH goes anywhere (two
    guests restored from one image would otherwise both answer at the saved address); the host's
    neighbour entry is not pointed at an address the guest may not keep."""
    wd, calls, world = resume_world
    resume.after_resume(wd, meta_of(wd, world))
    assert [c[0] for c in calls] == ["ssh_config", "set_link", "set_link", "ssh", "ssh"]
    assert [c[2] for c in calls if c[0] == "set_link"] == [False, True]
    assert calls[-2:] == RESUME_OVER_SSH


def test_a_resumed_guest_without_networkd_gets_its_link_taken_down_and_up_lease_or_not(resume_world):
    """Its DHCP client's timers stood still while it was saved; the server's did not."""
    wd, calls, world = resume_world
    world["networkd"] = False
    world["leases"][LEASE] = "192.168.121.7"
    resume.after_resume(wd, meta_of(wd, world))
    assert [c[0] for c in calls] == ["ssh_config", "announce", "ssh", "ssh", "set_link", "set_link"]


@pytest.mark.parametrize("networkd", [True, False])
def test_with_an_agent_the_clock_is_set_as_ssh_opens_and_a_known_lease_renewed_over_it(resume_world, networkd):
    """The renewal goes over SSH with sudo, as an unconfined caller under SELinux."""
    wd, calls, world = resume_world
    world["agent"], world["networkd"] = "ok", networkd
    world["leases"][LEASE] = "192.168.121.7"
    resume.after_resume(wd, meta_of(wd, world))
    links = ["set_link", "set_link", "guest's addresses"] if not networkd else []
    assert kinds(calls) == [
        "ssh_config",
        "agent start clock",
        "announce",
        "ssh sudo -n sh -c cat > ",
        "agent wait 41",
        *links,
    ]


def test_on_a_network_made_anew_the_agent_sets_the_clock_while_the_link_and_ssh_come_back(resume_world):
    """A lease just granted needs no renewal: the first connection runs no sudo. SSH waits until
    the guest holds the address (its agent says so): a connection sent before is lost for a second."""
    wd, calls, world = resume_world
    world["agent"] = "ok"
    resume.after_resume(wd, meta_of(wd, world))
    assert kinds(calls) == [
        "ssh_config",
        "agent start clock",
        "set_link",
        "set_link",
        "guest's addresses",
        "ssh sh -c cat > /dev/ura",
        "agent wait 41",
    ]


@pytest.mark.parametrize("agent", ["fails", "refuses", "hangs"])
@pytest.mark.parametrize("leased", [True, False])
def test_what_a_failing_agent_did_not_do_the_ssh_connection_does(resume_world, agent, leased):
    wd, calls, world = resume_world
    world["agent"] = agent
    if leased:
        world["leases"][LEASE] = "192.168.121.7"
    resume.after_resume(wd, meta_of(wd, world))
    over_ssh = [c for c in calls if c[0] == "ssh"]
    if agent == "refuses":  # it runs nothing: all of it over SSH, as for a guest without one
        assert over_ssh == RESUME_OVER_SSH
    else:  # the first connection as it would be, then the time over it
        assert over_ssh == [RESUME_OVER_SSH[0] if leased else RESEED, CLOCK]
    assert bool([c for c in calls if c[0] == "set_link"]) != leased, "renewed over SSH: no link down"


def test_a_guest_without_network_cards_is_resumed_over_ssh_or_its_agent(resume_world):
    wd, calls, world = resume_world
    meta = meta_of(wd, world)
    meta["machines"][0]["interfaces"] = []
    resume.after_resume(wd, meta)
    assert calls == [("ssh_config",), *RESUME_OVER_SSH]
    calls.clear()
    world["agent"] = "ok"
    resume.after_resume(wd, meta | {"machines": [meta["machines"][0] | {"agent": True}]})
    assert kinds(calls) == ["ssh_config", "agent start clock", "ssh sh -c cat > /dev/ura", "agent wait 41"]


def test_a_resumed_guest_that_gets_no_address_is_one_line_with_what_to_do(resume_world, monkeypatch):
    wd, calls, world = resume_world
    monkeypatch.setattr(warm.timeouts, "LEASE", 0.2)
    monkeypatch.setattr(libvirt, "set_link", lambda domain, mac, up: calls.append(("set_link", mac, up)))
    with pytest.raises(warm.WarmError, match=r"got no address from network vagrant-libvirt within 0s") as exc:
        resume.after_resume(wd, description(wd))
    assert exc.value.hint == "vagabond destroy b && vagabond up b --cold"


@pytest.mark.parametrize("ours", [True, False])
def test_only_a_network_vagabond_made_gets_its_ports_forwarding_at_once(resume_world, ours):
    wd, calls, world = resume_world
    world["ours"] = ["vagrant-libvirt"] if ours else []
    resume.ports_forward_at_once(description(wd) | {"networks": {"vagrant-libvirt": "<network/>"}})
    assert calls == ([("forward_at_once", "vagrant-libvirt")] if ours else [])


def test_the_resume_script_asks_networkd_without_awaiting_its_reply():
    """networkctl renew waits for a reply SELinux may deny (Debian's policy does): 5 s lost a restore.
    busctl runs on in the background instead (test_resume_scripts)."""
    assert "nohup busctl call" in resume.RESUME_SCRIPT and "networkctl renew" not in resume.RESUME_SCRIPT
    assert resume.RESUME_SCRIPT.startswith("cat > /dev/urandom && ")


def test_destroy_takes_the_layers_of_a_dropped_warm_image_that_nothing_needs_now(box_wd, monkeypatch):
    """save --drop while the VM runs keeps its layer (the VM's disk stands on it); destroy then
    takes it, and only it: not a layer a warm image or a domain needs, not one the record lacks."""
    box, wd = box_wd
    prefix = warmimage.frozen_prefix(wd)
    free, needed, used, unrecorded = (f"{prefix}default-{n}.qcow2" for n in ("1", "2", "3", "4"))
    removed, forgotten = [], []
    monkeypatch.setattr(libvirt, "volumes", lambda p="", pool=libvirt.POOL: [free, needed, used, unrecorded])
    monkeypatch.setattr(libvirt, "volumes_in_use", lambda names=None: {used})
    monkeypatch.setattr(libvirt, "refresh_pool", lambda pool=libvirt.POOL: None)
    monkeypatch.setattr(warmimage, "layers_in_use", lambda: {needed})
    monkeypatch.setattr(warmimage.ledger, "read", lambda: {"warm": [free, needed, used]})
    monkeypatch.setattr(warmimage.ledger, "forget", lambda warm: forgotten.extend(warm))
    monkeypatch.setattr(libvirt, "delete_volume", lambda name, pool=libvirt.POOL: removed.append(name) or True)
    assert warmimage.drop_unneeded_layers(wd) == [f"disk layer {free}"]
    assert removed == [free] and forgotten == [free]


def test_the_bridge_forwards_at_once_only_when_root_can_set_it(processes, monkeypatch):
    processes.answer("virsh", "net-dumpxml", stdout="<network><bridge name='virbr7' stp='on' delay='0'/></network>")
    processes.answer("ip", "link", "set")
    monkeypatch.setattr(libvirt.os, "geteuid", lambda: 1000)
    libvirt.forward_at_once("vagrant-libvirt")
    assert processes.calls == [], "as a user: nothing asked (it would fail), and said in the debug log"
    monkeypatch.setattr(libvirt.os, "geteuid", lambda: 0)
    libvirt.forward_at_once("vagrant-libvirt")
    assert processes.asked("ip", "link", "set")[-1][-6:] == ["dev", "virbr7", "type", "bridge", "stp_state", "0"]


@pytest.fixture
def restoring(box_wd, monkeypatch):
    """restore_machine against a recorded libvirt and guest agent."""
    box, wd = box_wd
    calls: list[tuple] = []
    world = {"answers": True, "rekey": (0, "")}
    monkeypatch.setattr(libvirt, "restore", lambda image, paused=False: calls.append(("restore", paused)))
    monkeypatch.setattr(libvirt, "set_link", lambda domain, mac, up: calls.append(("set_link", up)))
    monkeypatch.setattr(libvirt, "check", lambda *args, **kw: calls.append(("virsh", *args)))
    monkeypatch.setattr(resume.guestagent, "answers", lambda domain, within: world["answers"])

    def agent_run(domain, path, args, input=""):
        calls.append(("agent", path, args, input))
        return world["rekey"]

    monkeypatch.setattr(resume.guestagent, "run", agent_run)
    machine = warmimage.Machine(**description(wd)["machines"][0] | {"agent": True})
    return wd, machine, calls, world


KEY_LINE = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAFlxNGIXNWVE3iiQVv3 vagabond"


def test_a_restored_guest_with_an_agent_takes_its_new_key_while_its_network_is_unplugged(restoring):
    wd, machine, calls, world = restoring
    resume.restore_machine(wd, machine, wd.path / "x.save", KEY_LINE)
    assert calls == [
        ("restore", True),
        ("set_link", False),
        ("virsh", "resume", machine.domain),
        ("agent", guest.AUTHORIZED_KEY_SCRIPT_PATH, ["rekey", "--host-keys"], KEY_LINE + "\n"),
        ("set_link", True),
    ]


def test_a_guest_saved_without_an_agent_is_restored_as_it_was(restoring):
    wd, machine, calls, world = restoring
    resume.restore_machine(wd, machine, wd.path / "x.save", None)
    assert calls == [("restore", False)]


@pytest.mark.parametrize(
    "answers, rekey, said",
    [
        (False, (0, ""), "guest agent does not answer after its restore: it cannot get its new SSH key"),
        (
            True,
            (2, "not one OpenSSH\npublic key line\n"),
            "did not take its new SSH key: not one OpenSSH public key line",
        ),
        (True, (1, ""), "did not take its new SSH key: exit 1"),
    ],
)
def test_a_guest_that_does_not_take_its_new_key_stays_off_the_network_and_says_why(restoring, answers, rekey, said):
    wd, machine, calls, world = restoring
    world["answers"], world["rekey"] = answers, rekey
    with pytest.raises(warm.WarmError, match=said) as exc:
        resume.restore_machine(wd, machine, wd.path / "x.save", KEY_LINE)
    assert ("set_link", True) not in calls, "its network cards stay unplugged"
    assert exc.value.hint == "vagabond destroy b && vagabond up b --cold"


def test_an_image_from_elsewhere_gets_a_new_key_each_restore_and_one_saved_here_comes_back_with_its_own(box_wd):
    box, wd = box_wd
    files.make_dirs(wd.path)
    meta = description(wd)
    with pytest.raises(warm.WarmError, match="holds no SSH key and its VM cannot take a new one"):
        resume.new_key(wd, meta)
    meta["machines"][0]["agent"] = True
    first = resume.new_key(wd, meta)
    second = resume.new_key(wd, meta)
    assert first.startswith("ssh-ed25519 ") and second != first
    assert wd.ssh_key.with_name("ssh_key.pub").read_text().strip() == second
    files.make_dirs(warmimage.image_dir(wd))
    (warmimage.image_dir(wd) / "ssh_key").write_text("SAVED PRIVATE\n")
    (warmimage.image_dir(wd) / "ssh_key.pub").write_text("SAVED PUBLIC\n")
    assert resume.new_key(wd, meta) is None, "saved here: no new key needed"
    assert wd.ssh_key.read_text() == "SAVED PRIVATE\n" and (wd.ssh_key.stat().st_mode & 0o777) == 0o600


def test_the_mark_save_looks_for_is_in_the_key_script_every_box_gets():
    assert resume.REKEY_MARK in guest.AUTHORIZED_KEY_SCRIPT


@pytest.mark.parametrize(
    "connected, grep, rekey, expected",
    [
        (True, (0, ""), (0, ""), True),
        (False, (0, ""), (0, ""), False),  # no agent in the guest: not even asked
        (True, (1, ""), (0, ""), False),  # a key script from before rekey (it ignores the word and exits 0)
        (True, (0, ""), (1, "authorized_keys does not hold the key"), False),  # a confined agent cannot write
        (True, warm.WarmError("the agent did not run /bin/grep"), (0, ""), False),  # RHEL's agent forbids guest-exec
        (True, CommandFailed(["virsh"], -9, "", "timed out"), (0, ""), False),  # virsh did not answer
    ],
)
def test_a_guest_can_take_a_new_key_only_when_its_key_script_takes_the_one_it_has_now(
    monkeypatch, connected, grep, rekey, expected
):
    asked = []
    monkeypatch.setattr(resume.guestagent, "connected", lambda domain: connected)
    monkeypatch.setattr(resume.guestagent, "answers", lambda domain, within: True)

    def run(domain, path, args, input="", timeout=None):
        assert timeout == warm.timeouts.AGENT
        asked.append((path, args, input))
        answer = grep if path == "/bin/grep" else rekey
        if isinstance(answer, Exception):
            raise answer
        return answer

    monkeypatch.setattr(resume.guestagent, "run", run)
    assert resume.can_rekey("vagabond-b-1-default", KEY_LINE) is expected
    if expected:
        assert asked[-1] == (guest.AUTHORIZED_KEY_SCRIPT_PATH, ["rekey"], KEY_LINE + "\n"), (
            "its own key, unchanged, and its host keys left (a probe)"
        )
    if not connected:
        assert asked == []


@pytest.fixture
def resetting(saved, monkeypatch):
    """reset against a recorded libvirt: the VM of the saved description runs here."""
    box, wd = saved
    meta = description(wd)
    calls: list[tuple] = []
    monkeypatch.setattr(warm, "missing_parts", lambda wd, meta: None)
    monkeypatch.setattr(libvirt, "domains", lambda prefix: {meta["machines"][0]["domain"]: "running"})
    monkeypatch.setattr(libvirt, "domain_uuid", lambda domain: meta["machines"][0]["uuid"])
    monkeypatch.setattr(libvirt, "stop", lambda domain: calls.append(("stop", domain)))
    monkeypatch.setattr(warm, "_new_overlay", lambda disk, frozen: calls.append(("overlay",)))
    monkeypatch.setattr(resume, "ports_forward_at_once", lambda meta: None)
    monkeypatch.setattr(resume, "after_resume", lambda wd, meta: calls.append(("after_resume",)))
    monkeypatch.setattr(warm.remote, "close_master", lambda wd, machine: None)
    files.make_dirs(wd.path)
    return box, wd, calls


def test_a_reset_to_an_image_saved_here_keeps_its_key_and_one_taken_in_gives_a_new_one_each_time(
    resetting, monkeypatch
):
    box, wd, calls = resetting
    keys = []
    monkeypatch.setattr(resume, "restore_machine", lambda wd, m, image, key: keys.append(key))
    image = warmimage.image_dir(wd)
    (image / "ssh_key").write_text("SAVED\n")
    (image / "ssh_key.pub").write_text(KEY_LINE + "\n")
    warm.reset(box, wd)
    assert keys == [None] and wd.ssh_key.read_text() == "SAVED\n"
    # Taken in: no key in the image, a guest that takes one.
    (image / "ssh_key").unlink()
    (image / "ssh_key.pub").unlink()
    meta = description(wd)
    meta["machines"][0]["agent"] = True
    files.write_json(image / warmimage.META, meta)
    warm.reset(box, wd)
    warm.reset(box, wd)
    assert keys[1].startswith("ssh-ed25519 ") and keys[2].startswith("ssh-ed25519 ") and keys[1] != keys[2]
    assert wd.ssh_key.with_name("ssh_key.pub").read_text().strip() == keys[2]


def test_a_reset_that_fails_leaves_no_machine_running(resetting, monkeypatch):
    box, wd, calls = resetting
    image = warmimage.image_dir(wd)
    meta = description(wd)
    meta["machines"][0]["agent"] = True
    files.write_json(image / warmimage.META, meta)

    def fails(wd, m, image, key):
        calls.append(("restore_machine",))
        raise warm.WarmError("did not take its new SSH key: exit 1")

    monkeypatch.setattr(resume, "restore_machine", fails)
    monkeypatch.setattr(libvirt, "remove_domain", lambda domain: calls.append(("remove_domain", domain)) or [])
    with pytest.raises(warm.WarmError, match="did not take its new SSH key"):
        warm.reset(box, wd)
    domain = meta["machines"][0]["domain"]
    # Taking a new key: the machine goes whole (cold-booted, its SMBIOS string would name the exporter's key).
    assert calls == [("stop", domain), ("overlay",), ("restore_machine",), ("remove_domain", domain)]
    # An image saved here: the machine is stopped, its definition kept.
    (image / "ssh_key").write_text("SAVED\n")
    (image / "ssh_key.pub").write_text(KEY_LINE + "\n")
    calls.clear()
    with pytest.raises(warm.WarmError):
        warm.reset(box, wd)
    assert calls == [("stop", domain), ("overlay",), ("restore_machine",), ("stop", domain)]


def test_a_description_from_before_the_agent_is_read_and_up_says_its_format_differs(saved, capsys, monkeypatch):
    box, wd = saved
    monkeypatch.setattr(warmimage, "missing_parts", lambda wd, meta: None)
    now = copy.deepcopy(KEY) | {"format": warmimage.FORMAT}
    monkeypatch.setattr(warmimage, "key_for", lambda box, wd, driver, **k: now | {"driver": driver})
    meta = description(wd)
    del meta["machines"][0]["agent"]
    meta["key"] = copy.deepcopy(KEY) | {"format": 1}
    files.write_json(warmimage.image_dir(wd) / warmimage.META, meta)
    assert warmimage.machines(warmimage.load(wd))[0].agent is False
    run = UpRun(box, wd, UpOptions(), Decision("kvm", "test"), None)
    assert lifecycle.warm_image(run) is None
    assert "the warm image format differs" in " ".join(capsys.readouterr().err.split())


def test_the_save_first_zeroes_the_guests_free_memory_then_reads_its_login_back_in(box_wd, monkeypatch):
    box, wd = box_wd
    ran = []
    monkeypatch.setattr(warm.remote, "run", lambda wd, m, command, **kw: ran.append((command, kw.get("input"))))
    monkeypatch.setattr(warm.remote, "close_master", lambda wd, m: ran.append(("close",)))
    warm._quiesce(wd, "default")
    (quiesce, given), close, (login, _) = ran
    assert quiesce[:4] == ["sudo", "-n", "sh", "-c"] and given == warm.ZERO_FREE
    assert quiesce[4].index("drop_caches") < quiesce[4].index("python3 -"), "caches dropped, then memory zeroed"
    assert close == ("close",) and "date" in login[4], "then one fresh login"


@pytest.mark.parametrize("leased", [{LEASE: "192.168.121.99"}, {"52:54:00:aa:bb:cc": "192.168.121.7"}])
def test_a_lease_of_another_address_or_to_another_guest_has_the_guest_ask_afresh_before_ssh(
    resume_world, leased, monkeypatch
):
    """The network leased the NIC another address (at an earlier restore) than SSH's configuration
    names, or that address to another guest: the link goes down and up before any connection, SSH
    goes to the address the guest then has, and the host's neighbour entry for the other guest's
    address is left alone."""
    wd, calls, world = resume_world
    world["leases"] = dict(leased)

    def set_link(domain, mac, up):
        calls.append(("set_link", mac, up))
        if up:  # a free address
            world["leases"][mac] = "192.168.121.42"

    written: list[str] = []
    monkeypatch.setattr(libvirt, "set_link", set_link)
    monkeypatch.setattr(
        warm.remote, "write_ssh_config", lambda wd, config: (calls.append(("ssh_config",)), written.append(config))
    )
    meta = meta_of(wd, world) | {"ssh": "Host default\n  HostName 192.168.121.7\n  User vagrant\n"}
    resume.after_resume(wd, meta)
    assert [c[0] for c in calls] == ["ssh_config", "set_link", "set_link", "close_master", "ssh_config", "ssh", "ssh"]
    assert "HostName 192.168.121.42" in written[-1], "SSH goes to the address the guest has now"


def test_a_lease_listed_for_this_guest_and_another_is_not_ours(resume_world):
    """dnsmasq may list a MAC address twice (two client IDs): the address is ours only when no
    other guest's line names it."""
    wd, calls, world = resume_world
    world["leases"][LEASE] = "192.168.121.7"
    world["others"] = [("52:54:00:aa:bb:cc", "192.168.121.7")]
    resume.after_resume(wd, meta_of(wd, world))
    assert [c[0] for c in calls][:3] == ["ssh_config", "set_link", "set_link"], "no SSH, no neighbour entry before"
    assert "announce" not in [c[0] for c in calls]


def test_after_asking_afresh_ssh_waits_until_the_lease_listed_is_the_address_the_guest_holds(resume_world, monkeypatch):
    """The table may list the lease the NIC had before its link went down for a moment, while the
    guest takes another: SSH goes to the one the guest holds, as its agent says, once listed."""
    wd, calls, world = resume_world
    world["agent"] = "ok"
    world["leases"][LEASE] = "192.168.121.99"  # not the saved .7: asks afresh
    world["holds"] = "192.168.121.7"
    looks = {"n": 0}

    def set_link(domain, mac, up):
        calls.append(("set_link", mac, up))

    def leases(net):
        looks["n"] += 1
        if looks["n"] > 4:  # the new grant shows up a few looks later
            world["leases"][LEASE] = "192.168.121.7"
        return list(world["leases"].items())

    monkeypatch.setattr(libvirt, "set_link", set_link)
    monkeypatch.setattr(libvirt, "leases", leases)
    resume.after_resume(wd, meta_of(wd, world))
    assert kinds(calls).count("guest's addresses") >= 2, "the old lease was not taken for the guest's"
    assert "close_master" not in kinds(calls), "the address SSH knew is the one the guest holds"
    assert kinds(calls)[-2:] == ["ssh sh -c cat > /dev/ura", "agent wait 41"]


def test_an_agent_that_cannot_say_leaves_the_lease_to_stand(resume_world, monkeypatch):
    wd, calls, world = resume_world
    world["agent"] = "ok"
    monkeypatch.setattr(
        libvirt,
        "run",
        lambda *a, timeout: (calls.append(("guest's addresses",)), SimpleNamespace(ok=False, stdout=""))[1],
    )
    resume.after_resume(wd, meta_of(wd, world))
    assert kinds(calls).count("guest's addresses") == 1 and kinds(calls)[-1] == "agent wait 41"
