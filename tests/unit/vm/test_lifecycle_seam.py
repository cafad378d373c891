"""Lifecycle pieces at the process seam: SSH argv, inventory, ansible env, locks, box archives."""

from __future__ import annotations

import json
import os
import shlex
import struct
import tarfile

import pytest

from tests.conftest import write_box
from vagabond import paths, process
from vagabond.bases import archive, diskimage
from vagabond.definition import boxfile
from vagabond.errors import Busy, NotRunning, UsageError
from vagabond.vm import playbooks, provision, remote
from vagabond.vm.workdir import Workdir

VAGRANT_SSH_CONFIG = """Host default
  HostName 192.168.121.50
  User vagrant
  Port 22
  IdentityFile /root/.vagrant.d/insecure_private_key
"""


@pytest.fixture
def wd(project):
    box = boxfile.find_box("debian12-selinux", paths.shipped_boxes_dir())
    w = Workdir.for_box(box, project / ".vagabond" / "debian12-selinux")
    w.path.mkdir(parents=True)
    return w


def test_ssh_config_adds_connection_sharing(wd):
    remote.write_ssh_config(wd, VAGRANT_SSH_CONFIG)
    text = wd.ssh_config.read_text()
    assert text.startswith(VAGRANT_SSH_CONFIG)
    assert "ControlMaster auto" in text and "ControlPersist 10m" in text
    assert "ServerAliveInterval 15\n  ServerAliveCountMax 8\n" in text, "a guest gone without closing is noticed"
    assert f'ControlPath "{remote.control_dir()}/%C"' in text
    assert len(str(remote.control_dir() / ("x" * 40))) < 108
    assert remote.hosts(wd) == ["default"]


def test_ssh_argv_quotes_each_argument(wd):
    remote.write_ssh_config(wd, VAGRANT_SSH_CONFIG)
    argv = remote.ssh_argv(wd, "default", ["sh", "-c", "echo $HOME; rm -rf /", "a b"], env={"X": "1 2"})
    assert argv[:5] == ["ssh", "-F", str(wd.ssh_config), "-q", "-T"]
    assert argv[5:7] == ["default", "--"]
    assert shlex.split(argv[7]) == ["env", "X=1 2", "--", "sh", "-c", "echo $HOME; rm -rf /", "a b"]


def test_run_before_up_says_what_to_do(wd):
    with pytest.raises(
        NotRunning,
        match=r"^no SSH configuration for 'debian12-selinux' machine 'default' \(run 'vagabond up "
        r"debian12-selinux' first\)$",
    ):
        remote.ssh_argv(wd, "default", ["true"])


def test_site_playbook_modes_first_then_deps(project):
    (project / "playbooks" / "deps.yml").write_text("- hosts: all\n  tasks: []\n")
    write_box(
        project,
        "b",
        "description: x\nbase: {box: a/b}\nmodes: {selinux: permissive}\n"
        "playbooks: [{path: playbooks/deps.yml, vars: {v: 1}}]\n",
    )
    box = boxfile.find_box("b", project / "boxes")
    w = Workdir.for_box(box)
    playbooks.write_provisioning(box, w.path)
    site = json.loads((w.path / "vagabond-provision" / "site.yml").read_text().split("\n", 1)[1])
    assert site[1]["import_playbook"] == "modes/selinux.yml" and site[1]["vars"] == {"selinux_state": "permissive"}
    # From .vagabond/b/vagabond-provision/ to the project's playbooks/: relative, valid in any checkout.
    assert site[2] == {
        "import_playbook": "../../../playbooks/deps.yml",
        "vars": {"v": 1},
        "when": "not vagabond_current",
    }
    assert [c.expect for c in playbooks.mode_checks(box)] == ["Permissive"]


def test_inventory_and_env(wd):
    remote.write_ssh_config(wd, VAGRANT_SSH_CONFIG)
    assert provision.write_inventory(wd).read_text() == "default ansible_user=vagrant\n\n[vagabond]\ndefault\n"
    env = provision.ansible_env(wd)
    assert "ANSIBLE_PIPELINING" not in env or env["ANSIBLE_PIPELINING"] == os.environ.get("ANSIBLE_PIPELINING"), (
        "ansible.cfg says it"
    )
    assert shlex.split(env["ANSIBLE_SSH_ARGS"]) == ["-F", str(wd.ssh_config)]
    assert env["ANSIBLE_CONFIG"] == str(wd.path / "vagabond-provision" / "ansible.cfg")
    assert env["ANSIBLE_STRATEGY"] == "mitogen_linear"
    assert (provision.Path(env["ANSIBLE_STRATEGY_PLUGINS"]) / "mitogen_linear.py").is_file()


def test_mitogen_can_be_turned_off(wd, monkeypatch):
    monkeypatch.setenv("VAGABOND_MITOGEN", "0")
    env = provision.ansible_env(wd)
    assert "ANSIBLE_STRATEGY" not in env or env.get("ANSIBLE_STRATEGY") != "mitogen_linear"


def test_recap_parsing():
    out = "PLAY RECAP ****\ndefault                    : ok=7    changed=0    unreachable=0    failed=0    skipped=5\n"
    (r,) = provision.parse_recap(out)
    assert (r.host, r.ok, r.changed, r.failed) == ("default", 7, 0, 0)


def test_lock_refuses_a_second_holder(wd):
    with wd.lock("up"):
        with pytest.raises(Busy, match=r"^box 'debian12-selinux' is busy: 'vagabond up' \(pid \d+\) holds "):
            with Workdir(wd.path, wd.box).lock("provision"):
                pass
    with wd.lock("provision"):  # released: free again
        pass


