"""A box's warm image in an OCI catalog, at the registry client's seam (the registry held in
memory): its own artifact per version and key, pushed before the version's tag, found by the
key in its annotations without a blob read, downloaded and checked against its digest, and
pruned with its version. (tests/integration/test_oci_real.py pushes and pulls one for real.)"""

from __future__ import annotations

import json

import pytest

from tests.unit.catalog.test_oci_publish import CATALOG, registry  # noqa: F401 (a fixture)
from tests.unit.catalog.test_transaction import NAME, make_box
from tests.unit.catalog.test_transaction_warm import DIGEST, KEY, accept, with_warm
from vagabond import files
from vagabond.catalog import oci
from vagabond.catalog.catalogs import open_catalog
from vagabond.catalog.read import Published
from vagabond.errors import PublishError


def test_the_warm_image_is_an_artifact_of_its_own_pushed_before_the_versions_tag(registry, tmp_path):  # noqa: F811
    box = make_box(tmp_path, "1.0.0")
    warm = with_warm(box)
    result = oci.publish(box, CATALOG, check_warm=accept)
    tag = f"1.0.0-warm-{DIGEST}"
    assert result["warm"] == {"url": f"{CATALOG}:{tag}", "key_digest": DIGEST, "size": warm.stat().st_size}
    assert [a for a in registry.asked if a.startswith("manifest")] == [f"manifest {tag}", "manifest 1.0.0"]
    manifest, _ = registry.manifest(tag)
    assert manifest["artifactType"] == oci.WARM_ARTIFACT
    assert registry.blobs[manifest["layers"][0]["digest"]] == warm.read_bytes()
    assert json.loads(manifest["annotations"][f"{oci.ANNOTATION}warm-key"]) == KEY
    assert oci.find_current(CATALOG, "d" * 64, NAME, None)[0] == "1.0.0", "a warm tag is no version"


def test_up_finds_it_by_its_key_and_downloads_it_checked(registry, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setenv("VAGABOND_CACHE", str(tmp_path / "cache"))
    box = make_box(tmp_path, "1.0.0")
    warm = with_warm(box)
    oci.publish(box, CATALOG, check_warm=accept)
    catalog = open_catalog(CATALOG)
    offers, why = catalog.warm_offers(Published(NAME, "1.0.0", CATALOG))
    assert why == "" and [(o.key, o.sha256, o.size) for o in offers] == [
        (KEY, files.sha256_file(warm), warm.stat().st_size)
    ]
    assert catalog.warm_offers(Published(NAME, "2.0.0", CATALOG)) == (
        [],
        f"{NAME} 2.0.0 in {CATALOG} has no warm image",
    )

    def download_blob(digest, partial, size, *, progress=None):
        partial.write_bytes(registry.blobs[digest])

    registry.download_blob = download_blob
    got = catalog.download_warm(offers[0])
    assert got.read_bytes() == warm.read_bytes() and got.stat().st_mode & 0o777 == 0o600
    got.unlink()
    registry.blobs[f"sha256:{offers[0].sha256}"] = b"tampered"
    with pytest.raises(PublishError, match="does not match its sha256"):
        catalog.download_warm(offers[0])
    assert list(got.parent.iterdir()) == [], "nothing of a download that does not match is kept"


def test_a_warm_image_is_pruned_with_its_version_and_someone_elses_tag_is_not(registry, tmp_path):  # noqa: F811
    for version in ("1.0.0", "2.0.0"):
        box = make_box(tmp_path, version)
        with_warm(box, content=f"warm {version}".encode())
        if version == "2.0.0":
            foreign = json.dumps({"layers": [], "config": {"digest": "x"}, "annotations": {}}).encode()
            registry.manifests["sha256:" + files.sha256_bytes(foreign)] = foreign
            registry.tagged["1.0.0-warm-theirs"] = "sha256:" + files.sha256_bytes(foreign)
        oci.publish(box, CATALOG, keep=1, check_warm=accept)
    assert set(registry.tagged) == {"2.0.0", f"2.0.0-warm-{DIGEST}", "1.0.0-warm-theirs"}


@pytest.mark.parametrize(
    "spoil",
    [
        lambda m: m.__setitem__("layers", 5),
        lambda m: m.__setitem__("layers", ["not a layer"]),
        lambda m: m.__setitem__("annotations", ["a", "list"]),
        lambda m: m["annotations"].__setitem__(f"{oci.ANNOTATION}warm-key", 5),
        lambda m: m["annotations"].__setitem__(f"{oci.ANNOTATION}warm-key", "{not json"),
        lambda m: m["annotations"].__setitem__(f"{oci.ANNOTATION}box-sha256", "0" * 64),
        lambda m: m["annotations"].__setitem__(f"{oci.ANNOTATION}warm-key-digest", "b" * 32),
        lambda m: m["layers"][0].__setitem__("size", "big"),
        lambda m: m["layers"][0].__setitem__("digest", None),
    ],
)
def test_a_hostile_warm_manifest_is_not_offered_and_raises_nothing(registry, tmp_path, spoil):  # noqa: F811
    box = make_box(tmp_path, "1.0.0")
    with_warm(box)
    oci.publish(box, CATALOG, check_warm=accept)
    tag = f"1.0.0-warm-{DIGEST}"
    manifest, _ = registry.manifest(tag)
    spoil(manifest)
    body = json.dumps(manifest).encode()
    registry.manifests["sha256:" + files.sha256_bytes(body)] = body
    registry.tagged[tag] = "sha256:" + files.sha256_bytes(body)
    assert oci.warm_offers(CATALOG, NAME, "1.0.0") == ([], f"{NAME} 1.0.0 in {CATALOG} has no warm image")


def test_a_forced_replacement_takes_the_old_builds_warm_image_away(registry, tmp_path):  # noqa: F811
    box = make_box(tmp_path, "1.0.0")
    with_warm(box)
    oci.publish(box, CATALOG, check_warm=accept)
    other = make_box(tmp_path / "other" if (tmp_path / "other").mkdir() is None else tmp_path, "1.0.0", b"rebuilt")
    oci.publish(other, CATALOG, force=True)
    assert set(registry.tagged) == {"1.0.0"}, "no warm image of the replaced build stays"
    assert oci.warm_offers(CATALOG, NAME, "1.0.0")[0] == []


def test_a_publish_that_fails_after_the_warm_image_leaves_no_warm_tag(registry, tmp_path, monkeypatch):  # noqa: F811
    box = make_box(tmp_path, "1.0.0")
    with_warm(box)
    real = registry.put_manifest

    def refuse_the_version(tag, body):
        if tag == "1.0.0":
            raise PublishError("the registry refused the manifest")
        return real(tag, body)

    monkeypatch.setattr(registry, "put_manifest", refuse_the_version)
    with pytest.raises(PublishError, match="refused the manifest"):
        oci.publish(box, CATALOG, check_warm=accept)
    assert registry.tagged == {}, "the warm tag this publish made went again"
