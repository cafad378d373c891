"""The guest's key script, run for real by /bin/sh with its paths moved into a directory of the
test's: the SMBIOS string at boot, `rekey` from the guest agent, a reboot after it, a VM made from
a box that holds another VM's record, and writes that fail."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from vagabond.bases import guest

PREFIX = guest.AUTHORIZED_KEY_PREFIX
K0 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMCeHfOArptlIedHV2K1 vagabond"
K1 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAFlxNGIXNWVE3iiQVv3 vagabond"
K2 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBWYNxkVHU/+phpXGyZB vagabond"
BOX_KEY = "ssh-rsa AAAAB3NzaC1yc2EAAAABIwAAAQEA6NF8iallvQVp22WDkTkyrtvp9eWW6A8Y vagrant insecure public key"


class Guest:
    def __init__(self, root: Path):
        self.root = root
        self.dmi, self.ssh, self.state = root / "dmi", root / "home/.ssh", root / "var/lib/vagabond/authorized-key"
        self.host_keys = root / "etc/ssh"
        self.host_keys.mkdir(parents=True)
        script = guest.AUTHORIZED_KEY_SCRIPT
        for old, new in (
            ("dmi=/sys/firmware/dmi/entries\n", f"dmi={self.dmi}\n"),
            ("ssh_dir=/home/vagrant/.ssh\n", f"ssh_dir={self.ssh}\n"),
            ("owner=vagrant:\n", f"owner={os.getuid()}:{os.getgid()}\n"),
            (f"state={guest.AUTHORIZED_KEY_STATE}\n", f"state={self.state}\n"),
            ("host_keys=/etc/ssh\n", f"host_keys={self.host_keys}\n"),
        ):
            assert old in script, old
            script = script.replace(old, new)
        self.script = root / "vagabond-authorized-key"
        self.script.write_text(script)
        self.ssh.mkdir(parents=True)
        self.authorized().write_text(BOX_KEY + "\n")
        # The guest's restorecon: one that works, unless a test breaks it.
        self.bin = root / "bin"
        self.bin.mkdir()
        self.restorecon(0)
        # The guest's systemctl: records what it is asked (never the host's own).
        self.told = root / "systemctl-asked"
        tool = self.bin / "systemctl"
        tool.write_text(f'#!/bin/sh\necho "$@" >> {self.told}\n')
        tool.chmod(0o755)

    def restorecon(self, code: int) -> None:
        tool = self.bin / "restorecon"
        tool.write_text(f"#!/bin/sh\nexit {code}\n")
        tool.chmod(0o755)

    def env(self) -> dict:
        return {**os.environ, "PATH": f"{self.bin}:{os.environ['PATH']}"}

    def authorized(self) -> Path:
        return self.ssh / "authorized_keys"

    def smbios(self, key: str | None) -> None:
        """The OEM strings libvirt's <sysinfo> gives (type 11, as the kernel shows it raw)."""
        entry = self.dmi / "11-0"
        entry.mkdir(parents=True, exist_ok=True)
        strings = b"" if key is None else (PREFIX + key).encode()
        (entry / "raw").write_bytes(b"\x0b\x05\x00\x01\x01" + strings + b"\x00\x00")

    def boot(self) -> subprocess.CompletedProcess:
        return subprocess.run(["/bin/sh", str(self.script)], capture_output=True, text=True, timeout=30, env=self.env())

    def rekey(self, line: str, *more: str) -> subprocess.CompletedProcess:
        argv = ["/bin/sh", str(self.script), "rekey", *more]
        return subprocess.run(argv, input=line + "\n", capture_output=True, text=True, timeout=30, env=self.env())

    def key(self) -> str:
        return self.authorized().read_text().strip()


@pytest.fixture
def vm(tmp_path) -> Guest:
    return Guest(tmp_path)


def test_the_smbios_key_at_boot_a_new_key_from_the_agent_and_a_reboot_that_keeps_it(vm):
    vm.smbios(K0)
    assert vm.boot().returncode == 0 and vm.key() == K0
    assert vm.authorized().stat().st_mode & 0o777 == 0o600
    done = vm.rekey(K1)
    assert done.returncode == 0, done.stderr
    assert vm.key() == K1 and vm.state.read_text() == f"{K0}\n{K1}\n"
    assert vm.boot().returncode == 0 and vm.key() == K1, "a reboot keeps the new key, not the SMBIOS one"


def test_a_vm_made_from_a_box_that_holds_another_vms_record_takes_its_own_string(vm):
    vm.smbios(K0)
    vm.rekey(K1)
    vm.smbios(K2)  # another VM: another string
    assert vm.boot().returncode == 0 and vm.key() == K2 and not vm.state.exists()


def test_without_a_string_the_box_key_stays_and_a_record_of_another_vm_goes(vm):
    vm.smbios(None)  # plain `vagrant up`
    assert vm.boot().returncode == 0 and vm.key() == BOX_KEY
    vm.state.parent.mkdir(parents=True)
    vm.state.write_text(f"{K0}\n{K1}\n")
    assert vm.boot().returncode == 0 and vm.key() == BOX_KEY and not vm.state.exists()