def test_prefix_depends_on_workdir(project):
    box = boxfile.find_box("debian12", paths.shipped_boxes_dir())
    a = Workdir.for_box(box, project / "a")
    b = Workdir.for_box(box, project / "b")
    assert a.prefix != b.prefix and a.prefix.startswith("vagabond-debian12-")
    assert a.domain("default") == a.prefix + "default"


def test_mbr_and_box_archive(tmp_path):
    disk = tmp_path / "disk.raw"
    diskimage.write_mbr(disk, 64 * 2**20)
    raw = disk.read_bytes()[:512]
    status, _, ptype, _, start, count = struct.unpack("<B3sB3sII", raw[446:462])
    assert (status, ptype, start, count) == (0x80, 0x83, 2048, 64 * 2048 - 2048)
    assert raw[510:] == b"\x55\xaa"
    img = tmp_path / "box.img"
    img.write_bytes(b"qcow")
    box = archive.write_box(img, tmp_path / "x.box", virtual_size_gib=8)
    with tarfile.open(box) as tar:
        assert sorted(tar.getnames()) == ["Vagrantfile", "box.img", "metadata.json"]
        meta = json.load(tar.extractfile("metadata.json"))
        assert "libvirt.driver" not in tar.extractfile("Vagrantfile").read().decode()
    assert meta == {"provider": "libvirt", "format": "qcow2", "virtual_size": 8}
    assert not (tmp_path / "x.box.parts").exists()


def test_catalog_format(tmp_path):
    path = tmp_path / "metadata.json"
    archive.write_catalog(
        path, name="vagabond/debian12", description="d", version="1.0", box_url="file:///x.box", sha256="ab"
    )
    catalog = json.loads(path.read_text())
    (provider,) = catalog["versions"][0]["providers"]
    assert provider == {
        "name": "libvirt",
        "url": "file:///x.box",
        "checksum_type": "sha256",
        "checksum": "ab",
        "architecture": "amd64",
        "default_architecture": True,
    }


def test_process_drains_pipes_held_by_a_daemon(tmp_path):
    # Like ssh's ControlPersist master: a background child keeps stderr open after the parent exits.
    r = process.check(["sh", "-c", "sleep 30 >/dev/null 2>&2 & echo done"], timeout=20)
    assert r.stdout == "done\n" and r.duration < 10


def test_logs_collect_host_files_and_say_what_is_missing(wd, tmp_path):
    from vagabond.vm import logs

    wd.vagrantfile.write_text("Vagrant.configure('2') {}\n")
    wd.logs.mkdir()
    (wd.logs / "vagrant.log").write_text("==> default: Waiting for domain to get an IP address...\n")
    saved_serial = wd.logs / f"{wd.domain('default')}-serial.log"
    saved_serial.write_text("SeaBIOS\n")  # kept by a failed up after libvirt's copy went away
    summary = logs.collect(wd.box, wd, tmp_path / "out")
    items = {i["name"]: i for i in summary["items"]}
    out = tmp_path / "out" / "debian12-selinux"
    assert items["Vagrantfile"]["ok"] and (out / "Vagrantfile").read_text() == "Vagrant.configure('2') {}\n"
    assert items["vagrant.log"]["ok"] and items["default-serial.log"]["ok"]
    assert (out / "default-serial.log").read_text() == "SeaBIOS\n"
    assert items["ansible.log"] == {
        "name": "ansible.log",
        "source": str(wd.logs / "ansible.log"),
        "ok": False,
        "detail": "not found",
    }
    guest = [items[f"default-{n}"] for n in ("journal.log", "avc-denials.log", "dmesg.log")]
    assert all(not g["ok"] and "no SSH configuration" in g["detail"] for g in guest)
    assert json.loads((out / "summary.json").read_text()) == summary


@pytest.mark.parametrize("attack", ["mode", "symlink", "owner"])
def test_a_control_directory_someone_else_prepared_is_refused(tmp_path, monkeypatch, attack):
    import os

    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    target = tmp_path / f"vagabond-ssh-{os.getuid()}"
    if attack == "mode":
        target.mkdir(mode=0o777)
        target.chmod(0o777)
    elif attack == "symlink":
        (tmp_path / "theirs").mkdir(mode=0o700)
        target.symlink_to(tmp_path / "theirs")
    else:
        if os.geteuid() != 0:
            pytest.skip("making a directory owned by another user needs root")
        target.mkdir(mode=0o700)
        os.chown(target, 65534, 65534)
    with pytest.raises(UsageError, match="is not a private directory of this user"):
        remote.control_dir()


def test_the_control_directory_is_made_private(tmp_path, monkeypatch):
    import os
    import stat

    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    made = remote.control_dir()
    assert stat.S_IMODE(made.stat().st_mode) == 0o700 and made.stat().st_uid == os.getuid()
    assert remote.control_dir() == made


@pytest.mark.parametrize(
    ("recorded", "was_new", "prebuilt", "extra_vars", "skip"),
    [
        (False, True, True, (), True),  # a prebuilt box holds the playbooks' work
        (False, True, True, ("app_version=2",), False),  # ... but extra vars must apply: the playbooks run
        (True, False, False, (), True),  # the VM that stays up was provisioned
        (True, True, False, (), False),  # a new VM from the base box
        (False, True, False, ("x=1",), False),
    ],
)
def test_extra_vars_are_never_ignored_on_a_prebuilt_box(recorded, was_new, prebuilt, extra_vars, skip):
    from vagabond.vm import lifecycle

    assert lifecycle.already_provisioned(recorded, was_new, prebuilt, extra_vars) is skip
