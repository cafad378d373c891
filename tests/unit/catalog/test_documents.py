"""Catalog documents: merging versions, pruning, and choosing the prebuilt box for `up`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.conftest import write_box
from vagabond import paths
from vagabond.catalog import documents, s3, stores, versions
from vagabond.catalog.catalogs import open_catalog
from vagabond.catalog.documents import Archive
from vagabond.catalog.read import Published
from vagabond.cli.app import app
from vagabond.definition import boxfile
from vagabond.errors import PublishError, UsageError
from vagabond.vm import playbooks, render


def box(version: str, digest: str | None = "d1") -> Archive:
    return Archive(Path("/x.box"), "org/deps", version, "ab" * 32, "deps box", "amd64", digest)


def test_merge_adds_sorted_versions_with_digest():
    doc, gone = documents.merge(None, box("1.10.0"), "http://h/1.10.0.box", keep=None)
    doc, gone = documents.merge(doc, box("1.2.0"), "http://h/1.2.0.box", keep=None)
    assert [v["version"] for v in doc["versions"]] == ["1.2.0", "1.10.0"]
    assert doc["versions"][0]["vagabond"] == {"definition_digest": "d1"}
    assert doc["versions"][0]["providers"][0]["checksum_type"] == "sha256"
    assert gone == []


def test_merge_prunes_oldest():
    doc = None
    for v in ("1", "2", "3"):
        doc, gone = documents.merge(doc, box(v), f"http://h/{v}.box", keep=2)
    assert [v["version"] for v in doc["versions"]] == ["2", "3"]
    assert [v["providers"][0]["url"] for v in gone] == ["http://h/1.box"]


def test_merge_refuses_a_catalog_of_another_box():
    doc, _ = documents.merge(None, box("1"), "u", keep=None)
    other = Archive(Path("/y.box"), "org/other", "1", "00", "", "amd64", None)
    with pytest.raises(PublishError, match="^the catalog holds box 'org/deps', not 'org/other'"):
        documents.merge(doc, other, "u", keep=None)


def catalog_file(tmp_path, versions) -> Path:
    """A metadata.json with these (version, definition digest) entries, as publish writes them."""
    doc = None
    for v, d in versions:
        doc, _ = documents.merge(doc, box(v, d), f"file:///{v}.box", keep=None)
    meta = tmp_path / "metadata.json"
    meta.write_text(json.dumps(doc))
    return meta


def test_find_current_matches_digest(tmp_path):
    meta = catalog_file(tmp_path, (("1", "old"), ("2", "cur"), ("3", "other"), ("4", "cur")))
    found, why = open_catalog(meta.as_uri()).find_current("cur", "org/deps")
    assert (found.name, found.version) == ("org/deps", "4")
    assert why == "prebuilt org/deps 4 matches this definition"
    none, why = open_catalog(meta.as_uri()).find_current("nope", "org/deps")
    assert none is None and why.startswith(f"no version in {meta.as_uri()} was built from this box definition")
    missing, why = open_catalog((tmp_path / "absent.json").as_uri()).find_current("cur", "org/deps")
    assert missing is None and "could not be read" in why


@pytest.mark.parametrize(
    ("version", "constraint", "meets"),
    [
        ("1.4.0", "~> 1.4", True),
        ("1.9.9", "~> 1.4", True),
        ("2.0", "~> 1.4", False),
        ("1.3", "~> 1.4", False),
        ("1.4.5", "~> 1.4.2", True),
        ("1.5.0", "~> 1.4.2", False),
        ("1.4.1", "~> 1.4.2", False),
        ("1.9", "~> 1", True),
        ("2", "~> 1", False),
        ("1.0", "= 1.0.0", True),
        ("1.0.1", "1.0", False),
        ("3.1.0", ">= 3, < 4", True),
        ("4.0.0", ">= 3, < 4", False),
        ("2.0", "!= 2", False),
        ("2.1", "> 2", True),
        ("2.0", "<= 2", True),
        ("1.0.1795791066", "~> 1.0", True),
        ("9", None, True),
    ],
)
def test_version_constraints_mean_what_they_mean_to_vagrant(version, constraint, meets):
    assert versions.satisfies(version, constraint) is meets


def test_the_newest_current_version_the_constraint_allows(tmp_path):
    meta = catalog_file(tmp_path, (("1.0.5", "cur"), ("1.2.0", "cur"), ("2.0.0", "cur"), ("1.3.0", "old")))
    assert open_catalog(meta.as_uri()).find_current("cur", "org/deps")[0].version == "2.0.0"
    assert open_catalog(meta.as_uri()).find_current("cur", "org/deps", "~> 1.0")[0].version == "1.2.0"
    none, why = open_catalog(meta.as_uri()).find_current("cur", "org/deps", "~> 3.0")
    assert none is None and why.endswith("meets the version constraint '~> 3.0' (1.0.5, 1.2.0, 2.0.0 do not)")


CHECKSUM = {"checksum_type": "sha256", "checksum": "c" * 64}
GOOD_VERSION = {
    "version": "1",
    "providers": [{"name": "libvirt", "url": "u", **CHECKSUM}],
    "vagabond": {"definition_digest": "cur"},
}


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"", "is not valid JSON (Expecting value"),
        (b'{"name": "org/deps", "versions": [', "could not be read"),
        (b"[]", "is not a box catalog vagabond can use: a JSON list instead of an object"),
        (b'"text"', "a JSON str instead of an object"),
        (b'{"versions": []}', "no box name"),
        (
            b'{"name": "evil/other", "versions": [%s]}' % json.dumps(GOOD_VERSION).encode(),
            "it holds box 'evil/other', not 'org/deps'",
        ),
        (b'{"name": "org/deps", "versions": "1"}', "'versions' is not a list"),
        (b'{"name": "org/deps", "versions": [{"providers": []}]}', "has no version of digits and dots"),
        (b'{"name": "org/deps", "versions": [{"version": 1}]}', "has no version of digits and dots"),
        (b'{"name": "org/deps", "versions": [{"version": "latest"}]}', "has no version of digits and dots"),
        (
            b'{"name": "org/deps", "versions": [{"version": "1.0.beta"}, {"version": "2"}]}',
            "has no version of digits and dots",
        ),
        (
            b'{"name": "org/deps", "versions": [{"version": "1", "providers": "x"}]}',
            "version 1 has malformed providers",
        ),
        (b'{"name": "org/deps", "versions": [{"version": "1", "providers": [{"url": 5}]}]}', "malformed providers"),
        (b"\xff\xfe", "could not be read"),
    ],
)
def test_a_catalog_that_is_not_what_vagabond_expects_is_a_reason_not_a_crash(tmp_path, body, why):
    meta = tmp_path / "metadata.json"
    meta.write_bytes(body)
    found, reason = open_catalog(meta.as_uri()).find_current("cur", "org/deps")
    assert found is None and why in reason, reason


def test_a_catalog_url_that_is_not_http_or_file_is_a_reason(tmp_path):
    found, reason = open_catalog("ftp://h/metadata.json").find_current("cur", "org/deps")
    assert found is None and reason.startswith(
        "catalog ftp://h/metadata.json could not be read ('ftp://h/metadata.json' is not an http(s)://"
    )


def test_an_entry_without_a_checksum_is_never_current(tmp_path):
    """Vagrant checks a prebuilt box only against its entry's checksum: none, and anything would boot."""
    meta = tmp_path / "metadata.json"
    bare = {**GOOD_VERSION, "providers": [{"name": "libvirt", "url": "http://boxes.example.org/1.box"}]}
    weak = {
        **GOOD_VERSION,
        "providers": [{"name": "libvirt", "url": "u", "checksum_type": "md5", "checksum": "0" * 32}],
    }
    for entry in (bare, weak):
        meta.write_text(json.dumps({"name": "org/deps", "versions": [entry]}))
        found, reason = open_catalog(meta.as_uri()).find_current("cur", "org/deps")
        assert found is None
        assert reason == (
            f"the versions in {meta.as_uri()} built from this box definition (1) list no sha256 checksum, "
            "so their download could not be checked"
        )


