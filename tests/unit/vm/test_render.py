"""Rendering: golden Vagrantfiles for the shipped boxes, and the Ruby literal filter's guarantees."""

from __future__ import annotations

import json
import os
import re

import jinja2
import pytest

from tests.conftest import REPO, write_box
from vagabond import paths
from vagabond.catalog.read import Published
from vagabond.definition import boxfile, project
from vagabond.errors import BoxDefinitionError, RenderError
from vagabond.vm import playbooks, render, workdir

GOLDEN = REPO / "tests" / "golden"
SHIPPED = sorted(p.stem for p in (REPO / "boxes").glob("*.yaml"))  # every shipped box has its golden files


def rendered_project(root, name: str) -> dict[str, str]:
    """A project as `vagabond init NAME` makes it, rendered into its own root: every file written."""
    project.init(root, [name])
    render.write(boxfile.find_box(name, project.box_dirs(cwd=root)), render.RenderOptions(), root)
    return {p.relative_to(root).as_posix(): p.read_text() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("name", SHIPPED)
def test_golden(tmp_path, name):
    files = rendered_project(tmp_path, name)
    for rel in ("Vagrantfile", "vagabond-provision/site.yml"):
        golden = GOLDEN / name / rel
        if os.environ.get("UPDATE_GOLDEN"):
            golden.parent.mkdir(parents=True, exist_ok=True)
            golden.write_text(files[rel])
        assert files[rel] == golden.read_text(), f"re-run with UPDATE_GOLDEN=1 if the change to {golden} is intended"


@pytest.mark.parametrize("name", SHIPPED)
def test_no_path_of_the_render_host_in_any_rendered_file(tmp_path, name):
    """Two checkouts in different places render byte for byte the same files."""
    one, two = tmp_path / "a", tmp_path / "elsewhere" / "deeper" / "b"
    one.mkdir(), two.mkdir(parents=True)
    first, second = rendered_project(one, name), rendered_project(two, name)
    assert first == second
    for rel, text in first.items():
        assert str(tmp_path) not in text and "/work/" not in text and str(paths.data_dir()) not in text, rel


@pytest.mark.parametrize(
    ("value", "literal"),
    [
        ("plain", "'plain'"),
        ("it's", r"'it\'s'"),
        ("back\\slash", r"'back\\slash'"),
        ("trailing\\", "'trailing\\\\'"),
        ("#{system('touch CANARY')}", r"'#{system(\'touch CANARY\')}'"),
        ('"double"', "'\"double\"'"),
        ("`id`", "'`id`'"),
        ("%q(x)", "'%q(x)'"),
        ("__END__", "'__END__'"),
        ("héllo ✓", "'héllo ✓'"),
        (7, "7"),
        (True, "true"),
        (None, "nil"),
        (["a", 1], "['a', 1]"),
    ],
)
def test_ruby_literal(value, literal):
    assert render.ruby(value) == literal


@pytest.mark.parametrize("bad", ["new\nline", "nul\x00", "tab\t", "del\x7f"])
def test_ruby_literal_refuses_control_characters(bad):
    with pytest.raises(RenderError, match="contains control character"):
        render.ruby(bad)


def test_ruby_literal_refuses_other_types():
    assert render.ruby({"a'": [1, "b"]}) == "{'a\\'' => [1, 'b']}"
    for value in ({1, 2}, 1.5, object()):
        with pytest.raises(RenderError, match=f"cannot write a {type(value).__name__} into a Vagrantfile"):
            render.ruby(value)


@pytest.mark.parametrize("name", ["web", "db-1", "default"])
def test_identifier_allowed(name):
    assert render.ruby_identifier(name) == f"'{name}'"


@pytest.mark.parametrize("name", ["Web", "a b", "x'", "1abc", "", "a" * 40])
def test_identifier_refused(name):
    with pytest.raises(RenderError, match="is not an allowed machine name"):
        render.ruby_identifier(name)


def test_template_cannot_print_unfiltered_values(tmp_path, monkeypatch):
    (tmp_path / "Vagrantfile.j2").write_text("x = {{ description }}\n")
    monkeypatch.setattr(paths, "template_path", lambda: tmp_path / "Vagrantfile.j2")
    box = boxfile.find_box("debian12", paths.shipped_boxes_dir())
    with pytest.raises(RenderError, match="without the ruby filter"):
        render.render(box, render.RenderOptions(driver="qemu"), tmp_path)


def test_template_undefined_is_an_error(tmp_path, monkeypatch):
    (tmp_path / "Vagrantfile.j2").write_text("x = {{ nope | ruby }}\n")
    monkeypatch.setattr(paths, "template_path", lambda: tmp_path / "Vagrantfile.j2")
    box = boxfile.find_box("debian12", paths.shipped_boxes_dir())
    with pytest.raises(RenderError, match="'nope' is undefined"):
        render.render(box, render.RenderOptions(driver="qemu"), tmp_path)


def test_driver_must_be_known(tmp_path):
    box = boxfile.find_box("debian12", paths.shipped_boxes_dir())
    with pytest.raises(RenderError, match="driver must be 'kvm' or 'qemu', not 'xen'"):
        render.render(box, render.RenderOptions(driver="xen"), tmp_path)


def test_multi_machine_overrides(project):
    write_box(
        project,
        "pair",
        "description: two\nbase: {box: debian/bookworm64}\nresources: {memory: 1024}\n"
        "machines:\n  - name: web\n    primary: true\n    resources: {memory: 2048}\n  - name: db\n",
    )
    text = render.render(boxfile.find_box("pair", project / "boxes"), render.RenderOptions(), project)
    assert "config.vm.define 'web', primary: true do |node|" in text
    assert "config.vm.define 'db', primary: false do |node|" in text
    assert (
        text.index("libvirt.memory = 2048") < text.index("config.vm.define 'db'") < text.index("libvirt.memory = 1024")
    )


def test_rhel_family_gets_a_x86_64_v2_cpu_under_emulation(tmp_path):
    box = boxfile.find_box("alma9-fips", paths.shipped_boxes_dir())
    assert "libvirt.cpu_model = 'Nehalem'" in render.render(box, render.RenderOptions(), tmp_path)


def test_domain_prefix_is_per_directory(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    assert workdir.domain_prefix("debian12", a) != workdir.domain_prefix("debian12", b)
    assert re.fullmatch(r"vagabond-debian12-[0-9a-f]{8}-", workdir.domain_prefix("debian12", a))


def test_write_is_atomic_and_keeps_old_file_on_error(project, monkeypatch):
    box = boxfile.find_box("debian12-selinux", paths.shipped_boxes_dir())
    out = project / "vm"
    render.write(box, render.RenderOptions(driver="qemu"), out)
    before = {p: p.read_text() for p in out.rglob("*") if p.is_file()}
    with pytest.raises(RenderError):
        render.write(box, render.RenderOptions(driver="bad"), out)
    assert {p: p.read_text() for p in out.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in out.iterdir()) == ["Vagrantfile", "vagabond-provision"]


def test_rendering_again_is_idempotent_and_says_what_changed(tmp_path):
    project.init(tmp_path, ["debian12-selinux"])
    box = boxfile.find_box("debian12-selinux", project.box_dirs(cwd=tmp_path))
    first = render.write(box, render.RenderOptions(), tmp_path)
    assert first[0] == "Vagrantfile" and "vagabond-provision/site.yml" in first
    assert render.write(box, render.RenderOptions(), tmp_path) == []
    (tmp_path / "playbooks" / "deps.yml").write_text("- hosts: all\n  tasks: [{ansible.builtin.ping: {}}]\n")
    again = render.write(box, render.RenderOptions(), tmp_path)
    assert again == ["Vagrantfile", "vagabond-provision/site.yml"], "the digest and the input list change"


def test_the_vagrantfile_runs_the_same_provisioning_as_vagabond(tmp_path):
    project.init(tmp_path, ["debian12-selinux"])
    box = boxfile.find_box("debian12-selinux", project.box_dirs(cwd=tmp_path))
    render.write(box, render.RenderOptions(), tmp_path)
    text = (tmp_path / "Vagrantfile").read_text()
    assert "ansible.playbook = 'vagabond-provision/site.yml'" in text and "ansible.limit = 'all'" in text
    assert "ansible.groups = {'vagabond' => ['default']}" in text
    site = json.loads((tmp_path / "vagabond-provision" / "site.yml").read_text().split("\n", 1)[1])
    assert [p.get("import_playbook") for p in site[1:]] == ["modes/selinux.yml", "../playbooks/deps.yml", "checks.yml"]
    assert site[1]["vars"] == {"selinux_state": "enforcing"} and site[1]["when"] == "not vagabond_current"
    assert site[0]["vars"]["vagabond_definition"] == playbooks.definition_digest(box)
    assert (tmp_path / "vagabond-provision" / "modes" / "selinux.yml").read_text() == (
        paths.shipped_playbooks_dir() / "modes" / "selinux.yml"
    ).read_text()
    checks = json.loads((tmp_path / "vagabond-provision" / "checks.yml").read_text())
    assert checks[0]["tasks"][0]["ansible.builtin.command"] == {"argv": ["getenforce"]}


def test_a_prebuilt_box_is_what_plain_vagrant_asks_for(tmp_path):
    project.init(tmp_path, ["debian12-selinux"])
    path = tmp_path / "boxes" / "debian12-selinux.yaml"
    path.write_text(
        path.read_text() + "prebuilt: {name: org/deps, catalog: 'https://boxes.example.org/deps/metadata.json'}\n"
    )
    text = render.render(boxfile.load_box(path), render.RenderOptions(), tmp_path)
    assert "config.vm.box = 'org/deps'" in text
    assert "config.vm.box_url = 'https://boxes.example.org/deps/metadata.json'" in text
    assert "box_version" not in text, "the newest version: site.yml skips the playbooks when it holds this definition"
    path.write_text(
        path.read_text().replace("prebuilt: {name: org/deps,", "prebuilt: {version: '~> 1.0', name: org/deps,")
    )
    text = render.render(boxfile.load_box(path), render.RenderOptions(), tmp_path)
    assert "config.vm.box_version = '~> 1.0'" in text, (
        "the versions the box file allows, as vagabond up picks among them"
    )
    assert "box_version" not in render.render(boxfile.load_box(path), render.RenderOptions(fresh=True), tmp_path)


def test_vagrant_checks_a_catalog_box_against_its_checksum_and_never_against_an_images(tmp_path):
    """A box downloaded by Vagrant carries the box file's checksum; an image base's checksum is the
    image's (vagabond's import checks it) and means nothing for the box in the local store."""
    (tmp_path / "boxes").mkdir()
    sha = "a" * 64
    path = write_box(
        tmp_path,
        "cat",
        f"description: d\nbase: {{box: org/b, url: 'https://b.example.org/b.box', checksum: 'sha256:{sha}'}}\n",
    )
    text = render.render(boxfile.load_box(path), render.RenderOptions(), tmp_path)
    assert f"config.vm.box_download_checksum = '{sha}'" in text and "box_download_checksum_type = 'sha256'" in text
    shipped = boxfile.load_box(paths.shipped_boxes_dir() / "centos7-selinux.yaml")
    assert shipped.spec.base.checksum
    assert "box_download_checksum" not in render.render(shipped, render.RenderOptions(), tmp_path)


def test_jinja_environment_is_strict():
    env = render.environment()
    assert env.undefined is jinja2.StrictUndefined
    assert env.trim_blocks and env.lstrip_blocks and not env.autoescape


def test_requirements_reach_plain_vagrant_through_its_galaxy_support(project):
    (project / "playbooks" / "deps.yml").write_text("- hosts: all\n  tasks: []\n")
    (project / "playbooks" / "requirements.yml").write_text("roles: []\n")
    write_box(project, "g", "description: x\nbase: {box: a/b}\nplaybooks: [playbooks/deps.yml]\n")
    box = boxfile.find_box("g", project / "boxes")
    text = render.render(box, render.RenderOptions(), project / ".vagabond" / "g")
    assert "ansible.galaxy_role_file = File.expand_path('./../../playbooks/requirements.yml', __dir__)" in text
    assert "ansible.galaxy_roles_path = File.expand_path('./vagabond-provision/galaxy/roles', __dir__)" in text
    (project / "playbooks" / "requirements.yml").unlink()
    assert "galaxy_role_file" not in render.render(box, render.RenderOptions(), project / ".vagabond" / "g")


def test_the_base_box_when_vagabond_found_no_usable_prebuilt_one(project):
    """Plain Vagrant takes the newest prebuilt box from the catalog; vagabond up, having found none
    it can use (catalog down, no version of this definition), must boot the base box instead."""
    from vagabond.vm import lifecycle

    write_box(
        project,
        "p",
        "description: x\nbase: {box: a/b}\nprebuilt: {name: org/p, catalog: 'http://127.0.0.1:1/p.json'}\n",
    )
    box = boxfile.find_box("p", project / "boxes")
    plain = render.render(box, render.RenderOptions(), project)
    assert "config.vm.box = 'org/p'" in plain and "config.vm.box_url = 'http://127.0.0.1:1/p.json'" in plain
    assert "config.vm.box = 'a/b'" in render.render(box, render.RenderOptions(fresh=True), project)
    wd = workdir.Workdir.for_box(box)
    lifecycle.render_workdir(wd, None)
    text = (wd.path / "Vagrantfile").read_text()
    assert "config.vm.box = 'a/b'" in text and "127.0.0.1:1" not in text
    lifecycle.render_workdir(wd, Published("org/p", "1.2", "http://127.0.0.1:1/p.json"))
    assert "config.vm.box = 'org/p'" in (wd.path / "Vagrantfile").read_text()


@pytest.mark.parametrize(("folder_type", "skipped"), [("rsync", True), ("nfs", False), ("9p", False), (None, True)])
def test_vagrants_fstab_edits_are_skipped_only_without_mounted_folders(project, folder_type, skipped):
    folders = f"synced_folders: [{{src: ., dest: /src, type: {folder_type}}}]\n" if folder_type else ""
    write_box(project, "b", f"description: x\nbase: {{box: a/b}}\n{folders}")
    box = boxfile.find_box("b", project / "boxes")
    text = render.render(box, render.RenderOptions(), project)
    assert ("guest_capability(:linux, :persist_mount_shared_folder)" in text) is skipped


def test_render_says_what_plain_vagrant_does_with_a_prebuilt_box_in_a_registry(project):
    from typer.testing import CliRunner

    from vagabond.cli.app import app

    write_box(
        project,
        "reg",
        "description: x\nbase: {box: a/b}\nprebuilt: {name: org/reg, catalog: 'oci://ghcr.io/org/repo/reg'}\n",
    )
    result = CliRunner().invoke(app, ["render", "reg", "-o", str(project / "out")])
    assert result.exit_code == 0, result.output
    assert "which plain `vagrant up` cannot read" in result.output and "vagabond pull reg" in result.output
    text = (project / "out" / "Vagrantfile").read_text()
    assert "vagabond_prebuilt = 'org/reg'" in text and "config.vm.box = 'a/b'" in text


def test_the_boxs_packages_are_installed_after_the_modes_and_before_the_playbooks(tmp_path):
    """`packages:` is one play of site.yml, skipped like the playbooks on a prebuilt box that holds
    this definition, and part of the definition's digest (a prebuilt box without them is stale)."""
    project.init(tmp_path, ["debian12-selinux"])
    path = tmp_path / "boxes" / "debian12-selinux.yaml"
    before = playbooks.definition_digest(boxfile.load_box(path))
    path.write_text(path.read_text() + "packages: [make, gcc]\n")
    box = boxfile.load_box(path)
    assert playbooks.definition_digest(box) != before
    render.write(box, render.RenderOptions(), tmp_path)
    site = json.loads((tmp_path / "vagabond-provision" / "site.yml").read_text().split("\n", 1)[1])
    assert [p.get("import_playbook", p.get("name")) for p in site[1:]] == [
        "modes/selinux.yml",
        "vagabond: the box's packages",
        "../playbooks/deps.yml",
        "checks.yml",
    ]
    play = site[2]
    assert play["gather_subset"] == ["!all", "!min", "pkg_mgr"] and play["become"] is True
    installs = {t["name"]: t for t in play["tasks"] if t["name"].startswith("Install")}
    assert installs["Install the box's packages (apt)"]["ansible.builtin.apt"]["name"] == ["make", "gcc"]
    assert installs["Install the box's packages (yum)"]["ansible.builtin.yum"] == {
        "name": ["make", "gcc"],
        "state": "present",
    }
    assert installs["Install the box's packages (dnf)"]["ansible.builtin.dnf"]["name"] == ["make", "gcc"]
    assert all("not vagabond_current" in t["when"] for t in play["tasks"])


@pytest.mark.parametrize("name", ["-oDpkg::Pre-Invoke=x", "make gcc", "{{ lookup('pipe', 'id') }}", ""])
def test_a_package_name_that_is_not_one_is_refused_where_it_stands(tmp_path, name):
    (tmp_path / "boxes").mkdir()
    path = write_box(tmp_path, "box", f"description: x\nbase: {{box: a/b}}\npackages:\n  - {json.dumps(name)}\n")
    with pytest.raises(BoxDefinitionError, match=r"box\.yaml:4: packages\[0\]: .* is not a valid package name$"):
        boxfile.load_box(path)


def test_a_box_whose_only_provisioning_is_packages_is_provisioned(tmp_path):
    """No mode, no playbook, only `packages:`: the Vagrantfile still has its provisioner, and up,
    idempotence and plain vagrant up run site.yml (they skipped it, so the packages never came)."""
    (tmp_path / "boxes").mkdir()
    path = tmp_path / "boxes" / "debian12.yaml"
    path.write_text((REPO / "boxes" / "debian12.yaml").read_text() + "packages: [make]\n")
    box = boxfile.load_box(path)
    assert not playbooks.all_playbooks(box) and playbooks.provisions(box)
    text = render.render(box, render.RenderOptions(), tmp_path)
    assert "ansible.playbook = 'vagabond-provision/site.yml'" in text


@pytest.mark.parametrize("kind", ["mmdebstrap", "image"])
def test_a_made_base_with_a_catalog_is_what_plain_vagrant_downloads(project, kind):
    """Plain Vagrant on a machine that never ran vagabond: the made base box comes from the catalog
    the project published it to; without one, render says that vagabond must run once."""
    from typer.testing import CliRunner

    from vagabond.cli.app import app

    base = (
        "{kind: mmdebstrap, box: org/deb, suite: bookworm"
        if kind == "mmdebstrap"
        else "{kind: image, box: org/img, image: 'https://example.org/i.qcow2', checksum: 'sha256:" + "a" * 64 + "'"
    )
    write_box(project, "c", f"description: x\nbase: {base}, catalog: 'https://example.org/b/metadata.json'}}\n")
    write_box(project, "n", f"description: x\nbase: {base}}}\n")
    text = render.render(boxfile.find_box("c", project / "boxes"), render.RenderOptions(), project)
    assert "config.vm.box_url = 'https://example.org/b/metadata.json'" in text
    assert "config.vm.box_check_update = false" in text, "the store's own version: no catalog request per up"
    assert "box_url" not in render.render(boxfile.find_box("n", project / "boxes"), render.RenderOptions(), project)
    said = " ".join(CliRunner().invoke(app, ["render", "n"]).stderr.split())
    assert "plain `vagrant up` needs `vagabond up n` once first" in said
    assert "needs `vagabond up" not in " ".join(CliRunner().invoke(app, ["render", "c"]).stderr.split())


@pytest.mark.parametrize(
    "catalog", ["ftp://x/metadata.json", "https://x/box.box", "metadata.json", "https://x/ y.json"]
)
def test_a_base_catalog_vagrant_cannot_read_is_refused_at_its_line(project, catalog):
    write_box(
        project,
        "c",
        f"description: x\nbase:\n  kind: mmdebstrap\n  box: o/d\n  suite: bookworm\n  catalog: '{catalog}'\n",
    )
    with pytest.raises(BoxDefinitionError, match=r"c\.yaml:6: base\.catalog: a catalog Vagrant reads"):
        boxfile.find_box("c", project / "boxes")


@pytest.mark.parametrize(
    ("resources", "guest", "expected"),
    [
        ("", "debian", "libvirt.cpu_model = 'qemu64'"),
        ("", "redhat", "libvirt.cpu_model = 'Nehalem'"),
        ("resources: {cpu: Nehalem}\n", "debian", "libvirt.cpu_model = 'Nehalem'"),
        ("resources: {cpu: max}\n", "redhat", "libvirt.cpu_mode = 'maximum'"),
    ],
)
def test_the_cpu_under_emulation_is_the_boxs_or_its_familys(project, resources, guest, expected):
    """EL 10 needs x86-64-v3, which only `max` gives under TCG: the CPU is a property of the box."""
    write_box(project, "c", f"description: x\nbase: {{box: a/b}}\nguest: {guest}\n{resources}")
    text = render.render(boxfile.find_box("c", project / "boxes"), render.RenderOptions(), project)
    emulated = text.split("if vagabond_driver == 'qemu'", 1)[1].split("else", 1)[0]
    assert expected in emulated
    assert "libvirt.cpu_mode = 'host-passthrough'" in text, "under KVM the host's CPU, whatever the box says"


def test_no_note_when_plain_vagrant_boots_the_prebuilt_box_from_its_catalog(project):
    from typer.testing import CliRunner

    from vagabond.cli.app import app

    write_box(
        project,
        "p",
        "description: x\nbase: {kind: mmdebstrap, box: o/d, suite: bookworm}\n"
        "prebuilt: {name: org/p, catalog: 'https://example.org/p/metadata.json'}\n",
    )
    said = " ".join(CliRunner().invoke(app, ["render", "p"]).stderr.split())
    assert "needs `vagabond up" not in said, "the Vagrantfile boots the prebuilt box from its catalog"
    assert "needs `vagabond up p` once first" in " ".join(
        CliRunner().invoke(app, ["render", "p", "--fresh"]).stderr.split()
    )
