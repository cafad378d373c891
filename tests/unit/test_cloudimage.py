"""`vagabond import` pieces: the NoCloud user-data and the image checksum gate."""

from __future__ import annotations

import hashlib
import json

import pytest

from vagabond import cloudimage, images
from vagabond.errors import UsageError, VagabondError


def test_user_data_makes_the_vagrant_user_and_a_self_cleaning_unit():
    text = cloudimage.user_data()
    assert text.startswith("#cloud-config\n")
    config = json.loads(text.split("\n", 1)[1])
    vagrant = next(u for u in config["users"] if isinstance(u, dict))
    assert vagrant["name"] == "vagrant" and vagrant["sudo"] == "ALL=(ALL) NOPASSWD:ALL"
    assert vagrant["ssh_authorized_keys"] == [images.INSECURE_PUBLIC_KEY]
    finish = next(f for f in config["write_files"] if f["path"].endswith("vagabond-finish.service"))
    assert "After=cloud-final.service" in finish["content"] and "cloud-init clean --logs" in finish["content"]
    assert "rm -f /var/lib/dbus/machine-id /etc/ssh/ssh_host_*" in finish["content"]


def test_fetch_checks_the_checksum(tmp_path):
    image = tmp_path / "img.qcow2"
    image.write_bytes(b"image bytes")
    good = "sha256:" + hashlib.sha256(b"image bytes").hexdigest()
    assert cloudimage.fetch(str(image), good, tmp_path) == image
    assert cloudimage.fetch(image.as_uri(), None, tmp_path) == image
    with pytest.raises(VagabondError, match="refusing a changed or corrupt image"):
        cloudimage.fetch(str(image), "sha256:" + "0" * 64, tmp_path)
    with pytest.raises(UsageError, match="does not exist"):
        cloudimage.fetch(str(tmp_path / "nope.qcow2"), None, tmp_path)