def test_a_plain_http_box_file_needs_a_checksum(project):
    from tests.conftest import write_box
    from vagabond.definition import boxfile
    from vagabond.errors import BoxDefinitionError

    write_box(project, "b", "description: x\nbase: {box: org/b, url: 'http://boxes.example.org/b.box'}\n")
    with pytest.raises(BoxDefinitionError, match="needs checksum: sha256:HEX"):
        boxfile.find_box("b", project / "boxes")
    write_box(
        project,
        "b",
        f"description: x\nbase: {{box: org/b, url: 'http://boxes.example.org/b.box', checksum: 'sha256:{'a' * 64}'}}\n",
    )
    assert boxfile.find_box("b", project / "boxes").spec.base.checksum


def test_the_prebuilt_name_is_the_box_files_not_the_catalogs(tmp_path):
    meta = tmp_path / "metadata.json"
    meta.write_text(json.dumps({"name": "org/deps", "versions": [GOOD_VERSION]}))
    found, _ = open_catalog(meta.as_uri()).find_current("cur", "org/deps")
    assert found.name == "org/deps"


@pytest.mark.parametrize("version", ["latest", "../../x", "1.0.beta", "1..2", "", "1.2.", "v1", "1/2", "1" * 65, "١"])
def test_versions_vagrant_cannot_order_are_refused(version):
    with pytest.raises(UsageError, match=r"is not one Vagrant can order \(use digits and dots"):
        versions.check_version(version)


