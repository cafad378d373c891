"""`up`'s steps one by one at the process seam, and what a failed up removes.

vagrant, virsh, ansible-playbook and ssh are stubs over one small libvirt world kept in a JSON
file (domains with their disks and networks, volumes, networks): each step runs the programs it
runs for real, and the tests read the world afterwards.
"""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.conftest import stub_programs, write_box
from vagabond import process
from vagabond.catalog.read import Published
from vagabond.definition import boxfile
from vagabond.definition import project as project_layout
from vagabond.errors import ModeCheckFailed, StepFailed
from vagabond.host import libvirt
from vagabond.host.detect import Decision
from vagabond.vm import lifecycle
from vagabond.vm.lifecycle import UpOptions, UpRun
from vagabond.vm.ownership import MadeByUp
from vagabond.vm.workdir import Workdir

IMAGE = "org-VAGRANTSLASH-base_vagrant_box_image_0_box.img"

# One script answers as each program; the world is $WORLD, the calls go to $WORLD.calls.
STUB = r"""#!PYTHON
import json, os, sys
prog, args = os.path.basename(sys.argv[0]), sys.argv[1:]
world_path = os.environ["WORLD"]
world = json.load(open(world_path))
with open(world_path + ".calls", "a") as fh:
    fh.write(json.dumps([prog, *args]) + "\n")
fail = os.environ.get("STUB_FAIL", "")

def save():
    json.dump(world, open(world_path, "w"))

if prog == "virsh":
    args = args[2:]  # -c URI
    cmd, rest = args[0], args[1:]
    doms = world["domains"]
    if cmd == "uri":
        print("qemu:///system")
    elif cmd == "list":
        print("\n".join(doms))
    elif cmd == "domstate":
        if rest[0] not in doms:
            sys.exit(1)
        print(doms[rest[0]]["state"])
    elif cmd == "dumpxml":
        d = doms.get(rest[0]) or sys.exit(1)
        print("<domain>" + "".join(f"<disk><source file='/pool/{v}'/></disk>" for v in d["disks"])
              + "".join(f"<interface><source network='{n}'/></interface>" for n in d["networks"]) + "</domain>")
    elif cmd == "destroy":
        doms[rest[0]]["state"] = "shut off"; save()
    elif cmd == "undefine":
        doms.pop(rest[0]) if rest[0] in doms else sys.exit(1); save()
    elif cmd == "vol-list":
        print(" Name   Path\n--------------")
        for v in world["volumes"]:
            print(f" {v}   /pool/{v}")
    elif cmd == "vol-delete":
        world["volumes"].remove(rest[-1]) if rest[-1] in world["volumes"] else sys.exit(1); save()
    elif cmd == "net-list":
        print("\n".join(world["networks"]))
    elif cmd == "net-define":
        xml = sys.stdin.read()
        name = xml.split("<name>")[1].split("</name>")[0]
        world["networks"].append(name); world.setdefault("defined", {})[name] = xml; save()
    elif cmd in ("net-destroy", "net-start"):
        pass
    elif cmd == "net-undefine":
        world["networks"].remove(rest[0]); save()
elif prog == "vagrant":
    if args[0] == "up":
        # Named as the Vagrantfile names it: the work directory's prefix, then the machine.
        name = json.load(open(os.environ["STATE_NAME"]))["prefix"] + "default"
        if "vagrant-libvirt" not in world["networks"]:
            world["networks"].append("vagrant-libvirt")
        print("==> default: Uploading base box image as volume into Libvirt storage...", flush=True)
        world["volumes"].append(os.environ["IMAGE"])
        world["volumes"].append(name + ".img")
        world["domains"][name] = {"state": "running", "disks": [name + ".img"], "networks": ["vagrant-libvirt"]}
        save()
        print("==> default: Waiting for domain to get an IP address...", flush=True)
        if fail == "up":
            print("The guest machine entered an invalid state", file=sys.stderr)
            sys.exit(1)
        print("==> default: Machine booted and ready!", flush=True)
    elif args[0] == "ssh-config":
        print("Host default\n  HostName 192.168.121.7\n  User vagrant\n  Port 22")
    elif args[:2] == ["box", "add"]:  # into the store on disk, where vagabond looks
        store = os.path.join(os.environ["VAGRANT_HOME"], "boxes", args[-1].replace("/", "-VAGRANTSLASH-"))
        os.makedirs(os.path.join(store, "0", "libvirt"))
elif prog == "ansible-playbook":
    if fail == "provision":
        print("fatal: [default]: FAILED! => {}")
        sys.exit(2)
    print("PLAY RECAP *********\ndefault : ok=3 changed=1 unreachable=0 failed=0 skipped=0 rescued=0 ignored=0")
elif prog == "ansible-galaxy":
    pass
elif prog == "ssh":
    if "-O" in args:
        sys.exit(0)
    if "/dev/null" in args and os.environ.get("STUB_INSECURE") != "accepted":  # the insecure-key probe
        sys.exit(255)
    print(os.environ.get("STUB_MODE", "Enforcing"))
"""


