"""oci.publish at its seam, the registry client: a registry held in memory that stores what it is
sent, so the publish rules (immutable versions, --force, --keep, the read-back check, deletion a
registry refuses) are checked without a registry running (tests/integration/test_oci_real.py runs
them against a real one)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.unit.catalog.test_transaction import NAME, make_box
from vagabond import files
from vagabond.catalog import oci
from vagabond.errors import PublishError

CATALOG = "oci://registry.example.org/org/tiny"


class MemoryRegistry:
    """What oci.publish asks of distribution.Registry, kept in dictionaries."""

    def __init__(self, *, deletes: bool = True):
        self.blobs: dict[str, bytes] = {}
        self.manifests: dict[str, bytes] = {}  # digest -> body
        self.tagged: dict[str, str] = {}  # tag -> digest
        self.deletes = deletes
        self.asked: list[str] = []
        self.after_put = None  # a concurrent publish, between the put and the read-back

    def tags(self) -> list[str]:
        return sorted(self.tagged)

    def manifest(self, reference: str) -> tuple[dict, str] | None:
        digest = self.tagged.get(reference, reference)
        body = self.manifests.get(digest)
        return (json.loads(body), digest) if body is not None else None

    def push_blob(self, source: Path | bytes, digest: str, *, progress=None) -> None:
        data = source.read_bytes() if isinstance(source, Path) else source
        assert "sha256:" + files.sha256_bytes(data) == digest, "a blob is pushed under its own digest"
        self.asked.append(f"blob {digest[:15]}")
        self.blobs[digest] = data

    def put_manifest(self, tag: str, body: bytes) -> str:
        manifest = json.loads(body)
        assert all(layer["digest"] in self.blobs for layer in manifest["layers"]), "blobs before the manifest"
        assert manifest["config"]["digest"] in self.blobs
        digest = "sha256:" + files.sha256_bytes(body)
        self.manifests[digest], self.tagged[tag] = body, digest
        self.asked.append(f"manifest {tag}")
        if self.after_put:
            self.after_put(tag)
        return digest

    def delete_manifest(self, digest: str) -> bool:
        self.asked.append(f"delete {digest[:15]}")
        if not self.deletes:
            return False
        self.manifests.pop(digest)
        self.tagged = {t: d for t, d in self.tagged.items() if d != digest}
        return True


@pytest.fixture
def registry(monkeypatch):
    reg = MemoryRegistry()
    monkeypatch.setattr(oci, "open_registry", lambda catalog: reg)
    return reg


def test_a_box_goes_up_as_one_artifact_its_blobs_first_and_is_read_back(registry, tmp_path):
    box = make_box(tmp_path, "1.0.0")
    result = oci.publish(box, CATALOG)
    manifest, digest = registry.manifest("1.0.0")
    assert registry.asked == [
        f"blob sha256:{files.sha256_file(box)[:8]}",
        f"blob {manifest['config']['digest'][:15]}",
        "manifest 1.0.0",
    ], "the box, its config, then the manifest that names both"
    assert result["manifest_digest"] == digest and result["url"] == f"{CATALOG}:1.0.0"
    assert manifest["artifactType"] == oci.ARTIFACT
    layer = manifest["layers"][0]
    assert registry.blobs[layer["digest"]] == box.read_bytes() and layer["size"] == box.stat().st_size
    notes = manifest["annotations"]
    assert notes[f"{oci.ANNOTATION}box"] == NAME and notes[f"{oci.ANNOTATION}definition-digest"] == "d" * 64
    config = json.loads(registry.blobs[manifest["config"]["digest"]])
    assert config["sha256"] == files.sha256_file(box) and config["version"] == "1.0.0"
    assert oci.find_current(CATALOG, "d" * 64, NAME, None) == (
        "1.0.0",
        f"prebuilt {NAME} 1.0.0 matches this definition",
    )


def test_a_published_version_is_immutable_unless_forced(registry, tmp_path):
    box = make_box(tmp_path, "1.0.0")
    oci.publish(box, CATALOG)
    with pytest.raises(PublishError, match="already published with this very file"):
        oci.publish(box, CATALOG, force=True)
    other = make_box(tmp_path, "1.0.0", content=b"another disk")
    with pytest.raises(PublishError, match="published boxes are immutable"):
        oci.publish(other, CATALOG)
    before = registry.tagged["1.0.0"]
    assert oci.publish(other, CATALOG, force=True)["manifest_digest"] != before
    assert registry.blobs[registry.manifest("1.0.0")[0]["layers"][0]["digest"]] == other.read_bytes()


def test_keep_prunes_only_this_boxs_oldest_versions_and_never_the_new_one(registry, tmp_path):
    for version in ("1.0.0", "1.1.0", "1.2.0"):
        oci.publish(make_box(tmp_path, version), CATALOG)
    registry.tagged["latest"] = registry.tagged["1.0.0"]  # a tag that is no version: never pruned
    foreign = json.dumps({"layers": [], "config": {"digest": "x"}, "annotations": {}}).encode()
    registry.manifests["sha256:" + files.sha256_bytes(foreign)] = foreign
    registry.tagged["0.9.0"] = "sha256:" + files.sha256_bytes(foreign)  # someone else's artifact
    with pytest.raises(PublishError, match="--keep 2 would prune it at once"):
        oci.publish(make_box(tmp_path, "1.0.5"), CATALOG, keep=2)
    old = {registry.tagged["1.0.0"], registry.tagged["1.1.0"]}
    result = oci.publish(make_box(tmp_path, "2.0.0"), CATALOG, keep=2)
    assert result["pruned"] == ["1.0.0", "1.1.0"]
    deleted = {entry.removeprefix("delete ") for entry in registry.asked if entry.startswith("delete ")}
    assert deleted == {digest[:15] for digest in old}, "the two oldest of this box, and not someone else's 0.9.0"
    assert {"0.9.0", "1.2.0", "2.0.0"} <= set(registry.tagged)


def test_a_registry_that_refuses_deletion_leaves_the_versions_and_says_so(monkeypatch, tmp_path, capsys):
    reg = MemoryRegistry(deletes=False)
    monkeypatch.setattr(oci, "open_registry", lambda catalog: reg)
    for version in ("1.0.0", "1.1.0"):
        oci.publish(make_box(tmp_path, version), CATALOG)
    assert oci.publish(make_box(tmp_path, "1.2.0"), CATALOG, keep=1)["pruned"] == []
    err = " ".join(capsys.readouterr().err.split())
    assert f"left {NAME} 1.0.0 in {CATALOG}: the registry does not allow deleting it" in err
    assert f"left {NAME} 1.1.0" in err


def test_a_version_replaced_between_the_push_and_the_read_back_is_an_error(registry, tmp_path):
    rival = (
        make_box(tmp_path / "rival", "1.0.0", content=b"the rival's disk")
        if (tmp_path / "rival").mkdir() is None
        else None
    )

    def concurrent(tag):
        registry.after_put = None
        oci.publish(rival, CATALOG, force=True)

    registry.after_put = concurrent
    with pytest.raises(PublishError, match="a concurrent publish of this version replaced it"):
        oci.publish(make_box(tmp_path, "1.0.0"), CATALOG)
