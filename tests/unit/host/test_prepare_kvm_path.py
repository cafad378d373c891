"""The path a hosted x64 runner takes, which no VM here can take (this host's KVM runs no ordinary
guest): the udev rule prepare writes, applied by a udev stand-in, and the kvm decision after it;
and the cloud-image import's first boot at the process seam, its qemu argv for each driver."""

from __future__ import annotations

import hashlib
import json
import subprocess

import pytest

from tests.conftest import stub_programs
from vagabond.bases import cloudimage
from vagabond.host import detect, prepare

# qemu-system-x86_64's stand-in: records its argv, writes what the import boot's finish script
# prints on the serial console named by -serial file:PATH, and powers off (exits 0).
QEMU = """#!/bin/sh
printf '%s\\n' "$@" > "$QEMU_ARGV"
for a; do case "$a" in file:*) printf 'systemd[1]: Started vagabond-finish.service\\n' > "${a#file:}";; esac; done
"""
# cloud-localds' stand-in: an empty seed image where it is asked for.
LOCALDS = '#!/bin/sh\n: > "$1"\n'


@pytest.fixture
def image(tmp_path):
    """A qcow2 "cloud image" (a real one, 1 GiB of nothing) and its sha256."""
    path = tmp_path / "cloud.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), "1G"], check=True)
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize(("driver", "accel"), [("kvm", ["-accel", "kvm", "-cpu", "host"]), ("qemu", ["-accel", "tcg"])])
def test_the_import_boots_the_image_with_the_drivers_accelerator(tmp_path, monkeypatch, image, driver, accel):
    """The kvm decision (an x64 runner after prepare) gives qemu KVM and the host's CPU; emulation, TCG.
    Either way the disk is a copy, the seed read-only, and the guest has no network."""
    path, sha = image
    stub_programs(tmp_path, monkeypatch, **{"qemu-system-x86_64": QEMU, "cloud-localds": LOCALDS})
    monkeypatch.setenv("QEMU_ARGV", str(tmp_path / "argv"))
    monkeypatch.setenv("VAGABOND_CACHE", str(tmp_path / "cache"))
    decision = detect.Decision(driver, "the runner's")
    monkeypatch.setattr(detect, "probe_and_decide", lambda option=None, **kw: decision)
    made = cloudimage.import_image("test/image", str(path), checksum=f"sha256:{sha}", out=tmp_path / "out")
    argv = (tmp_path / "argv").read_text().splitlines()
    assert argv[: len(accel)] == accel
    assert "-accel" not in argv[len(accel) :], "one accelerator only"
    drives = [argv[i + 1] for i, a in enumerate(argv) if a == "-drive"]
    assert drives[0] != f"file={path}" and drives[0].endswith("/disk.qcow2,if=virtio,format=qcow2,discard=unmap"), (
        "a copy of the image, never the image itself"
    )
    assert drives[1].endswith("/seed.iso,if=virtio,format=raw,readonly=on")
    assert argv[argv.index("-nic") + 1] == "none"
    assert made.box_file.is_file() and json.loads(made.catalog.read_text())["name"] == "test/image"
    assert not list((tmp_path / "out").glob("vagabond-import-*")), "the scratch directory is gone"


# udevadm's stand-in for the rule prepare writes: on `trigger --name-match=kvm`, the MODE of each
# KERNEL=="kvm" rule in the rules file goes onto the device node, as udevd would apply it.
UDEVADM = """#!/bin/sh
echo "$*" >> "$UDEV_CALLS"
case "$*" in
  *trigger*--name-match=kvm*)
    mode=$(sed -n 's/.*KERNEL=="kvm".*MODE="\\([0-7]*\\)".*/\\1/p' "$UDEV_RULES" | tail -n1)
    [ -n "$mode" ] && chmod "$mode" "$KVM_NODE" ;;
esac
exit 0
"""


def test_a_closed_kvm_on_a_capable_runner_is_opened_by_the_rule_and_the_driver_becomes_kvm(tmp_path, monkeypatch):
    """GitHub's x64 runner: svm in the CPU flags, kvm_amd loaded, /dev/kvm root:kvm 0660 and the
    runner not in kvm. prepare writes the rule, udev (its stand-in) applies it, and the next probe,
    which finds the device open to everyone, decides kvm."""
    node = tmp_path / "kvm"
    node.touch()
    node.chmod(0o660)
    rules = tmp_path / "99-vagabond-kvm.rules"
    stub_programs(tmp_path, monkeypatch, udevadm=UDEVADM)
    monkeypatch.setenv("UDEV_CALLS", str(tmp_path / "udev-calls"))
    monkeypatch.setenv("UDEV_RULES", str(rules))
    monkeypatch.setenv("KVM_NODE", str(node))
    monkeypatch.setattr(prepare, "UDEV_RULE", rules)

    def runner_probe(**kw):
        """What the runner user finds: the node's mode decides whether it opens (root opens anything)."""
        opens = node.stat().st_mode & 0o006 == 0o006
        return detect.HostFacts(
            kvm_device="ok" if opens else "denied",
            cpu_flags=frozenset({"svm", "lm"}),
            modules=frozenset({"kvm", "kvm_amd"}),
        )

    monkeypatch.setattr(detect, "probe_host", runner_probe)
    before = detect.decide_driver(runner_probe())
    assert before.driver == "qemu" and "permission denied" in before.reason
    action = prepare.ensure_kvm_access(node)
    assert oct(node.stat().st_mode & 0o777) == "0o666"
    assert action.changed and "driver now kvm" in action.detail, action.detail
    assert (tmp_path / "udev-calls").read_text().splitlines()[:2] == [
        "control --reload-rules",
        "trigger --name-match=kvm",
    ]
    assert detect.decide_driver(runner_probe()).driver == "kvm"
    again = prepare.ensure_kvm_access(node)
    assert not again.changed and again.detail.endswith("driver kvm"), "a second prepare changes nothing"