@pytest.fixture
def world(project, tmp_path, monkeypatch):
    """The libvirt world, empty but for other users' things, and the stubs that act on it."""
    state = {"domains": {}, "volumes": ["theirs.img"], "networks": ["default"]}
    path = tmp_path / "world.json"
    path.write_text(json.dumps(state))
    script = STUB.replace("PYTHON", sys.executable)
    names = ("virsh", "vagrant", "ansible-playbook", "ansible-galaxy", "ssh")
    stub_programs(tmp_path, monkeypatch, **dict.fromkeys(names, script))
    monkeypatch.setenv("WORLD", str(path))
    monkeypatch.setenv("IMAGE", IMAGE)
    monkeypatch.setenv("STATE_NAME", project_layout.STATE)
    monkeypatch.setenv("VAGRANT_HOME", str(tmp_path / "vagrant.d"))
    monkeypatch.setenv("VAGABOND_STATE", str(tmp_path / "state"))
    monkeypatch.setattr(libvirt, "TURN_LOCK", tmp_path / "run" / "libvirt.lock")
    # The stubs, not this virtual environment's own ansible-playbook (which vagabond prefers).
    monkeypatch.setattr(process, "in_virtual_env", lambda: False)
    return path


def read(world: Path) -> dict:
    return json.loads(world.read_text())


def calls(world: Path, prog: str) -> list[list[str]]:
    log = world.with_name(world.name + ".calls")
    lines = log.read_text().splitlines() if log.exists() else []
    return [c[1:] for c in map(json.loads, lines) if c[0] == prog]


def new_run(project, text="description: x\nbase: {box: org/base}\nmodes: {selinux: enforcing}\n", **opts):
    write_box(project, "b", text)
    box = boxfile.find_box("b", project / "boxes")
    wd = Workdir.for_box(box)
    wd.path.mkdir(parents=True, exist_ok=True)
    return UpRun(box, wd, UpOptions(**opts), Decision("qemu", "test"), MadeByUp.before())


def test_choose_box_new_vm_without_prebuilt_boots_the_base(world, project):
    run = new_run(project)
    lifecycle.choose_box(run)
    assert run.source is None


def test_choose_box_kept_vm_keeps_the_box_it_was_made_from(world, project):
    run = new_run(project)
    run.made = None  # the VM is there already
    run.wd.write_state(prebuilt={"name": "org/p", "version": "2", "url": "http://127.0.0.1:1/p.json"})
    lifecycle.choose_box(run)
    assert run.source == Published("org/p", "2", "http://127.0.0.1:1/p.json")


def test_prepare_base_adds_a_catalog_base_once(world, project):
    run = new_run(project)
    lifecycle.prepare_base(run)
    lifecycle.prepare_base(run)
    adds = [c for c in calls(world, "vagrant") if c[:2] == ["box", "add"]]
    assert len(adds) == 1 and adds[0][-1] == "org/base", "added once, then found in the store"


def test_prepare_base_skips_the_base_when_a_prebuilt_box_boots(world, project):
    run = new_run(project)
    run.source = Published("org/p", "2", "http://127.0.0.1:1/p.json")
    lifecycle.prepare_base(run)
    assert calls(world, "vagrant") == []


def test_render_files_writes_vagrantfile_state_and_a_key_of_its_own(world, project):
    run = new_run(project)
    lifecycle.render_files(run)
    wd = run.wd
    assert "org/base" in (wd.path / "Vagrantfile").read_text()
    state = wd.read_state()
    assert state["driver"] == "qemu" and state["box"] == "b" and state["provisioned"] is False
    assert state["ssh_key"] is True and wd.ssh_key.stat().st_mode & 0o777 == 0o600
    assert json.loads((project / "state" / "ledger.json").read_text())["workdirs"][wd.prefix] == str(wd.path)


def test_render_files_marks_a_prebuilt_box_provisioned_unless_extra_vars(world, project):
    run = new_run(project)
    run.source = Published("org/p", "2", "http://127.0.0.1:1/p.json")
    lifecycle.render_files(run)
    assert run.wd.read_state()["provisioned"] is True
    run = new_run(project, extra_vars=["x=1"])
    run.source = Published("org/p", "2", "http://127.0.0.1:1/p.json")
    lifecycle.render_files(run)
    assert run.wd.read_state()["provisioned"] is False


