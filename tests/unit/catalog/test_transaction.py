"""Publishing to a directory catalog: every bad input is refused before anything is uploaded,
nothing outside the catalog is touched, and no failure leaves a file the catalog does not name."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from vagabond import files
from vagabond.bases import archive
from vagabond.catalog import catalogs, stores
from vagabond.cli.app import app
from vagabond.errors import PublishError, UsageError

runner = CliRunner()
NAME = "org/tiny"


def make_box(tmp: Path, version: str, content: bytes = b"disk") -> Path:
    (tmp / "box.img").write_bytes(content)
    box = archive.write_box(tmp / "box.img", tmp / f"tiny-{version}-{len(content)}.box", virtual_size_gib=1)
    box.with_name(box.name + ".json").write_text(
        json.dumps({"name": NAME, "version": version, "sha256": files.sha256_file(box), "definition_digest": "d" * 64})
    )
    return box


def listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))


def catalog_doc(root: Path) -> dict:
    return json.loads((root / "metadata.json").read_text())


def test_publish_then_the_catalog_names_exactly_the_files_it_holds(tmp_path):
    cat = tmp_path / "cat"
    result = catalogs.publish(make_box(tmp_path, "1.0.0"), str(cat))
    assert listing(cat) == ["1.0.0/org-tiny-1.0.0-libvirt.box", "metadata.json"]
    assert result["url"] == (cat / "1.0.0/org-tiny-1.0.0-libvirt.box").as_uri()


def test_keep_never_deletes_outside_the_catalog(tmp_path):
    cat = tmp_path / "cat"
    cat.mkdir()
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    (cat / "metadata.json").write_text(
        json.dumps(
            {
                "name": NAME,
                "versions": [{"version": "1", "providers": [{"name": "libvirt", "url": cat.as_uri() + "/../victim"}]}],
            }
        )
    )
    result = catalogs.publish(make_box(tmp_path, "2"), str(cat), keep=1)
    assert victim.read_text() == "keep me"
    assert result["pruned"] == ["1"] and [v["version"] for v in catalog_doc(cat)["versions"]] == ["2"]


@pytest.mark.parametrize("version", ["../../x", "latest", "1.0.beta"])
def test_a_version_vagrant_cannot_order_is_refused_before_any_upload(tmp_path, version):
    cat = tmp_path / "cat"
    with pytest.raises(UsageError, match="is not one Vagrant can order"):
        catalogs.publish(make_box(tmp_path, "1.0.0"), str(cat), version=version)
    assert not cat.exists() and not (tmp_path / "x").exists()


def test_a_catalog_vagabond_cannot_order_is_refused_before_any_upload(tmp_path):
    cat = tmp_path / "cat"
    cat.mkdir()
    (cat / "metadata.json").write_text(
        json.dumps({"name": NAME, "versions": [{"version": "1.0.beta", "providers": []}]})
    )
    with pytest.raises(PublishError, match="has no version of digits and dots"):
        catalogs.publish(make_box(tmp_path, "1.0.1"), str(cat))
    assert listing(cat) == ["metadata.json"], "a refused publish must leave no file behind"


def test_force_uploads_beside_the_live_file_then_switches_and_removes_the_old_one(tmp_path):
    cat = tmp_path / "cat"
    catalogs.publish(make_box(tmp_path, "1.0.0", b"old"), str(cat))
    old_sha = catalog_doc(cat)["versions"][0]["providers"][0]["checksum"]
    new = make_box(tmp_path, "1.0.0", b"new contents")
    result = catalogs.publish(new, str(cat), force=True)
    provider = catalog_doc(cat)["versions"][0]["providers"][0]
    assert provider["checksum"] == files.sha256_file(new) != old_sha
    assert result["url"] == provider["url"] and result["url"].endswith(f"-{provider['checksum'][:12]}-libvirt.box")
    assert listing(cat) == ["1.0.0/" + Path(provider["url"]).name, "metadata.json"], "the replaced file is gone"


def test_a_failed_read_back_leaves_the_catalog_and_its_file_as_they_were(tmp_path, monkeypatch):
    cat = tmp_path / "cat"
    catalogs.publish(make_box(tmp_path, "1.0.0", b"old"), str(cat))
    before, listed = catalog_doc(cat), listing(cat)
    monkeypatch.setattr(stores.DirStore, "read_back", lambda self, key: (1, "0" * 64))
    with pytest.raises(PublishError, match="reads back as 1 bytes"):
        catalogs.publish(make_box(tmp_path, "1.0.0", b"new"), str(cat), force=True)
    assert catalog_doc(cat) == before and listing(cat) == listed


def test_keep_refuses_a_version_it_would_prune_at_once(tmp_path):
    cat = tmp_path / "cat"
    for v in ("3", "4"):
        catalogs.publish(make_box(tmp_path, v), str(cat))
    with pytest.raises(
        PublishError, match=r"^org/tiny 2 is older than the 2 newest versions in .*: --keep 2 would prune it at once"
    ):
        catalogs.publish(make_box(tmp_path, "2"), str(cat), keep=2)
    assert [v["version"] for v in catalog_doc(cat)["versions"]] == ["3", "4"] and len(listing(cat)) == 3


def test_a_version_pruned_by_a_concurrent_publish_is_reported_and_its_file_removed(tmp_path, monkeypatch):
    cat = tmp_path / "cat"
    catalogs.publish(make_box(tmp_path, "1"), str(cat))
    real = stores.DirStore.get_metadata
    calls = {"n": 0}

    def newer_meanwhile(self):
        calls["n"] += 1
        doc, token = real(self)
        if calls["n"] == 2 and doc:  # after the upload: two newer versions landed
            doc["versions"] += [{"version": v, "providers": []} for v in ("5", "6")]
        return doc, token

    monkeypatch.setattr(stores.DirStore, "get_metadata", newer_meanwhile)
    with pytest.raises(PublishError, match="was published, but --keep 2 pruned it at once"):
        catalogs.publish(make_box(tmp_path, "2"), str(cat), keep=2)
    assert not (cat / "2").exists(), "the pruned version's file must not stay behind"


def test_an_interrupted_publish_leaves_no_upload(tmp_path, monkeypatch):
    cat = tmp_path / "cat"
    catalogs.publish(make_box(tmp_path, "1"), str(cat))

    def interrupted(self, data, token):
        raise KeyboardInterrupt

    monkeypatch.setattr(stores.DirStore, "put_metadata", interrupted)
    with pytest.raises(KeyboardInterrupt):
        catalogs.publish(make_box(tmp_path, "2"), str(cat))
    assert listing(cat) == ["1/org-tiny-1-libvirt.box", "metadata.json"]


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("not a box", "is not a box archive"),
        ("broken json", "tiny.box.json is not valid JSON"),
        ("bad catalog", "metadata.json is not valid JSON"),
        ("catalog under a file", "cannot publish to"),
        ("no box.img", "is not a vagrant-libvirt box: no box.img in it"),
    ],
)
def test_bad_input_is_one_line_and_loses_nothing(tmp_path, setup, message):
    box = make_box(tmp_path, "1.0.0")
    target = tmp_path / "cat"
    target.mkdir()
    if setup == "not a box":
        box.write_bytes(b"just some bytes\n" * 100)
        box.with_name(box.name + ".json").unlink()
    elif setup == "broken json":
        box = box.rename(tmp_path / "tiny.box")
        (tmp_path / "tiny.box.json").write_text("{not json")
    elif setup == "bad catalog":
        (target / "metadata.json").write_text("{truncated")
    elif setup == "catalog under a file":
        (tmp_path / "file").write_text("")
        target = tmp_path / "file" / "cat"
    elif setup == "no box.img":
        import tarfile

        with tarfile.open(box, "w") as tar:
            tar.add(tmp_path / "box.img", arcname="metadata.json")
    result = runner.invoke(app, ["publish", str(box), "--catalog", str(target), "--name", NAME, "--version", "1.0.0"])
    assert result.exit_code != 0
    assert result.stderr.count("\n") == 1 and message in result.stderr and "Traceback" not in result.stderr, (
        result.stderr
    )
    assert not any(p.suffix == ".box" for p in tmp_path.rglob("cat/**/*")), "nothing was uploaded"
