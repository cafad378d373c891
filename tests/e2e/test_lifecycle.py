"""The VM lifecycle against real Vagrant, vagrant-libvirt, libvirt, qemu and Ansible.

One debian12-selinux VM serves the checks that need SELinux (they run in file order); a plain
debian12 VM serves the interruption test. Under software emulation this module takes minutes.
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import select
import shutil
import signal
import subprocess
import tarfile
import time
import xml.etree.ElementTree as ET

import pytest

from tests.conftest import NETNS, REPO
from tests.e2e.conftest import MGMT_NETWORK, NETWORKS_AT_START, Vagabond, cache_dir, ours
from tests.helpers import network_users, virsh

pytestmark = [pytest.mark.real, pytest.mark.slow]

BOX = "debian12-selinux"
# A version of this run's own: Vagrant's box store keeps earlier ones, and up must boot the box
# this run built, not one left from a previous run.
VERSION = f"1.0.{int(time.time())}"
OCI_NAME = "vagabond/debian12-selinux-oci"


def status(vagabond, box=BOX) -> dict:
    return json.loads(vagabond("status", box, "--json").stdout)


def lease_expiry(mac: str) -> str:
    """When the management network's lease of this MAC address expires ("YYYY-MM-DD HH:MM:SS")."""
    for line in virsh("net-dhcp-leases", MGMT_NETWORK, "--mac", mac).splitlines():
        if mac in line and " ipv4 " in line:
            return " ".join(line.split()[:2])
    raise AssertionError(f"the network holds no lease of {mac}")


@pytest.fixture(scope="module")
def selinux_vm(vagabond, apt_mirror):
    result = vagabond("up", BOX, "-e", f"@{apt_mirror}", timeout=5400)
    yield result
    if (vagabond.cwd / ".vagabond" / BOX).exists():
        vagabond("destroy", BOX, check=False)


def test_up_provisions_and_verifies_selinux(selinux_vm):
    # Nothing is published yet: up says why it falls back to the base box.
    assert (
        "using the base box with full provisioning: catalog "
        "http://127.0.0.1:8322/debian12-selinux/metadata.json could not be read" in selinux_vm.stderr
    )
    assert "selinux on default: Enforcing" in selinux_vm.stderr
    assert "TASK [Activate SELinux (Debian)]" in selinux_vm.stderr


SSH_ALONE = [
    *("-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes"),
    *("-o", "ConnectTimeout=30", "-o", "IdentitiesOnly=yes"),
]


def ssh_with_key(vagabond, key) -> subprocess.CompletedProcess:
    """`true` in the VM over a connection of its own (no shared one), with this key only."""
    wd = vagabond.cwd / ".vagabond" / BOX
    host = next(
        line.split()[1] for line in (wd / "ssh_config").read_text().splitlines() if line.strip().startswith("HostName")
    )
    argv = ["ip", "netns", "exec", NETNS, "ssh", *SSH_ALONE, "-i", str(key), f"vagrant@{host}", "true"]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120)