def test_boot_and_ssh_config_see_the_upload_and_fetch_the_config_early(world, project):
    run = new_run(project)
    lifecycle.render_files(run)
    lifecycle.boot_vm(run)
    assert run.made.upload_started and run.made.uploaded() == [IMAGE]
    lifecycle.ssh_config(run)
    assert "HostName 192.168.121.7" in run.wd.ssh_config.read_text()
    ups = [c for c in calls(world, "vagrant") if c[0] == "up"]
    assert ups == [["up", "--no-provision", "--provider=libvirt"]]
    assert [c for c in calls(world, "vagrant") if c[0] == "ssh-config"] == [["ssh-config", "default"]], "once, early"
    assert "Machine booted and ready!" in (run.wd.path / "logs" / "vagrant.log").read_text()
    (warm,) = calls(world, "ssh")
    assert warm[-2:] == ["--", "true"], "the shared connection opened while vagrant finished"


def test_provision_runs_the_site_playbook_and_records_the_recap(world, project):
    run = new_run(project)
    lifecycle.render_files(run)
    lifecycle.provision_vm(run)
    (argv,) = calls(world, "ansible-playbook")
    assert argv[-1].endswith("vagabond-provision/site.yml")
    state = run.wd.read_state()
    assert state["provisioned"] and state["playbooks_ran"] and state["recap"][0]["ok"] == 3
    lifecycle.provision_vm(run)
    assert len(calls(world, "ansible-playbook")) == 1, "a provisioned VM is not provisioned again"


def test_provision_is_skipped_with_no_provision(world, project):
    run = new_run(project, provision=False)
    lifecycle.render_files(run)
    lifecycle.provision_vm(run)
    assert calls(world, "ansible-playbook") == []


def test_verify_modes_asks_inside_the_guest(world, project, monkeypatch):
    run = new_run(project)
    lifecycle.render_files(run)
    lifecycle.boot_vm(run)
    lifecycle.ssh_config(run)
    lifecycle.verify_modes(run)
    assert any("getenforce" in c[-1] for c in calls(world, "ssh"))
    monkeypatch.setenv("STUB_MODE", "Permissive")
    with pytest.raises(ModeCheckFailed, match=r"selinux check failed on default: .* printed 'Permissive'"):
        lifecycle.verify_modes(run)


def test_a_failed_up_removes_what_it_made_and_nothing_else(world, project, monkeypatch):
    monkeypatch.setenv("STUB_FAIL", "up")
    write_box(project, "b", "description: x\nbase: {box: org/base}\n")
    box = boxfile.find_box("b", project / "boxes")
    wd = Workdir.for_box(box)
    with pytest.raises(StepFailed, match=r"^vagrant up failed: .*The guest machine entered an invalid state"):
        lifecycle.up(box, wd, UpOptions(driver="qemu"))
    after = read(world)
    assert after["domains"] == {}
    assert after["volumes"] == ["theirs.img"], "the upload it started and its disk are gone, theirs stays"
    assert after["networks"] == ["default"], "the network it created is gone"
    assert not wd.state_file.exists()


def test_a_failed_up_leaves_a_network_and_an_image_that_were_there(world, project, monkeypatch):
    state = read(world)
    state["networks"].append("vagrant-libvirt")
    state["volumes"].append(IMAGE)
    state["domains"]["other_default"] = {"state": "running", "disks": [IMAGE], "networks": ["vagrant-libvirt"]}
    world.write_text(json.dumps(state))
    monkeypatch.setenv("STUB_FAIL", "provision")
    write_box(project, "b", "description: x\nbase: {box: org/base}\nmodes: {selinux: enforcing}\n")
    box = boxfile.find_box("b", project / "boxes")
    wd = Workdir.for_box(box)
    with pytest.raises(StepFailed, match=r"^provision failed: "):
        lifecycle.up(box, wd, UpOptions(driver="qemu"))
    after = read(world)
    assert list(after["domains"]) == ["other_default"]
    assert IMAGE in after["volumes"] and "vagrant-libvirt" in after["networks"]


