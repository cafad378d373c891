"""A box's warm image published with it to a directory catalog: listed in its version's entry
(key, URL, sha256, size), uploaded and read back with the box, pruned with it; a description that
names a file out of the box's directory, a link, or another file than it says is refused before
anything is uploaded, and so is what the VM layer's rule refuses."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.unit.catalog.test_transaction import catalog_doc, listing, make_box
from vagabond import files
from vagabond.catalog import catalogs, stores
from vagabond.errors import PublishError, UnsafePath, WarmError


def accept(path: Path, key: dict, digest: str) -> None:
    """The VM layer's rule, passed: what it checks is tests/unit/vm/test_warmcatalog.py's."""


KEY = {"format": 2, "domains": ["vagabond-x-12345678-default"], "qemu": "QEMU 7.2.0"}
DIGEST = "a" * 32


def with_warm(box: Path, content: bytes = b"a warm image", **changes) -> Path:
    """The warm image build --warm writes beside the box, named in its description."""
    warm = box.with_name(box.stem + ".warm.tar")
    warm.write_bytes(content)
    info_path = box.with_name(box.name + ".json")
    info = json.loads(info_path.read_text())
    info["warm"] = {
        "file": warm.name,
        "sha256": files.sha256_file(warm),
        "size": len(content),
        "key": KEY,
        "key_digest": DIGEST,
    } | changes
    info_path.write_text(json.dumps(info))
    return warm


def test_the_warm_image_goes_with_its_version_and_the_catalog_lists_its_key(tmp_path):
    cat = tmp_path / "cat"
    box = make_box(tmp_path, "1.0.0")
    warm = with_warm(box)
    checked = []
    result = catalogs.publish(box, str(cat), check_warm=lambda *given: checked.append(given))
    assert checked == [(warm, KEY, DIGEST)], "the VM layer's rule read the file"
    name = f"1.0.0/org-tiny-1.0.0-warm-{DIGEST}.tar"
    assert listing(cat) == ["1.0.0/org-tiny-1.0.0-libvirt.box", name, "metadata.json"]
    assert (cat / name).read_bytes() == warm.read_bytes()
    listed = catalog_doc(cat)["versions"][0]["vagabond"]["warm"]
    assert listed == [
        {
            "key": KEY,
            "key_digest": DIGEST,
            "url": (cat / name).as_uri(),
            "checksum_type": "sha256",
            "checksum": files.sha256_file(warm),
            "size": warm.stat().st_size,
        }
    ]
    assert result["warm"] == {"url": (cat / name).as_uri(), "key_digest": DIGEST, "size": warm.stat().st_size}


def test_no_warm_publishes_the_box_alone(tmp_path):
    cat = tmp_path / "cat"
    box = make_box(tmp_path, "1.0.0")
    with_warm(box)
    result = catalogs.publish(box, str(cat), warm=False)
    assert listing(cat) == ["1.0.0/org-tiny-1.0.0-libvirt.box", "metadata.json"] and result["warm"] is None
    assert "warm" not in catalog_doc(cat)["versions"][0]["vagabond"]


def refused_by_the_rule(path: Path, key: dict, digest: str) -> None:
    raise WarmError(f"{path} carries ssh_key")


@pytest.mark.parametrize(
    "case, said",
    [
        ("out of the directory", "is not a plain .tar file name beside the box"),
        ("absolute", "is not a plain .tar file name beside the box"),
        ("a link", "it is a symbolic link"),
        ("changed", "does not match the sha256 in the description"),
        ("no key", "has no key"),
        ("bad digest", "has no key digest"),
        ("the rule", "carries ssh_key"),
        ("no rule", "cannot be checked here"),
    ],
)
def test_a_warm_image_that_is_not_what_its_description_says_is_refused_before_any_upload(tmp_path, case, said):
    cat = tmp_path / "cat"
    box = make_box(tmp_path, "1.0.0")
    warm = with_warm(box)
    secret = tmp_path / "secret.tar"
    secret.write_bytes(b"someone else's")
    check = accept
    if case == "out of the directory":
        with_warm(box, file="../secret.tar")
    elif case == "absolute":
        with_warm(box, file=str(secret))
    elif case == "a link":
        warm.unlink()
        os.symlink(secret, warm)
        with_warm(box, content=b"someone else's")  # the description names the link's target's digest
        warm.unlink()
        os.symlink(secret, warm)
    elif case == "changed":
        warm.write_bytes(b"another image")
    elif case == "no key":
        with_warm(box, key="not a key")
    elif case == "bad digest":
        with_warm(box, key_digest="../../x")
    elif case == "the rule":
        check = refused_by_the_rule
    else:
        check = None
    with pytest.raises((PublishError, WarmError, UnsafePath), match=said):
        catalogs.publish(box, str(cat), check_warm=check)
    assert not cat.exists(), "nothing uploaded, no catalog made"
    assert secret.read_bytes() == b"someone else's"


def test_keep_prunes_a_versions_warm_image_with_its_box(tmp_path):
    cat = tmp_path / "cat"
    for version in ("1", "2"):
        box = make_box(tmp_path, version)
        with_warm(box, content=f"warm {version}".encode())
        catalogs.publish(box, str(cat), keep=1, check_warm=accept)
    assert listing(cat) == ["2/org-tiny-2-libvirt.box", f"2/org-tiny-2-warm-{DIGEST}.tar", "metadata.json"]


def test_a_warm_image_that_reads_back_wrong_takes_the_box_upload_with_it(tmp_path, monkeypatch):
    cat = tmp_path / "cat"
    catalogs.publish(make_box(tmp_path, "1"), str(cat))
    before, listed = catalog_doc(cat), listing(cat)
    real = stores.DirStore.read_back
    monkeypatch.setattr(
        stores.DirStore, "read_back", lambda self, key: (1, "0" * 64) if key.endswith(".tar") else real(self, key)
    )
    box = make_box(tmp_path, "2")
    with_warm(box)
    with pytest.raises(PublishError, match="reads back as 1 bytes"):
        catalogs.publish(box, str(cat), check_warm=accept)
    assert catalog_doc(cat) == before and listing(cat) == listed, "neither the box nor its warm image stays"
