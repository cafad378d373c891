"""A cloud image's import (cloudimage.import_image) at the process seam (tests/fake_process.py):
the programs it runs, in order, with the disk grown before the first boot; and when the first boot
fails or ends before cloud-init finished, one line naming the console, and nothing left but it."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from vagabond.bases import cloudimage
from vagabond.errors import CommandFailed, VagabondError
from vagabond.host import detect

FINISHED = "systemd[1]: Started vagabond-finish.service\n"


@pytest.fixture
def importing(processes, monkeypatch, tmp_path):
    """An image with its sha256, and the programs answering as on a real host; the first boot
    writes ``console`` to the serial file it is given."""
    image = tmp_path / "cloud.qcow2"
    image.write_bytes(b"a cloud image")
    monkeypatch.setenv("VAGABOND_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(detect, "probe_and_decide", lambda option=None, **kw: detect.Decision("qemu", "no KVM here"))
    sizes = {"virtual": 2 * 2**30}
    processes.answer("qemu-img", "convert", effect=lambda argv: Path(argv[-1]).write_bytes(b"qcow2"))
    processes.answer("qemu-img", "info", stdout=json.dumps({"virtual-size": sizes["virtual"]}))
    processes.answer("qemu-img", "resize")
    processes.answer("cloud-localds", effect=lambda argv: Path(argv[1]).write_bytes(b"seed"))
    console = {"text": FINISHED}

    def boot(argv):
        serial = next(a for a in argv if a.startswith("file:") and a.endswith(".log"))
        Path(serial.removeprefix("file:")).write_text(console["text"])

    processes.answer("qemu-system-x86_64", effect=boot)
    return image, hashlib.sha256(image.read_bytes()).hexdigest(), console, tmp_path / "out", boot


def test_an_import_grows_the_disk_boots_once_without_network_and_writes_the_box(processes, importing):
    image, sha, _, out, _ = importing
    made = cloudimage.import_image("test/image", str(image), checksum=f"sha256:{sha}", out=out, disk_gib=8)
    asked = [a for a in processes.calls if a[0] in ("qemu-img", "cloud-localds", "qemu-system-x86_64")]
    order = [a[0] if a[0] == "cloud-localds" else " ".join(a[:2]) for a in asked]
    assert order == [
        "qemu-img convert",
        "qemu-img info",
        "qemu-img resize",
        "cloud-localds",
        "qemu-system-x86_64 -accel",
        "qemu-img convert",
        "qemu-img info",
    ]
    assert processes.asked("qemu-img", "resize")[0][-1] == "8G"
    boot = processes.asked("qemu-system-x86_64")[0]
    assert boot[boot.index("-nic") + 1] == "none" and boot[1:3] == ["-accel", "tcg"]
    seed = processes.asked("cloud-localds")[0][1]
    assert seed.endswith("/seed.iso") and f"file={seed},if=virtio,format=raw,readonly=on" in boot, "the seed it made"
    assert made.box_file.is_file() and json.loads(made.catalog.read_text())["name"] == "test/image"
    assert sorted(p.name for p in out.iterdir()) == ["import-console.log", "metadata.json", "test-image.box"]


def test_a_first_boot_that_fails_names_the_console_and_leaves_no_box(processes, importing):
    image, sha, console, out, boot = importing
    console["text"] = "Kernel panic - not syncing: Out of memory\n"
    processes.answer("qemu-system-x86_64", returncode=1, stderr="qemu-system-x86_64: guest crashed", effect=boot)
    with pytest.raises(CommandFailed, match="guest crashed") as failed:
        cloudimage.import_image("test/image", str(image), checksum=f"sha256:{sha}", out=out)
    assert str(out / "import-console.log") in failed.value.hint
    assert [p.name for p in out.iterdir()] == ["import-console.log"], "the console kept; no scratch, box, catalog"
    assert "Kernel panic" in (out / "import-console.log").read_text()


def test_a_guest_that_powers_off_before_cloud_init_finished_is_refused(processes, importing):
    image, sha, console, out, _ = importing
    console["text"] = "systemd[1]: Reached target Power-Off.\n"
    with pytest.raises(VagabondError, match="powered off before cloud-init finished; see .*import-console.log"):
        cloudimage.import_image("test/image", str(image), checksum=f"sha256:{sha}", out=out)
    assert [p.name for p in out.iterdir()] == ["import-console.log"], "only the console, for a person to read"


def test_an_image_whose_checksum_differs_runs_nothing(processes, importing):
    image, _, _, out, _ = importing
    with pytest.raises(VagabondError, match="sha256"):
        cloudimage.import_image("test/image", str(image), checksum="sha256:" + "0" * 64, out=out)
    assert processes.calls == [] and not out.exists()
