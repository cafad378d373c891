"""Warm images and catalogs, without a VM: what may be published (the VM's disks and memory
only, never a key or a VM given -e values), and `up` taking the catalog's warm image in through a
real directory catalog: the one whose key matches, downloaded, checked and taken in as
`--warm-from` takes one in, the catalog's box recorded as the VM's source; one line when none
matches. (tests/e2e/test_lifecycle.py builds, publishes and restores a real one.)"""

from __future__ import annotations

import copy
import gzip
import io
import json
import tarfile

import pytest

from tests.conftest import write_box
from tests.unit.vm.test_warmarchive import DISK, MEMORY, archive, left_behind, manifest_meta, world  # noqa: F401 (a fixture)
from vagabond import files, paths
from vagabond.bases import archive as box_archive
from vagabond.catalog import catalogs
from vagabond.definition import boxfile
from vagabond.errors import WarmError
from vagabond.host.detect import Decision
from vagabond.vm import lifecycle, playbooks, warmcatalog, warmimage
from vagabond.vm.lifecycle import UpOptions, UpRun
from vagabond.vm.workdir import Workdir


def test_only_a_keyless_image_of_a_vm_given_no_secrets_may_be_published(world, tmp_path):  # noqa: F811
    box, wd, pool, host, wanted = world
    meta = manifest_meta(wd, wanted)
    digest = warmimage.key_digest(wanted)
    warmcatalog.check_publishable(archive(tmp_path / "good.tar", meta), wanted, digest)
    without_agent = copy.deepcopy(meta)
    without_agent["machines"][0]["agent"] = False
    with pytest.raises(WarmError, match="carries ssh_key: a warm image in a catalog must open no VM"):
        warmcatalog.check_publishable(archive(tmp_path / "key.tar", without_agent), wanted, digest)
    m = meta["machines"][0]
    listed = {m["frozen"][0]: DISK, m["memory_image"] + ".gz": gzip.compress(MEMORY)}
    smuggled = archive(tmp_path / "smuggled.tar", meta, listed)
    with tarfile.open(smuggled, "a") as tar:  # a member the manifest does not list, after those it does
        info = tarfile.TarInfo("ssh_key")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"KEY\n"))
    with pytest.raises(WarmError, match="carries ssh_key"):
        warmcatalog.check_publishable(smuggled, wanted, digest)
    given = manifest_meta(wd, wanted | {"provisioning": wanted["provisioning"] | {"extra_vars": "f" * 64}})
    with pytest.raises(WarmError, match="provisioned with -e values, which may be secrets: never published"):
        warmcatalog.check_publishable(
            archive(tmp_path / "e.tar", given), given["key"], warmimage.key_digest(given["key"])
        )
    with pytest.raises(WarmError, match="not the warm image its box description names"):
        warmcatalog.check_publishable(archive(tmp_path / "other.tar", meta), wanted | {"driver": "kvm"}, digest)
    with pytest.raises(WarmError, match="not the warm image its box description names"):
        warmcatalog.check_publishable(archive(tmp_path / "digest.tar", meta), wanted, "0" * 32)
    (tmp_path / "junk.tar").write_bytes(b"junk")
    with pytest.raises(WarmError, match="is not a whole warm image archive"):
        warmcatalog.check_publishable(tmp_path / "junk.tar", wanted, digest)


@pytest.fixture
def cataloged(world, project, tmp_path, monkeypatch):  # noqa: F811
    """The world's box with a prebuilt section naming a directory catalog that holds a version
    built from its definition, with a warm image of its VM."""
    _, wd, pool, host, wanted = world
    cat = tmp_path / "cat"
    url = (cat / "metadata.json").as_uri()
    write_box(project, "wx", f"description: x\nbase: {{box: org/base}}\nprebuilt: {{name: org/wx, catalog: '{url}'}}\n")
    box = boxfile.find_box("wx", project / "boxes")
    assert Workdir.for_box(box).prefix == wd.prefix
    (tmp_path / "box.img").write_bytes(b"disk")
    made = box_archive.write_box(tmp_path / "box.img", tmp_path / "wx-1.0.0.box", virtual_size_gib=1)
    warm = archive(tmp_path / "wx-1.0.0.warm.tar", manifest_meta(wd, wanted))
    made.with_name(made.name + ".json").write_text(
        json.dumps(
            {
                "name": "org/wx",
                "version": "1.0.0",
                "definition_digest": playbooks.definition_digest(box),
                "warm": {
                    "file": warm.name,
                    "sha256": files.sha256_file(warm),
                    "size": warm.stat().st_size,
                    "key": wanted,
                    "key_digest": warmimage.key_digest(wanted),
                },
            }
        )
    )
    catalogs.publish(made, str(cat), check_warm=warmcatalog.check_publishable)
    monkeypatch.setattr(warmimage, "key_for", lambda *a, **k: copy.deepcopy(wanted))
    return box, wd, pool, wanted, url


def test_up_takes_the_catalogs_warm_image_in_and_restores_it(cataloged, capsys):
    box, wd, pool, wanted, url = cataloged
    run = UpRun(box, wd, UpOptions(), Decision("qemu", "test"), None)
    meta = lifecycle.warm_image(run)
    assert meta is not None and meta["imported"] is True, capsys.readouterr().err
    assert meta["state"]["prebuilt"] == {"name": "org/wx", "version": "1.0.0", "url": url}
    assert "take in the warm image of org/wx 1.0.0" in capsys.readouterr().err
    downloads = files.make_dirs(paths.cache_dir() / "warm-downloads")
    assert list(downloads.iterdir()) == [], "the download goes once taken in"
    assert lifecycle.warm_image(run) == meta, "the image here matches now: nothing is downloaded again"
    assert "take in" not in capsys.readouterr().err


def test_up_boots_cold_and_says_why_when_no_warm_image_in_the_catalog_matches(cataloged, capsys, monkeypatch):
    box, wd, pool, wanted, url = cataloged
    monkeypatch.setattr(warmimage, "key_for", lambda *a, **k: copy.deepcopy(wanted) | {"driver": "kvm"})
    run = UpRun(box, wd, UpOptions(), Decision("kvm", "test"), None)
    assert lifecycle.warm_image(run) is None
    said = " ".join(capsys.readouterr().err.split())
    assert (
        "booting cold: the warm images of org/wx 1.0.0 in its catalog are of other VMs (1; the driver differs "
        "(saved qemu, now kvm))" in said
    )
    assert left_behind(wd, pool) == []
    run.opts.warm = False  # --cold: the catalog is not asked
    assert lifecycle.warm_image(run) is None and capsys.readouterr().err == ""