def test_dir_store_refuses_keys_outside_its_root(tmp_path):
    store = stores.DirStore(tmp_path / "cat", None)
    (tmp_path / "victim").write_text("keep me")
    for key in ("../victim", "1.0/../../victim", "/etc/passwd"):
        with pytest.raises(PublishError, match="points outside the catalog directory"):
            store.delete(key)
    assert (tmp_path / "victim").read_text() == "keep me"


def test_s3_keys_stay_under_the_prefix():
    store = s3.S3Store.__new__(s3.S3Store)
    store.bucket, store.prefix = "b", "boxes/deb"
    assert store._key("1.0/x.box") == "boxes/deb/1.0/x.box"
    for key in ("../other/x.box", "1.0/../../x", "/abs", "..", "a/../../deb2/x"):
        with pytest.raises(PublishError, match="points outside s3://b/boxes/deb"):
            store._key(key)


def test_open_store_refuses_http_targets():
    with pytest.raises(UsageError, match="an HTTP URL is where a catalog is read from"):
        stores.open_store("https://boxes.example.org/x")


def test_render_with_prebuilt_source():
    b = boxfile.find_box("debian12-selinux", paths.shipped_boxes_dir())
    text = render.render(
        b, render.RenderOptions(source=Published("org/deps", "4", "http://h/metadata.json")), Path("/")
    )
    assert "config.vm.box = 'org/deps'" in text
    assert "config.vm.box_version = '= 4'" in text
    assert "config.vm.box_url = 'http://h/metadata.json'" in text


def test_definition_digest_follows_box_and_playbooks(project):
    (project / "playbooks" / "deps.yml").write_text("- hosts: all\n  tasks: []\n")
    path = project / "boxes" / "b.yaml"
    path.write_text("description: x\nbase: {box: a/b}\nmodes: {selinux: enforcing}\nplaybooks: [playbooks/deps.yml]\n")
    first = playbooks.definition_digest(boxfile.load_box(path))
    assert first == playbooks.definition_digest(boxfile.load_box(path))
    (project / "playbooks" / "deps.yml").write_text("- hosts: all\n  tasks: [{debug: {msg: hi}}]\n")
    second = playbooks.definition_digest(boxfile.load_box(path))
    path.write_text(path.read_text().replace("enforcing", "permissive"))
    third = playbooks.definition_digest(boxfile.load_box(path))
    assert len({first, second, third}) == 3


def test_fields_added_since_count_only_when_set_and_a_bases_catalog_never(project):
    """Prebuilt boxes built before resources.cpu and base.catalog existed stay current."""
    path = project / "boxes" / "b.yaml"
    path.write_text("description: x\nbase: {kind: mmdebstrap, box: o/d, suite: bookworm}\n")
    plain = playbooks.definition_digest(boxfile.load_box(path))  # as before these fields (the golden files pin it)
    catalog = "base: {kind: mmdebstrap, box: o/d, suite: bookworm, catalog: 'https://x.org/m.json'}"
    path.write_text(f"description: x\n{catalog}\n")
    assert playbooks.definition_digest(boxfile.load_box(path)) == plain, "where the base is published changes no VM"
    path.write_text(f"description: x\n{catalog}\nresources: {{cpu: max}}\n")
    assert playbooks.definition_digest(boxfile.load_box(path)) != plain, "another CPU under emulation counts"


