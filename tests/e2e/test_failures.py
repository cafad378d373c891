"""A guest that never boots: up fails within its boot timeout, keeps the console log, cleans up."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.e2e.conftest import ours
from vagabond import process
from vagabond.bases import archive
from vagabond.vm.workdir import domain_prefix

pytestmark = [pytest.mark.real, pytest.mark.slow]


def test_guest_that_never_gets_an_ip_fails_in_time_and_leaves_nothing(vagabond, tmp_path):
    # An empty disk: SeaBIOS finds nothing to boot, so no DHCP lease ever comes.
    process.check(["qemu-img", "create", "-q", "-f", "qcow2", tmp_path / "box.img", "64M"])
    box = archive.write_box(tmp_path / "box.img", tmp_path / "noboot.box", virtual_size_gib=1)
    subprocess.run(
        ["vagrant", "box", "add", "--force", "--name", "vagabond-test/noboot", str(box)],
        check=True,
        capture_output=True,
    )
    (vagabond.cwd / "boxes" / "noboot.yaml").write_text(
        "description: a box that never boots\nbase: {box: vagabond-test/noboot}\nresources: "
        "{memory: 256, cpus: 1, disk: 1}\n"
    )
    result = vagabond(
        "up", "noboot", "--boot-timeout", "30", "--logs-on-failure", str(tmp_path / "logs"), check=False, timeout=600
    )
    assert result.returncode != 0
    assert "error: vagrant up failed:" in result.stderr
    wd = vagabond.cwd / ".vagabond" / "noboot"
    logs = sorted(p.name for p in (wd / "logs").iterdir())
    assert any(name.endswith("-serial.log") for name in logs), logs
    # The logs a person needs came back, collected before the failed run cleaned up.
    summary = json.loads((tmp_path / "logs" / "noboot" / "summary.json").read_text())
    items = {i["name"]: i for i in summary["items"]}
    assert items["default-serial.log"]["ok"] and items["vagrant.log"]["ok"] and items["Vagrantfile"]["ok"]
    assert "Waiting for domain to get an IP address" in (tmp_path / "logs" / "noboot" / "vagrant.log").read_text()
    assert not items["default-journal.log"]["ok"], "a guest that never booted has no journal to give"
    prefix = domain_prefix("noboot", vagabond.cwd / ".vagabond" / "noboot")
    assert ours(prefix) == {"domains": [], "volumes": [], "networks": []}
    subprocess.run(["vagrant", "box", "remove", "--force", "vagabond-test/noboot"], capture_output=True)