def test_an_up_defines_the_management_network_without_address_ping_or_spanning_tree(world, project):
    """vagrant-libvirt finds it made by name; dnsmasq offers the lease at once, the port forwards at once."""
    write_box(project, "b", "description: x\nbase: {box: org/base}\n")
    box = boxfile.find_box("b", project / "boxes")
    lifecycle.up(box, Workdir.for_box(box), UpOptions(driver="qemu"))
    xml = read(world)["defined"]["vagrant-libvirt"]
    assert "<dnsmasq:option value='no-ping'/>" in xml and "<bridge stp='off' delay='0'/>" in xml
    assert "<ip address='192.168.121.1' netmask='255.255.255.0'>" in xml, "vagrant-libvirt's own address"
    asked = [json.loads(line) for line in world.with_name(world.name + ".calls").read_text().splitlines()]
    defined = [n for n, call in enumerate(asked) if "net-define" in call]
    ups = [n for n, call in enumerate(asked) if call[:2] == ["vagrant", "up"]]
    assert len(defined) == 1 and len(ups) == 1 and defined[0] < ups[0], "defined once, before vagrant up"
    assert ET.fromstring(xml).find("name").text == "vagrant-libvirt"


def test_a_successful_up_records_what_gc_may_take(world, project):
    write_box(project, "b", "description: x\nbase: {box: org/base}\nmodes: {selinux: enforcing}\n")
    box = boxfile.find_box("b", project / "boxes")
    wd = Workdir.for_box(box)
    state = lifecycle.up(box, wd, UpOptions(driver="qemu"))
    assert list(state["timings"]) == [name for name, _ in lifecycle.STEPS]
    recorded = json.loads((project / "state" / "ledger.json").read_text())
    assert recorded["volumes"] == [IMAGE] and recorded["networks"] == ["vagrant-libvirt"]


def test_in_a_github_job_the_summary_says_which_driver_booted_the_vm(world, project, monkeypatch):
    """vagabond's own box matrix reads there whether the runner had KVM (the step table, how long)."""
    from vagabond import github

    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setattr(github, "summary_lines", [])
    write_box(project, "b", "description: x\nbase: {box: org/base}\nmodes: {selinux: enforcing}\n")
    box = boxfile.find_box("b", project / "boxes")
    lifecycle.up(box, Workdir.for_box(box), UpOptions(driver="qemu"))
    (line,) = github.summary_lines
    assert line.startswith("b: driver **qemu** (set by --driver (the probe found: ")


@pytest.mark.parametrize("strict", [False, True])
def test_a_vm_that_vagrants_published_key_opens_is_named_or_fails_under_strict(
    world, project, tmp_path, monkeypatch, strict
):
    """The probe offers only Vagrant's insecure key (no ssh_config, no agent); a box that takes it
    gets a warning naming it, and --strict makes up fail at the step 'check keys'."""
    home = tmp_path / "vagrant.d"
    (home / "insecure_private_keys").mkdir(parents=True)
    (home / "insecure_private_keys" / "vagrant.key.ed25519").write_text("key")
    monkeypatch.setenv("STUB_INSECURE", "accepted")
    write_box(project, "b", "description: x\nbase: {box: org/base}\nmodes: {selinux: enforcing}\n")
    box = boxfile.find_box("b", project / "boxes")
    warned = []
    monkeypatch.setattr(lifecycle.ui, "warning", lambda message, title="": warned.append(message))
    if strict:
        with pytest.raises(StepFailed, match=r"check keys") as failed:
            lifecycle.up(box, Workdir.for_box(box), UpOptions(driver="qemu", strict=True))
        assert "lets Vagrant's published insecure key in" in str(failed.value)
    else:
        lifecycle.up(box, Workdir.for_box(box), UpOptions(driver="qemu"))
        assert warned == [
            "b (default) lets Vagrant's published insecure key in: anyone who reaches its network can log in "
            "(a box made by vagabond takes only the VM's own key)"
        ]
    probe = next(c for c in calls(world, "ssh") if "/dev/null" in c)
    assert probe[probe.index("-i") + 1] == str(home / "insecure_private_keys" / "vagrant.key.ed25519")
    assert "IdentitiesOnly=yes" in probe and "IdentityAgent=none" in probe and probe[-1] == "true"
    assert probe[-2].startswith("vagrant@") and probe[probe.index("-F") + 1] == "/dev/null"


def test_a_vm_that_refuses_the_published_key_is_not_warned_about(world, project, tmp_path, monkeypatch):
    home = tmp_path / "vagrant.d"
    home.mkdir(parents=True, exist_ok=True)
    (home / "insecure_private_key").write_text("key")
    write_box(project, "b", "description: x\nbase: {box: org/base}\n")
    box = boxfile.find_box("b", project / "boxes")
    warned = []
    monkeypatch.setattr(lifecycle.ui, "warning", lambda message, title="": warned.append(message))
    lifecycle.up(box, Workdir.for_box(box), UpOptions(driver="qemu", strict=True))
    assert warned == [] and any("/dev/null" in c for c in calls(world, "ssh"))
