"""`vagabond import`: a generic cloud image (cloud-init, no vagrant user) becomes a box that boots."""

from __future__ import annotations

import shutil

import pytest

from tests.e2e.conftest import cache_dir, ours
from tests.e2e.generic_image import build_generic_image
from vagabond import files
from vagabond.bases import diskimage
from vagabond.vm.workdir import domain_prefix

pytestmark = [pytest.mark.real, pytest.mark.slow]


def test_wrong_checksum_is_refused(vagabond, tmp_path):
    image = build_generic_image()
    result = vagabond("import", "test/bad", "--image", str(image), "--checksum", "sha256:" + "0" * 64, check=False)
    assert result.returncode == 1
    assert "refusing a changed or corrupt image" in result.stderr


def test_cloud_image_base_boots_with_vagrant_user(vagabond):
    image = build_generic_image()
    (vagabond.cwd / "boxes" / "debian12-cloud.yaml").write_text(
        "description: Debian 12 from a generic cloud image\n"
        f"base:\n  kind: image\n  image: {image}\n  checksum: sha256:{files.sha256_file(image)}\n  box: "
        "test/debian12-cloud\n"
        "guest: debian\nresources: {memory: 1024, cpus: 2, disk: 8}\n"
    )
    # Imports are cached per image: drop an earlier one so this run really imports.
    shutil.rmtree(cache_dir() / "boxes" / "test-debian12-cloud", ignore_errors=True)
    try:
        result = vagabond("up", "debian12-cloud", timeout=3600)
        assert "first boot with cloud-init" in result.stderr
        assert vagabond("run", "debian12-cloud", "--", "id", "-un").stdout == "vagrant\n"
        assert vagabond("run", "debian12-cloud", "--", "sudo", "-n", "id", "-u").stdout == "0\n"
        # cloud-init was cleaned before packaging: this boot found no seed and made no user of its own.
        assert vagabond("run", "debian12-cloud", "--", "test", "-s", "/etc/machine-id").returncode == 0
        # The VM's own boot is an ordinary one: cloud-init is off after the import, and nothing
        # waited for the network to be "online".
        stages = ["cloud-init-local", "cloud-init", "cloud-config", "cloud-final", "systemd-networkd-wait-online"]
        states = vagabond("run", "debian12-cloud", "--", "systemctl", "is-active", *stages, check=False).stdout
        assert states.split() == ["inactive"] * len(stages), states
        assert vagabond("run", "debian12-cloud", "--", "test", "-e", "/etc/cloud/cloud-init.disabled").returncode == 0
        # The image's layout, as distributions make them: GPT, GRUB's BIOS boot partition, root last,
        # grown by cloud-init's growpart from the image's 4 GiB to the 8 GiB the box asks for.
        layout = vagabond("run", "debian12-cloud", "--", "sudo", "-n", "sfdisk", "--dump", "/dev/vda").stdout
        assert "label: gpt" in layout and f"type={diskimage.BIOS_BOOT_PARTITION}" in layout
        root = vagabond("run", "debian12-cloud", "--", "findmnt", "-no", "SOURCE", "/").stdout.strip()
        assert root == "/dev/vda2", root
        size = int(vagabond("run", "debian12-cloud", "--", "df", "--output=size", "-B1", "/").stdout.split()[-1])
        assert size > 7 * 2**30, f"the root file system was not grown: {size} bytes"
    finally:
        prefix = domain_prefix("debian12-cloud", vagabond.cwd / ".vagabond" / "debian12-cloud")
        vagabond("destroy", "debian12-cloud")
    assert ours(prefix) == {"domains": [], "volumes": [], "networks": []}