def test_only_the_vms_own_key_opens_it(vagabond, selinux_vm, tmp_path):
    """Vagrant's published insecure key and the box convention's password open nothing: anyone on
    the host's libvirt network could have changed the VM (and a box built from it) with them."""
    wd = vagabond.cwd / ".vagabond" / BOX
    host = next(
        line.split()[1] for line in (wd / "ssh_config").read_text().splitlines() if line.strip().startswith("HostName")
    )
    root = subprocess.run(
        ["ruby", "-e", "require 'vagrant'; puts Vagrant.source_root"], capture_output=True, text=True, check=True
    ).stdout.strip()
    insecure = tmp_path / "insecure"
    shutil.copy(os.path.join(root, "keys", "vagrant"), insecure)  # the key every Vagrant user has
    insecure.chmod(0o600)
    common = [
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "BatchMode=yes",
        "-o",
        "ConnectTimeout=30",
        "-o",
        "IdentitiesOnly=yes",
    ]
    netns = ["ip", "netns", "exec", NETNS]
    refused = subprocess.run(
        [*netns, "ssh", *common, "-i", str(insecure), f"vagrant@{host}", "true"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert refused.returncode == 255 and "Permission denied" in refused.stderr, refused.stderr
    own = subprocess.run(
        [*netns, "ssh", *common, "-i", str(wd / "ssh_key"), f"vagrant@{host}", "true"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert own.returncode == 0, own.stderr
    methods = subprocess.run(
        [*netns, "ssh", *common, "-o", "PreferredAuthentications=none", f"vagrant@{host}", "true"],
        capture_output=True,
        text=True,
        timeout=120,
    ).stderr
    assert "(publickey)" in methods and "password" not in methods, methods


def test_run_getenforce_prints_enforcing(vagabond, selinux_vm):
    result = vagabond("run", BOX, "--", "getenforce")
    assert result.stdout == "Enforcing\n"


def test_run_passes_the_exit_code(vagabond, selinux_vm):
    assert vagabond("run", BOX, "--", "false", check=False).returncode == 1
    assert vagabond("run", BOX, "--", "sh", "-c", "exit 7", check=False).returncode == 7


def test_run_keeps_arguments_intact(vagabond, selinux_vm):
    result = vagabond("run", BOX, "--", "printf", "[%s]\n", "a b", "$HOME", "it's", ";", "*")
    assert result.stdout == "[a b]\n[$HOME]\n[it's]\n[;]\n[*]\n"


def test_ssh_gives_an_interactive_shell(vagabond, selinux_vm):
    """`vagabond ssh` on a terminal: a login shell with a tty, its exit status passed back."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: vagabond ssh on the pty's slave side
        os.chdir(vagabond.cwd)
        os.execvpe(vagabond.argv("ssh", BOX)[0], vagabond.argv("ssh", BOX), vagabond.env())
    os.write(fd, b"tty; echo SEEN-$(/usr/sbin/getenforce); exit 5\n")
    output = b""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 1)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # the child closed the pty
                break
            if not chunk:
                break
            output += chunk
    _, status_code = os.waitpid(pid, 0)
    text = output.decode(errors="replace")
    assert "SEEN-Enforcing" in text, text[-2000:]
    assert "/dev/pts/" in text, "the shell must have a terminal"
    assert os.waitstatus_to_exitcode(status_code) == 5


def test_run_cancelled_like_github_ends_at_once_and_leaves_no_ssh(vagabond, selinux_vm):
    proc = subprocess.Popen(
        vagabond.argv("run", BOX, "--", "sleep", "600"),
        cwd=vagabond.cwd,
        env=vagabond.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(3)
    os.kill(proc.pid, signal.SIGINT)
    try:
        proc.wait(timeout=7.5)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout=2.5)
    assert proc.returncode != 0
    sessions = subprocess.run(["pgrep", "-f", "sleep 600"], capture_output=True, text=True).stdout.split()
    assert sessions == [], "an ssh (or its command) outlived the cancelled run"
    assert vagabond("run", BOX, "--", "true").returncode == 0, "the shared connection still works afterwards"


def test_status_json(vagabond, selinux_vm):
    s = status(vagabond)
    assert s["driver"] == "qemu" and s["provisioned"] is True
    assert [m["state"] for m in s["machines"]] == ["running"]
    assert s["machines"][0]["domain"].startswith("vagabond-debian12-selinux-")
    [row] = [r for r in json.loads(vagabond("ps", "--json").stdout) if r["domain"] == s["machines"][0]["domain"]]
    assert (row["box"], row["machine"], row["state"], row["driver"]) == (BOX, "default", "running", "qemu")
    assert row["address"].startswith("192.168.121.") and 0 <= row["age_seconds"] < 7200


def test_second_provision_changes_nothing(vagabond, selinux_vm, apt_mirror):
    result = vagabond("provision", BOX, "-e", f"@{apt_mirror}")
    assert "default: ok=" in result.stdout and "changed=0 " in result.stdout and "failed=0" in result.stdout


def test_logs_from_the_vm_with_an_avc_denial_provoked_under_enforcing(vagabond, selinux_vm, tmp_path):
    # Enforcing refuses /bin/true as an entry point of dhcpc_t (the DHCP client's domain, entered
    # only through dhclient), and no dontaudit rule hides it: auditd records the denial.
    denied = vagabond("run", BOX, "--", "runcon", "-t", "dhcpc_t", "--", "/bin/true", check=False)
    assert denied.returncode == 126 and "Permission denied" in denied.stderr, denied.stderr
    summary = json.loads(vagabond("logs", BOX, "--out", str(tmp_path), "--json").stdout)
    items = {item["name"]: item for item in summary["items"]}
    for name in (
        "Vagrantfile",
        "state.json",
        "vagrant.log",
        "ansible.log",
        "default-serial.log",
        "default-qemu.log",
        "default-journal.log",
        "default-avc-denials.log",
        "default-dmesg.log",
    ):
        assert items[name]["ok"], items[name]
    out = tmp_path / BOX
    avc = (out / "default-avc-denials.log").read_text()
    assert avc.startswith("== audit log") and "== kernel log" in avc, avc[:2000]
    audit = avc.split("== kernel log")[0]
    provoked = [line for line in audit.splitlines() if "avc:  denied  { entrypoint }" in line and ":dhcpc_t:" in line]
    assert provoked, audit[-3000:]
    assert "comm=runcon" in provoked[-1] and "path=/usr/bin/true" in provoked[-1] and "permissive=0" in provoked[-1]
    assert (out / "default-dmesg.log").stat().st_size > 0
    assert "systemd" in (out / "default-journal.log").read_text()
    assert "PLAY RECAP" in (out / "ansible.log").read_text()
    assert "Vagrant.configure" in (out / "Vagrantfile").read_text()
    assert json.loads((out / "summary.json").read_text()) == summary


def test_a_failing_command_under_ci_brings_logs_back(vagabond, selinux_vm):
    result = vagabond("run", BOX, "--", "sh", "-c", "exit 3", check=False, env={"CI": "true"})
    assert result.returncode == 3
    summary = json.loads((vagabond.cwd / "vagabond-logs" / BOX / "summary.json").read_text())
    assert {i["name"] for i in summary["items"] if i["ok"]} >= {
        "Vagrantfile",
        "default-journal.log",
        "default-serial.log",
    }
    assert f"logs of {BOX} in" in result.stderr
    shutil.rmtree(vagabond.cwd / "vagabond-logs")


def test_a_busy_box_is_refused_clearly(vagabond, selinux_vm):
    lock = vagabond.cwd / ".vagabond" / BOX / ".lock"
    with open(lock, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        result = vagabond("provision", BOX, check=False)
    assert result.returncode == 75
    assert f"error: box '{BOX}' is busy:" in result.stderr


def plain_vagrant(wd, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """Vagrant itself in the work directory, as a person runs it there (with the VM's own key)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VAGABOND_", "CI", "GITHUB_"))}
    env |= {"VAGABOND_SSH_KEY": str(wd / "ssh_key"), "VAGABOND_DRIVER": "qemu", "VAGRANT_CHECKPOINT_DISABLE": "1"}
    argv = ["ip", "netns", "exec", NETNS, "vagrant", *args]
    result = subprocess.run(argv, cwd=wd, env=env, capture_output=True, text=True, timeout=timeout)
    print(f"$ vagrant {' '.join(args)}  (exit {result.returncode})", result.stdout[-2000:], result.stderr[-2000:])
    return result


def warm_layers(prefix: str) -> list[str]:
    frozen = "vagabond-warm-" + prefix.removeprefix("vagabond-")
    return [line.split()[0] for line in virsh("vol-list", "default").splitlines()[2:] if line.startswith(" " + frozen)]


def test_a_warm_image_brings_the_provisioned_vm_back_and_resets_it(vagabond, selinux_vm, apt_mirror):
    """save, destroy, up (restored, not booted), reset; a warm image whose key differs is not used,
    and says why; plain vagrant ssh and vagrant destroy work on a restored VM. The VM the module
    shares is the restored one afterwards: what follows checks it as well."""
    wd = vagabond.cwd / ".vagabond" / BOX
    prefix = status(vagabond)["machines"][0]["domain"].removesuffix("default")
    vagabond("run", BOX, "--", "sh", "-c", "echo saved > /home/vagrant/before-save")
    described = json.loads(vagabond("save", BOX, "--json", timeout=900).stdout)
    (machine,) = described["machines"]
    assert described["key"]["driver"] == "qemu" and described["key"]["cpu"] != "host-passthrough"
    image = cache_dir() / "warm" / prefix.rstrip("-") / machine["memory_image"]
    assert image.stat().st_mode & 0o777 == 0o600 and image.parent.stat().st_mode & 0o777 == 0o700
    print(f"warm image: memory {image.stat().st_size / 2**20:.0f} MiB for a 1024 MiB VM")
    assert image.stat().st_size <= 512 * 2**20, "at most half the VM's memory: its free memory was zeroed first"
    assert warm_layers(prefix) == machine["disk_layers"], "one frozen layer in the pool, under the VM's new overlay"
    assert vagabond("run", BOX, "--", "getenforce").stdout == "Enforcing\n", "the VM runs on after its save"

    vagabond("destroy", BOX)
    assert ours(prefix)["domains"] == [] and warm_layers(prefix), "destroy keeps the warm image"
    up = vagabond("up", BOX, "-e", f"@{apt_mirror}", "--debug", timeout=900)
    assert f"restore {BOX} from its warm image" in up.stderr and "vagrant up" not in up.stderr, up.stderr
    # The guest's agent (under SELinux's policy) set its time while SSH opened: no date over SSH.
    assert '"guest-exec"' in up.stderr and "sudo -n date" not in up.stderr, "the time over SSH"
    assert "selinux on default: Enforcing" in up.stderr
    # The network, vagabond's (this tier's first up made it), lets the guest's new port forward at
    # once (no 4 s of spanning tree's listening and learning before the first packet passes).
    from vagabond.host import ledger

    bridge = ET.fromstring(virsh("net-dumpxml", MGMT_NETWORK)).find("bridge").get("name")
    stp = subprocess.run(
        ["ip", "netns", "exec", NETNS, "cat", f"/sys/class/net/{bridge}/bridge/stp_state"],
        capture_output=True,
        text=True,
        check=True,
    )
    ours_now = MGMT_NETWORK in ledger.read()["networks"]
    assert ours_now or MGMT_NETWORK in NETWORKS_AT_START, "a network no one made"
    assert stp.stdout.strip() == ("0" if ours_now else "1"), "spanning tree on a network vagabond made"
    assert vagabond("run", BOX, "--", "cat", "/home/vagrant/before-save").stdout == "saved\n"
    guest_now = float(vagabond("run", BOX, "--", "date", "+%s").stdout)
    assert abs(guest_now - time.time()) < 5, "the restored guest's clock is the host's"
    assert plain_vagrant(wd, "ssh", "-c", "true").returncode == 0

    vagabond("run", BOX, "--", "sh", "-c", "echo later > /home/vagrant/after-save")
    domain = status(vagabond)["machines"][0]["domain"]
    mac = ET.fromstring(virsh("dumpxml", domain)).find("devices/interface/mac").get("address")
    held = lease_expiry(mac)
    vagabond("reset", BOX, timeout=900)
    # The guest renewed its lease as it came back (the network's DHCP server saw it): vagrant-libvirt
    # finds the VM however long the resets go on, not only while the lease it had at the save lasts.
    deadline = time.monotonic() + 10
    while (renewed := lease_expiry(mac)) <= held and time.monotonic() < deadline:
        time.sleep(0.5)
    assert renewed > held, f"the lease still expires at {held}: no renewal reached the network"
    listed = vagabond("run", BOX, "--", "ls", "/home/vagrant").stdout.split()
    assert "before-save" in listed and "after-save" not in listed, listed
    assert vagabond("run", BOX, "--", "getenforce").stdout == "Enforcing\n"

    # Plain Vagrant removes the restored VM as it removes one it made.
    assert plain_vagrant(wd, "destroy", "-f").returncode == 0
    assert ours(prefix)["domains"] == [] and ours(prefix)["volumes"] == []
    # Provisioned another way: the warm image does not stand in, and up says why before it boots
    # (a boot that cannot succeed in time: the line is what is checked here, and what remains).
    other = vagabond("up", BOX, "-e", f"@{apt_mirror}", "-e", "warm_test=1", "--boot-timeout", "1", check=False)
    assert "booting cold, not from the warm image saved here: how it was provisioned" in " ".join(other.stderr.split())
    assert other.returncode != 0 and ours(prefix)["domains"] == []
    # The module's VM, back for what follows.
    again = vagabond("up", BOX, "-e", f"@{apt_mirror}", timeout=900)
    assert f"restore {BOX} from its warm image" in again.stderr

    # The warm image as one file that travels (a CI cache), taken in where none is left here, as on
    # a new runner: its disk stands alone (no box image under it), and it is the VM that was saved.
    exported = vagabond.cwd / "warm.tar"
    refused = vagabond("save", BOX, "--export", str(exported), check=False)
    assert refused.returncode == 2 and "provisioned with -e values" in " ".join(refused.stderr.split())
    assert not exported.exists(), "refused before anything was saved or written"
    described = json.loads(vagabond("save", BOX, "--export", str(exported), "--no-secrets", "--json").stdout)
    assert described["export"]["size"] == exported.stat().st_size and exported.stat().st_mode & 0o777 == 0o600
    print(f"exported warm image: {exported.stat().st_size / 2**20:.0f} MiB")
    with tarfile.open(exported) as tar:
        assert not [n for n in tar.getnames() if "ssh_key" in n], "no key travels: the VM takes a new one"
    saved_key = vagabond.cwd / "saved_key"
    shutil.copy(wd / "ssh_key", saved_key)
    host_key = ["sudo", "ssh-keygen", "-lf", "/etc/ssh/ssh_host_ed25519_key.pub"]
    saved_host_key = vagabond("run", BOX, "--", *host_key).stdout.split()[1]
    vagabond("destroy", BOX)
    vagabond("save", BOX, "--drop")
    assert warm_layers(prefix) == [] and not (cache_dir() / "warm" / prefix.rstrip("-")).exists()
    taken = vagabond("up", BOX, "-e", f"@{apt_mirror}", "--warm-from", str(exported), timeout=900)
    assert f"take in the warm image {exported}" in taken.stderr and "vagrant up" not in taken.stderr, taken.stderr
    assert f"restore {BOX} from its warm image" in taken.stderr and "selinux on default: Enforcing" in taken.stderr
    (layer,) = warm_layers(prefix)
    info = json.loads(
        subprocess.run(
            ["qemu-img", "info", "-U", "--output=json", f"/var/lib/libvirt/images/{layer}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    assert "backing-filename" not in info and info["format-specific"]["data"]["compression-type"] == "zstd"
    assert vagabond("run", BOX, "--", "cat", "/home/vagrant/before-save").stdout == "saved\n"
    # Its own new key, given through the guest agent before its network came back: the key it was
    # saved with opens it no more.
    assert (wd / "ssh_key").read_bytes() != saved_key.read_bytes()
    assert ssh_with_key(vagabond, wd / "ssh_key").returncode == 0
    refused = ssh_with_key(vagabond, saved_key)
    assert refused.returncode == 255 and "Permission denied" in refused.stderr, refused.stderr
    # And new SSH host keys: VMs restored from one image do not share them.
    assert vagabond("run", BOX, "--", *host_key).stdout.split()[1] != saved_host_key

    # A reboot keeps the key the restore gave (the SMBIOS string still holds the saved one).
    given = (wd / "ssh_key.pub").read_text().strip()
    boot_id = ["cat", "/proc/sys/kernel/random/boot_id"]
    before = vagabond("run", BOX, "--", *boot_id).stdout
    vagabond("run", BOX, "--", "sudo", "systemctl", "reboot", check=False)
    deadline = time.monotonic() + 600
    while (after := vagabond("run", BOX, "--", *boot_id, check=False)).returncode != 0 or after.stdout == before:
        assert time.monotonic() < deadline, "the restored VM did not come back from its reboot"
        time.sleep(5)
    assert vagabond("run", BOX, "--", "cat", "/home/vagrant/.ssh/authorized_keys").stdout.strip() == given
    refused = ssh_with_key(vagabond, saved_key)
    assert refused.returncode == 255 and "Permission denied" in refused.stderr, refused.stderr
    # A reset of the image taken in: the guest is back at the exporter's key, and takes a new one again.
    vagabond("reset", BOX, timeout=900)
    assert (wd / "ssh_key.pub").read_text().strip() != given
    assert vagabond("run", BOX, "--", "cat", "/home/vagrant/.ssh/authorized_keys").stdout.strip() != given


def test_build_and_publish_the_dependency_box(
    vagabond, selinux_vm, catalog_server, s3_server, registry_server, tmp_path_factory
):
    """vagabond build reuses the provisioned VM (up is idempotent), cleans, packages, destroys it."""
    root, http = catalog_server
    prefix = status(vagabond)["machines"][0]["domain"].removesuffix("default")
    out = tmp_path_factory.mktemp("dist")
    info = json.loads(
        vagabond("build", BOX, "--out", str(out), "--version", VERSION, "--warm", "--json", timeout=3600).stdout
    )
    box = out / f"vagabond-debian12-selinux-{VERSION}-libvirt.box"
    assert info["path"] == str(box) and info["name"] == "vagabond/debian12-selinux"
    # --warm: the provisioned VM's warm image beside the box, named in its description, with no SSH key.
    warm = out / info["warm"]["file"]
    assert (
        warm == out / f"vagabond-debian12-selinux-{VERSION}-libvirt.warm.tar"
        and warm.stat().st_size == info["warm"]["size"]
    )
    with tarfile.open(warm) as tar:
        manifest = json.loads(tar.extractfile("manifest.json").read())
    assert not [n for n in manifest["files"] if "key" in n], manifest["files"]
    assert manifest["meta"]["key"] == info["warm"]["key"]
    assert info["base"]["box"] == "vagabond/debian12" and info["base"]["version"]
    assert len(info["definition_digest"]) == 64 and info["size"] == box.stat().st_size
    assert ours(prefix) == {"domains": [], "volumes": [], "networks": []}, "build must destroy its VM"
    # The warm image the module saved: dropped, its disk layers with it (no domain uses them now).
    vagabond("save", BOX, "--drop")
    assert warm_layers(prefix) == [] and not (cache_dir() / "warm" / prefix.rstrip("-")).exists()
    with tarfile.open(box) as tar:
        names = tar.getnames()
        assert sorted(names) == ["Vagrantfile", "box.img", "metadata.json"]
        assert "vagrant_private_key" not in names
        assert "libvirt.driver" not in tar.extractfile("Vagrantfile").read().decode()
    result = vagabond(
        "publish",
        str(box),
        "--catalog",
        str(root / "debian12-selinux"),
        "--base-url",
        f"{http}/debian12-selinux",
        "--json",
    )
    assert json.loads(result.stdout)["metadata_url"] == f"{http}/debian12-selinux/metadata.json"
    listed = json.loads((root / "debian12-selinux" / "metadata.json").read_text())["versions"][-1]["vagabond"]["warm"]
    name = f"vagabond-debian12-selinux-{VERSION}-warm-{info['warm']['key_digest']}.tar"
    assert [w["url"] for w in listed] == [f"{http}/debian12-selinux/{VERSION}/{name}"]

    # The same box in an S3 catalog, read back by the real `vagrant box add` (its checksum included).
    result = vagabond(
        "publish",
        str(box),
        "--catalog",
        "s3://boxes/nightly/debian12-selinux",
        "--s3-acl",
        "public-read",
        "--json",
        env=s3_server,
    )
    url = json.loads(result.stdout)["metadata_url"]
    assert url == f"{s3_server['AWS_ENDPOINT_URL']}/boxes/nightly/debian12-selinux/metadata.json"
    home = tmp_path_factory.mktemp("vagrant-home")
    added = subprocess.run(
        ["vagrant", "box", "add", "--provider", "libvirt", url],
        env=dict(os.environ, VAGRANT_HOME=str(home)),
        capture_output=True,
        text=True,
    )
    assert added.returncode == 0, added.stderr[-2000:]
    assert (home / "boxes" / "vagabond-VAGRANTSLASH-debian12-selinux" / VERSION).is_dir()
    shutil.rmtree(home)

    # And in an OCI registry, under a name of its own (so that up cannot find it in Vagrant's store
    # already, from the directory catalog, and must really pull it).
    result = vagabond(
        "publish",
        str(box),
        "--catalog",
        f"{registry_server}/vagabond/debian12-selinux",
        "--name",
        OCI_NAME,
        "--json",
    )
    published = json.loads(result.stdout)
    assert published["name"] == OCI_NAME and published["version"] == VERSION, published
    assert (
        published["warm"]["url"]
        == f"{registry_server}/vagabond/debian12-selinux:{VERSION}-warm-{info['warm']['key_digest']}"
    )


def test_up_restores_the_warm_image_its_catalog_lists(vagabond, catalog_server):
    """build --warm put the provisioned VM's warm image beside the box and publish put it in the
    catalog: up in the same work directory downloads it, takes it in and restores it (no boot, no
    playbook), the VM gets an SSH key of its own, and destroy with --drop leaves nothing of it."""
    prefix = None
    try:
        result = vagabond("up", BOX, timeout=1800)
        assert f"take in the warm image of vagabond/debian12-selinux {VERSION}" in result.stderr, result.stderr[-3000:]
        assert f"restore {BOX} from its warm image" in result.stderr
        assert "TASK [" not in result.stderr
        assert "selinux on default: Enforcing" in result.stderr
        assert vagabond("run", BOX, "--", "getenforce").stdout == "Enforcing\n"
        wd = vagabond.cwd / ".vagabond" / BOX
        given = (wd / "ssh_key.pub").read_text().split()[1]
        assert vagabond("run", BOX, "--", "cat", "/home/vagrant/.ssh/authorized_keys").stdout.split()[1] == given
        state = json.loads((wd / "state.json").read_text())
        assert state["prebuilt"]["version"] == VERSION, "the VM counts as made from the catalog's box"
        assert not list((cache_dir() / "warm-downloads").iterdir()), "the download goes once taken in"
        prefix = status(vagabond)["machines"][0]["domain"].removesuffix("default")
        assert plain_vagrant(wd, "ssh", "-c", "true").returncode == 0
    finally:
        vagabond("destroy", BOX, check=False)
        vagabond("save", BOX, "--drop", check=False)
    assert prefix and ours(prefix) == {"domains": [], "volumes": [], "networks": []}
    assert warm_layers(prefix) == []


def test_up_from_prebuilt_box_skips_provisioning(vagabond, catalog_server):
    result = vagabond("up", BOX, "--cold", timeout=1800)  # the catalog's warm image is the test above
    assert f"using prebuilt vagabond/debian12-selinux {VERSION} matches this definition" in result.stderr
    assert "TASK [" not in result.stderr  # no playbook ran: no install, no relabel, no reboot
    assert "selinux on default: Enforcing" in result.stderr
    assert vagabond("run", BOX, "--", "getenforce").stdout == "Enforcing\n"


def test_up_from_a_prebuilt_box_in_an_oci_registry(vagabond, registry_server, tmp_path_factory):
    """Another project whose box names the registry: up pulls the artifact (its digest checked),
    adds it to Vagrant's store, boots it without provisioning and checks SELinux; the rendered
    Vagrantfile then boots the prebuilt box too; destroy, box remove and gc leave nothing of it."""
    other = tmp_path_factory.mktemp("oci-project")
    (other / "boxes").mkdir()
    for name in ("debian12", BOX):
        shutil.copy(REPO / "boxes" / f"{name}.yaml", other / "boxes")
    with open(other / "boxes" / f"{BOX}.yaml", "a") as fh:
        fh.write(f"prebuilt:\n  name: {OCI_NAME}\n  catalog: {registry_server}/vagabond/debian12-selinux\n")
    oci = Vagabond(other)
    image = f"{OCI_NAME.replace('/', '-VAGRANTSLASH-')}_vagrant_box_image_{VERSION}_box.img"
    try:
        result = oci("up", BOX, timeout=1800)
        assert f"using prebuilt {OCI_NAME} {VERSION} matches this definition" in result.stderr, result.stderr
        # The registry lists the version's warm image, made in another work directory: not restored.
        assert (
            f"booting cold: the warm images of {OCI_NAME} {VERSION} in its catalog are of other VMs "
            "(1; the work directory differs)" in result.stderr
        )
        assert f"download {OCI_NAME} {VERSION}" in result.stderr
        assert "TASK [" not in result.stderr
        assert "selinux on default: Enforcing" in result.stderr
        assert oci("run", BOX, "--", "getenforce").stdout == "Enforcing\n"
        assert not list((cache_dir() / "prebuilt").rglob("*.box")), "the downloaded blob stays only in Vagrant's store"
        rendered = oci("render", BOX, "-o", str(other / "plain")).stderr
        assert f"the prebuilt box {OCI_NAME} is in an OCI registry" in rendered
        vagrantfile = (other / "plain" / "Vagrantfile").read_text()
        assert "vagabond_prebuilt = " in vagrantfile and OCI_NAME in vagrantfile
    finally:
        oci("destroy", BOX, check=False)
    subprocess.run(
        ["vagrant", "box", "remove", "--force", "--provider", "libvirt", "--box-version", VERSION, OCI_NAME],
        check=True,
        capture_output=True,
    )
    done = json.loads(oci("gc", "--json").stdout)["orphans"]
    assert any(o["name"] == image and o["removed"] for o in done), done
    assert image not in virsh("vol-list", "default")


def test_check_idempotence_runs_every_playbook_on_the_prebuilt_vm(vagabond, apt_mirror):
    result = vagabond("provision", BOX, "--check-idempotence", "-e", f"@{apt_mirror}", timeout=3600)
    assert "TASK [Activate SELinux (Debian)]" in result.stderr, "the playbooks must really run on a prebuilt VM"
    assert "default: ok=" in result.stdout and " changed=0 " in result.stdout


STAMP = (
    "- hosts: all\n  become: true\n  tasks:\n"
    "    - name: Stamp the time\n      ansible.builtin.command: touch /var/tmp/stamp\n"
    "    - name: Read the stamp\n      ansible.builtin.command: cat /var/tmp/stamp\n      changed_when: false\n"
)


def test_a_task_that_is_not_idempotent_is_named(vagabond, apt_mirror):
    box_file = vagabond.cwd / "boxes" / f"{BOX}.yaml"
    original = box_file.read_text()
    (vagabond.cwd / "stamp.yml").write_text(STAMP)
    box_file.write_text(original + "playbooks: [stamp.yml]\n")
    try:
        result = vagabond("provision", BOX, "--check-idempotence", "-e", f"@{apt_mirror}", check=False, timeout=3600)
    finally:
        box_file.write_text(original)
    assert result.returncode == 11, result.stderr[-3000:]
    assert "the second provisioning run changed 1 task: default: Stamp the time" in result.stderr


def test_vagabond_test_runs_the_sequence_and_writes_junit(vagabond, apt_mirror, tmp_path):
    """up (from the prebuilt box), idempotence, verify, destroy, in a work directory of its own."""
    from tests.junit_schema import junit_schema

    schema = junit_schema()
    work, junit = tmp_path / "seq", tmp_path / "junit.xml"
    result = vagabond(
        "test",
        BOX,
        "--workdir",
        str(work),
        "--junit",
        str(junit),
        "-e",
        f"@{apt_mirror}",
        "--",
        "getenforce",
        timeout=5400,
    )
    assert "Enforcing\n" in result.stdout
    schema.validate(str(junit))
    broken = junit.read_text().replace("<testcase ", '<testcase nonsense="1" ', 1)
    assert not schema.is_valid(broken), "the schema must be able to say no"
    suite = ET.parse(junit).getroot().find("testsuite")
    assert [(c.get("name"), c.find("failure") is None) for c in suite] == [
        ("up", True),
        ("idempotence", True),
        ("verify: getenforce", True),
        ("destroy", True),
    ]
    after = vagabond("status", BOX, "--workdir", str(work), check=False)
    assert after.returncode == 6 and f"box '{BOX}' is not up here" in after.stderr, (
        "the destroy phase must remove the VM"
    )


def test_vagabond_test_fails_in_the_idempotence_phase_naming_the_task(vagabond, tmp_path):
    """A box whose playbook changes something on every run: exit 11, the task named on stderr and
    in the JUnit failure, the verify commands still run, the VM destroyed."""
    (vagabond.cwd / "stamp.yml").write_text(STAMP)
    stamp_box = vagabond.cwd / "boxes" / "stamp.yaml"
    stamp_box.write_text((vagabond.cwd / "boxes" / "debian12.yaml").read_text() + "playbooks: [stamp.yml]\n")
    work, junit = tmp_path / "stamp", tmp_path / "junit.xml"
    try:
        result = vagabond(
            "test", "stamp", "--workdir", str(work), "--junit", str(junit), "--", "true", check=False, timeout=3600
        )
        after = vagabond("status", "stamp", "--workdir", str(work), check=False)
    finally:
        stamp_box.unlink()
    assert result.returncode == 11, result.stderr[-3000:]
    assert "default: Stamp the time" in result.stderr
    cases = {c.get("name"): c for c in ET.parse(junit).getroot().find("testsuite")}
    assert list(cases) == ["up", "idempotence", "verify: true", "destroy"]
    assert cases["idempotence"].find("failure") is not None and "Stamp the time" in cases["idempotence"].find(
        "failure"
    ).get("message")
    assert all(cases[name].find("failure") is None for name in ("up", "verify: true", "destroy"))
    assert after.returncode == 6, "the destroy phase runs after a failed phase too"


def test_vms_from_the_same_box_have_their_own_identity(vagabond):
    twin = vagabond.cwd / "twin"
    vagabond("up", BOX, "--workdir", str(twin), timeout=1800)
    try:
        probe = ["sh", "-c", "cat /etc/machine-id; ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub"]
        one = vagabond("run", BOX, "--", *probe).stdout.split()
        two = vagabond("run", BOX, "--workdir", str(twin), "--", *probe).stdout.split()
        assert len(one[0]) == 32 and len(two[0]) == 32, "machine-id must be regenerated at first boot"
        assert one[0] != two[0], "two VMs share a machine-id"
        assert one[2] != two[2], "two VMs share an SSH host key"
    finally:
        twin_prefix = json.loads((twin / "state.json").read_text())["prefix"]
        # The twin's work directory goes away by hand: gc must find its VM, and only its VM.
        shutil.rmtree(twin)
        dry = json.loads(vagabond("gc", "--dry-run", "--json").stdout)["orphans"]
        assert ("domain", f"{twin_prefix}default") in {(o["kind"], o["name"]) for o in dry}
        assert ours(twin_prefix)["domains"], "--dry-run removed something"
        done = json.loads(vagabond("gc", "--json").stdout)["orphans"]
        assert all(o["removed"] for o in done), done
        assert not any(
            o["name"].startswith(status(vagabond)["machines"][0]["domain"].removesuffix("default")) for o in done
        )
    assert ours(twin_prefix) == {"domains": [], "volumes": [], "networks": []}
    assert status(vagabond)["machines"][0]["domain"] in network_users(MGMT_NETWORK), (
        "the network still serves the other VM"
    )
    assert status(vagabond)["machines"][0]["state"] == "running", "gc must leave a VM that has an owner alone"


def test_destroy_without_vagrant_state_leaves_nothing(vagabond):
    prefix = status(vagabond)["machines"][0]["domain"].removesuffix("default")
    shutil.rmtree(vagabond.cwd / ".vagabond" / BOX / ".vagrant")
    result = vagabond("destroy", BOX)
    assert f"domain {prefix}default" in result.stderr
    assert ours(prefix) == {"domains": [], "volumes": [], "networks": []}
    assert vagabond("status", BOX, check=False).returncode == 6, "nothing is up here any more"


def test_gc_removes_the_image_a_removed_box_left_in_the_pool(vagabond):
    """vagrant-libvirt leaves a box's image volume in the pool when the box is removed."""
    image = f"vagabond-VAGRANTSLASH-debian12-selinux_vagrant_box_image_{VERSION}_box.img"
    assert image in virsh("vol-list", "default"), "the prebuilt box's image should be in the pool"
    subprocess.run(
        [
            "vagrant",
            "box",
            "remove",
            "--force",
            "--provider",
            "libvirt",
            "--box-version",
            VERSION,
            "vagabond/debian12-selinux",
        ],
        check=True,
        capture_output=True,
    )
    assert image in virsh("vol-list", "default"), "vagrant box remove is expected to leave the image behind"
    done = json.loads(vagabond("gc", "--json").stdout)["orphans"]
    assert {
        "kind": "box image",
        "name": image,
        "removed": True,
        "reason": f"box vagabond/debian12-selinux {VERSION} is no longer in Vagrant's box store",
    } in done
    assert image not in virsh("vol-list", "default")
    assert json.loads(vagabond("gc", "--dry-run", "--json").stdout)["orphans"] == []


def test_interrupted_up_leaves_nothing_of_its_own_and_nothing_else_is_touched(vagabond):
    box = "debian12"
    theirs_volume, theirs_network = f"someone-elses-disk-{os.getpid()}.qcow2", f"someone-elses-net-{os.getpid()}"
    proc = vagabond.popen("up", box)
    deadline = time.monotonic() + 900
    prefix = None
    try:
        # Interrupt once the domain exists and the guest is booting: the most expensive moment to stop.
        while time.monotonic() < deadline and proc.poll() is None:
            wd = vagabond.cwd / ".vagabond" / box / "state.json"
            if wd.exists():
                prefix = json.loads(wd.read_text())["prefix"]
                if ours(prefix)["domains"]:
                    # A second CI job on this host makes a disk and a network meanwhile.
                    virsh("vol-create-as", "default", theirs_volume, "1M", "--format", "qcow2")
                    subprocess.run(
                        ["virsh", "-c", "qemu:///system", "net-define", "/dev/stdin"],
                        check=True,
                        input=f"<network><name>{theirs_network}</name></network>",
                        text=True,
                        capture_output=True,
                    )
                    time.sleep(5)
                    break
            time.sleep(1)
        assert prefix and proc.poll() is None, "up finished or failed before it could be interrupted"
        os.kill(proc.pid, signal.SIGINT)
        output, _ = proc.communicate(timeout=120)
        print(output[-3000:])
        assert proc.returncode == 130
        assert "interrupted by SIGINT during step 'vagrant up'" in output
        assert ours(prefix) == {"domains": [], "volumes": [], "networks": []}
        assert theirs_volume in virsh("vol-list", "default"), "another job's volume was removed"
        assert theirs_network in virsh("net-list", "--all", "--name").split(), "another job's network was removed"
        assert theirs_volume not in output and theirs_network not in output
    finally:
        subprocess.run(
            ["virsh", "-c", "qemu:///system", "vol-delete", "--pool", "default", theirs_volume], capture_output=True
        )
        subprocess.run(["virsh", "-c", "qemu:///system", "net-undefine", theirs_network], capture_output=True)

    vagabond("up", box, timeout=1800)
    assert vagabond("run", box, "--", "cat", "/etc/debian_version").stdout.startswith("12.")
    vagabond("destroy", box)
    assert ours(prefix) == {"domains": [], "volumes": [], "networks": []}