def test_definition_digest_follows_everything_a_playbook_can_load(project):
    deps = project / "playbooks" / "deps"
    (deps / "roles" / "app" / "tasks").mkdir(parents=True)
    (deps / "roles" / "app" / "templates").mkdir(parents=True)
    (deps / "site.yml").write_text("- hosts: all\n  roles: [app]\n")
    (deps / "roles" / "app" / "tasks" / "main.yml").write_text(
        "- ansible.builtin.template: {src: app.conf.j2, dest: /etc/app.conf}\n"
    )
    (deps / "roles" / "app" / "templates" / "app.conf.j2").write_text("port = 80\n")
    path = project / "boxes" / "b.yaml"
    path.write_text("description: x\nbase: {box: a/b}\nplaybooks: [playbooks/deps/site.yml]\n")
    seen = {playbooks.definition_digest(boxfile.load_box(path))}
    for changed, text in (
        ("roles/app/templates/app.conf.j2", "port = 8080\n"),
        ("roles/app/tasks/main.yml", "[]\n"),
        ("group_vars/all.yml", "x: 1\n"),
    ):
        (deps / changed).parent.mkdir(parents=True, exist_ok=True)
        (deps / changed).write_text(text)
        seen.add(playbooks.definition_digest(boxfile.load_box(path)))
    assert len(seen) == 4, "a change in a role, a template or vars must make the prebuilt box stale"
    (deps / ".git").mkdir()
    (deps / ".git" / "index").write_text("noise")
    assert playbooks.definition_digest(boxfile.load_box(path)) in seen, "hidden files are not inputs"


def test_a_top_level_playbook_does_not_digest_the_whole_project(project):
    (project / "deps.yml").write_text("- hosts: all\n  roles: [r]\n")
    (project / "roles" / "r" / "tasks").mkdir(parents=True)
    (project / "roles" / "r" / "tasks" / "main.yml").write_text("[]\n")
    path = project / "boxes" / "b.yaml"
    path.write_text("description: x\nbase: {box: a/b}\nplaybooks: [deps.yml]\n")
    first = playbooks.definition_digest(boxfile.load_box(path))
    (project / "src.py").write_text("print('the code under test changed')\n")
    assert playbooks.definition_digest(boxfile.load_box(path)) == first
    (project / "roles" / "r" / "tasks" / "main.yml").write_text("- debug: {msg: changed}\n")
    assert playbooks.definition_digest(boxfile.load_box(path)) != first


@pytest.mark.parametrize("version", ["1", "1.0.0", "20261127.123456", "1.0.1764245000", "0.0.99999999999999"])
def test_versions_vagrant_orders_are_taken(version):
    assert versions.check_version(version) == version


def test_prebuilt_command_names_the_version_up_would_boot(project, monkeypatch, tmp_path):
    monkeypatch.setenv("VAGRANT_HOME", str(tmp_path / "vagrant home"))
    meta = tmp_path / "catalog" / "metadata.json"
    meta.parent.mkdir()
    write_box(
        project,
        "deps",
        f"description: d\nbase: {{box: a/b}}\nprebuilt: {{name: org/deps, catalog: '{meta.as_uri()}'}}\n",
    )
    digest = playbooks.definition_digest(boxfile.find_box("deps", [(project / "boxes", "project")]))

    def entry(version, d):
        return {
            "version": version,
            "vagabond": {"definition_digest": d},
            "providers": [{"name": "libvirt", "url": "x", **CHECKSUM}],
        }

    meta.write_text(json.dumps({"name": "org/deps", "versions": [entry("1.0.2", digest), entry("1.0.3", "other")]}))
    result = CliRunner().invoke(app, ["prebuilt", "deps", "--github-output"])
    assert result.exit_code == 0, result.output
    store = tmp_path / "vagrant home" / "boxes" / "org-VAGRANTSLASH-deps" / "1.0.2"  # that version alone
    assert result.stdout == f"name=org/deps\nversion=1.0.2\nstore={store}\n"
    as_json = json.loads(CliRunner().invoke(app, ["prebuilt", "deps", "--json"]).stdout)
    assert as_json["version"] == "1.0.2" and as_json["reason"] == "prebuilt org/deps 1.0.2 matches this definition"
    # A playbook change is a new digest: no version matches, up would use the base box.
    (project / "playbooks" / "deps.yml").write_text("- hosts: all\n  tasks: []\n")
    write_box(
        project,
        "deps",
        f"description: d\nbase: {{box: a/b}}\nplaybooks: [playbooks/deps.yml]\n"
        f"prebuilt: {{name: org/deps, catalog: '{meta.as_uri()}'}}\n",
    )
    result = CliRunner().invoke(app, ["prebuilt", "deps", "--github-output"])
    assert result.exit_code == 0 and "version=\n" in result.stdout, result.output
    assert "no prebuilt box: no version in" in CliRunner().invoke(app, ["prebuilt", "deps"]).stdout
    # An unreachable catalog is not an error either: the job goes on with the base box.
    meta.unlink()
    assert (
        CliRunner().invoke(app, ["prebuilt", "deps", "--github-output"]).stdout.startswith("name=org/deps\nversion=\n")
    )
