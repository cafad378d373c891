"""Catalog documents: merging versions, pruning, and choosing the prebuilt box for `up`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vagabond import boxes, catalog, paths, provision, render
from vagabond.catalog import BoxFile
from vagabond.errors import PublishError
from vagabond.errors import UsageError


def box(version: str, digest: str | None = "d1") -> BoxFile:
    return BoxFile(Path("/x.box"), "org/deps", version, "ab" * 32, "deps box", "amd64", digest)


def test_merge_adds_sorted_versions_with_digest():
    doc, pruned = catalog.merge(None, box("1.10.0"), "http://h/1.10.0.box", keep=None)
    doc, pruned = catalog.merge(doc, box("1.2.0"), "http://h/1.2.0.box", keep=None)
    assert [v["version"] for v in doc["versions"]] == ["1.2.0", "1.10.0"]
    assert doc["versions"][0]["vagabond"] == {"definition_digest": "d1"}
    assert doc["versions"][0]["providers"][0]["checksum_type"] == "sha256"
    assert pruned == []


def test_merge_prunes_oldest():
    doc = None
    for v in ("1", "2", "3"):
        doc, pruned = catalog.merge(doc, box(v), f"http://h/{v}.box", keep=2)
    assert [v["version"] for v in doc["versions"]] == ["2", "3"]
    assert pruned == ["http://h/1.box"]


def test_merge_refuses_a_catalog_of_another_box():
    doc, _ = catalog.merge(None, box("1"), "u", keep=None)
    other = BoxFile(Path("/y.box"), "org/other", "1", "00", "", "amd64", None)
    with pytest.raises(PublishError, match="^the catalog holds box 'org/deps', not 'org/other'"):
        catalog.merge(doc, other, "u", keep=None)


def test_find_current_matches_digest(tmp_path):
    doc = None
    for v, d in (("1", "old"), ("2", "cur"), ("3", "other"), ("4", "cur")):
        doc, _ = catalog.merge(doc, box(v, d), f"file:///{v}.box", keep=None)
    meta = tmp_path / "metadata.json"
    meta.write_text(json.dumps(doc))
    found, why = catalog.find_current(meta.as_uri(), "cur")
    assert (found.name, found.version) == ("org/deps", "4")
    assert why == "prebuilt org/deps 4 matches this definition"
    none, why = catalog.find_current(meta.as_uri(), "nope")
    assert none is None and why.startswith(f"no version in {meta.as_uri()} was built from this box definition")
    missing, why = catalog.find_current((tmp_path / "absent.json").as_uri(), "cur")
    assert missing is None and "could not be read" in why


def test_open_store_refuses_http_targets():
    with pytest.raises(UsageError, match="an HTTP URL is where a catalog is read from"):
        catalog.open_store("https://boxes.example.org/x")


def test_render_with_prebuilt_source():
    b = boxes.find_box("debian12-selinux", paths.shipped_boxes_dir())
    text = render.render(b, render.RenderOptions("qemu", source=render.BoxSource("org/deps", "4", "http://h/metadata.json")))
    assert "config.vm.box = 'org/deps'" in text
    assert "config.vm.box_version = '= 4'" in text
    assert "config.vm.box_url = 'http://h/metadata.json'" in text


def test_definition_digest_follows_box_and_playbooks(project):
    (project / "playbooks" / "deps.yml").write_text("- hosts: all\n  tasks: []\n")
    path = project / "boxes" / "b.yaml"
    path.write_text("description: x\nbase: {box: a/b}\nmodes: {selinux: enforcing}\nplaybooks: [playbooks/deps.yml]\n")
    first = provision.definition_digest(boxes.load_box(path))
    assert first == provision.definition_digest(boxes.load_box(path))
    (project / "playbooks" / "deps.yml").write_text("- hosts: all\n  tasks: [{debug: {msg: hi}}]\n")
    second = provision.definition_digest(boxes.load_box(path))
    path.write_text(path.read_text().replace("enforcing", "permissive"))
    third = provision.definition_digest(boxes.load_box(path))
    assert len({first, second, third}) == 3