@pytest.mark.parametrize("record", ["", f"{K0}\nnot a key\n"])
def test_a_record_cut_short_or_damaged_keeps_the_key_the_guest_has(vm, record):
    vm.smbios(K0)
    vm.rekey(K1)
    vm.state.write_text(record)
    assert vm.boot().returncode == 0 and vm.key() == K1, "never back to the exporter's key"


@pytest.mark.parametrize(
    "line", ["", "ssh-ed25519 AAAA vagabond\nssh-rsa BBBB evil", 'command="sh" ssh-ed25519 AAAA x', "ssh-dss AAAA x"]
)
def test_rekey_refuses_what_is_not_one_public_key_line_and_changes_nothing(vm, line):
    vm.smbios(K0)
    vm.boot()
    done = vm.rekey(line)
    if "\n" in line:  # only the first line counts: a valid first line is taken alone
        assert done.returncode == 0 and vm.key() == "ssh-ed25519 AAAA vagabond"
        return
    assert done.returncode == 2 and "not one OpenSSH public key line" in done.stderr
    assert vm.key() == K0 and not vm.state.exists()


def test_a_rekey_whose_write_fails_says_so_and_the_host_keeps_the_network_unplugged(vm):
    vm.smbios(K0)
    vm.boot()
    (vm.ssh / "authorized_keys.new").mkdir()  # what the write cannot replace
    done = vm.rekey(K1)
    assert done.returncode != 0, "a failed write is not a new key"
    assert vm.key() == K0


def test_a_rekey_whose_record_cannot_be_written_fails_and_a_reboot_keeps_the_key_it_had(vm):
    vm.smbios(K0)
    vm.boot()
    vm.state.parent.mkdir(parents=True)
    Path(f"{vm.state}.new").mkdir()  # what the record's write cannot replace
    assert vm.rekey(K1).returncode != 0
    assert vm.boot().returncode == 0 and vm.key() == K0


def test_a_rekey_without_the_smbios_string_fails_rather_than_keep_a_record_a_reboot_would_drop(vm):
    vm.smbios(None)
    done = vm.rekey(K1)
    assert done.returncode == 1 and "no vagabond key string" in done.stderr
    assert vm.key() == BOX_KEY and not vm.state.exists()


def test_a_restorecon_that_fails_fails_the_rekey(vm):
    vm.smbios(K0)
    vm.boot()
    vm.restorecon(1)
    assert vm.rekey(K1).returncode == 1


def test_a_string_that_is_not_a_key_leaves_the_box_key_at_boot(vm):
    vm.smbios('ssh-ed25519 AAAA x" && touch /tmp/owned')
    assert vm.boot().returncode == 0 and vm.key() == BOX_KEY


def test_rekey_with_host_keys_gives_the_vm_new_ones_of_the_kinds_it_has_and_tells_sshd(vm):
    """Every VM restored from one image would share the saved host keys: a restore's rekey makes
    new ones (save's probe, without --host-keys, leaves them); a kind ssh-keygen refuses stays."""
    vm.smbios(K0)
    for kind in ("ed25519", "rsa"):
        subprocess.run(
            ["ssh-keygen", "-q", "-t", kind, "-N", "", "-f", str(vm.host_keys / f"ssh_host_{kind}_key")], check=True
        )
    (vm.host_keys / "ssh_host_dsa_key").write_text("a key of a kind ssh-keygen no longer makes\n")
    (vm.host_keys / "ssh_host_xmss_key").write_text("a kind this ssh-keygen cannot make\n")
    before = {p.name: p.read_bytes() for p in vm.host_keys.iterdir()}
    probe = vm.rekey(K1)
    assert probe.returncode == 0, probe.stderr
    assert {p.name: p.read_bytes() for p in vm.host_keys.iterdir()} == before, "save's probe renews nothing"
    assert not vm.told.exists()
    done = vm.rekey(K2, "--host-keys")
    assert done.returncode == 0, done.stderr
    after = {p.name: p.read_bytes() for p in vm.host_keys.iterdir()}
    assert sorted(after) == sorted(before), "the same kinds of key, and nothing left half-made"
    for name in ("ssh_host_ed25519_key", "ssh_host_ed25519_key.pub", "ssh_host_rsa_key", "ssh_host_rsa_key.pub"):
        assert after[name] != before[name], name
    assert after["ssh_host_dsa_key"] == before["ssh_host_dsa_key"]
    assert after["ssh_host_xmss_key"] == before["ssh_host_xmss_key"]
    assert (vm.host_keys / "ssh_host_ed25519_key").stat().st_mode & 0o077 == 0
    assert (vm.host_keys / "ssh_host_ed25519_key.pub").stat().st_mode & 0o777 == 0o644
    listed = subprocess.run(["ssh-keygen", "-l", "-f", str(vm.host_keys / "ssh_host_ed25519_key")], capture_output=True)
    assert listed.returncode == 0, "a key sshd can load"
    assert vm.told.read_text() == "try-reload-or-restart ssh.service sshd.service\n", "sshd loads them anew"
    assert vm.key() == K2
