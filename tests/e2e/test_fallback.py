"""A prebuilt box whose download fails: Vagrant refuses it by checksum, nothing of it stays
installed, and up falls back to the base box, saying why."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.e2e.conftest import ours
from vagabond import build, process
from vagabond.bases import archive
from vagabond.definition import boxfile
from vagabond.vm import playbooks
from vagabond.vm.workdir import domain_prefix

pytestmark = [pytest.mark.real, pytest.mark.slow]

BOX = "debian12-tampered"
NAME = "vagabond-test/debian12-tampered"


def test_tampered_prebuilt_box_falls_back_to_the_base_box(vagabond, catalog_server, tmp_path):
    root, http = catalog_server
    definition = vagabond.cwd / "boxes" / f"{BOX}.yaml"
    definition.write_text(
        (vagabond.cwd / "boxes" / "debian12.yaml").read_text()
        + f"prebuilt:\n  name: {NAME}\n  catalog: {http}/tampered/metadata.json\n"
    )
    # A catalog entry that matches this definition, for a box file altered after publishing.
    process.check(["qemu-img", "create", "-q", "-f", "qcow2", tmp_path / "box.img", "16M"])
    box_file = archive.write_box(tmp_path / "box.img", tmp_path / "tampered.box", virtual_size_gib=1)
    digest = playbooks.definition_digest(boxfile.find_box(BOX, vagabond.cwd / "boxes"))
    build.describe(box_file, name=NAME, version="1.0.0", digest=digest)
    vagabond("publish", str(box_file), "--catalog", str(root / "tampered"), "--base-url", f"{http}/tampered")
    published = next((root / "tampered").rglob("*.box"))
    with open(published, "ab") as fh:
        fh.write(b"tampered")

    result = vagabond("up", BOX, timeout=1800)
    assert f"using prebuilt {NAME}" not in result.stderr
    assert f"using the base box with full provisioning: download of {NAME} 1.0.0 failed:" in result.stderr
    assert "checksum" in result.stderr.lower()
    try:
        assert vagabond("run", BOX, "--", "cat", "/etc/debian_version").stdout.startswith("12.")
        listed = subprocess.run(["vagrant", "box", "list"], capture_output=True, text=True).stdout
        assert NAME not in listed, "a box refused by checksum must leave nothing installed"
        assert json.loads((vagabond.cwd / ".vagabond" / BOX / "state.json").read_text())["prebuilt"] is None
    finally:
        prefix = domain_prefix(BOX, vagabond.cwd / ".vagabond" / BOX)
        vagabond("destroy", BOX)
        definition.unlink()
        shutil.rmtree(root / "tampered")
    assert ours(prefix) == {"domains": [], "volumes": [], "networks": []}
    assert not Path(vagabond.cwd / ".vagabond" / BOX / "state.json").exists()
