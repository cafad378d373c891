"""Rendering: golden Vagrantfiles for the shipped boxes, and the Ruby literal filter's guarantees."""

from __future__ import annotations

import os
import re

import jinja2
import pytest

from tests.conftest import REPO, write_box
from vagabond import boxes, paths, render, workdir
from vagabond.errors import RenderError

GOLDEN = REPO / "tests" / "golden"
SHIPPED = ["alma9-fips", "centos7-selinux", "debian12", "debian12-selinux"]


@pytest.mark.parametrize("driver", ["qemu", "kvm"])
@pytest.mark.parametrize("name", SHIPPED)
def test_golden(name, driver):
    box = boxes.find_box(name, paths.shipped_boxes_dir())
    text = render.render(box, render.RenderOptions(driver=driver))
    golden = GOLDEN / f"{name}.{driver}.Vagrantfile"
    if os.environ.get("UPDATE_GOLDEN"):
        golden.write_text(text)
    assert text == golden.read_text(), f"re-run with UPDATE_GOLDEN=1 if the change to {golden.name} is intended"


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
    with pytest.raises(RenderError, match="cannot write a dict into a Vagrantfile"):
        render.ruby({"a": 1})


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
    box = boxes.find_box("debian12", paths.shipped_boxes_dir())
    with pytest.raises(RenderError, match="without the ruby filter"):
        render.render(box, render.RenderOptions(driver="qemu"))


def test_template_undefined_is_an_error(tmp_path, monkeypatch):
    (tmp_path / "Vagrantfile.j2").write_text("x = {{ nope | ruby }}\n")
    monkeypatch.setattr(paths, "template_path", lambda: tmp_path / "Vagrantfile.j2")
    box = boxes.find_box("debian12", paths.shipped_boxes_dir())
    with pytest.raises(RenderError, match="'nope' is undefined"):
        render.render(box, render.RenderOptions(driver="qemu"))


def test_driver_must_be_known():
    box = boxes.find_box("debian12", paths.shipped_boxes_dir())
    with pytest.raises(RenderError, match="driver must be 'kvm' or 'qemu', not 'xen'"):
        render.render(box, render.RenderOptions(driver="xen"))


def test_multi_machine_overrides(project):
    write_box(
        project,
        "pair",
        "description: two\nbase: {box: debian/bookworm64}\nresources: {memory: 1024}\n"
        "machines:\n  - name: web\n    primary: true\n    resources: {memory: 2048}\n  - name: db\n",
    )
    text = render.render(boxes.find_box("pair", project / "boxes"), render.RenderOptions(driver="kvm"))
    assert "config.vm.define 'web', primary: true do |node|" in text
    assert "config.vm.define 'db', primary: false do |node|" in text
    assert text.index("libvirt.memory = 2048") < text.index("config.vm.define 'db'") < text.index("libvirt.memory = 1024")


def test_rhel_family_gets_a_x86_64_v2_cpu_under_emulation():
    box = boxes.find_box("alma9-fips", paths.shipped_boxes_dir())
    assert "libvirt.cpu_model = 'Nehalem'" in render.render(box, render.RenderOptions(driver="qemu"))


def test_domain_prefix_is_per_directory(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    assert workdir.domain_prefix("debian12", a) != workdir.domain_prefix("debian12", b)
    assert re.fullmatch(r"vagabond-debian12-[0-9a-f]{8}-", workdir.domain_prefix("debian12", a))


def test_write_is_atomic_and_keeps_old_file_on_error(project, monkeypatch):
    box = boxes.find_box("debian12", paths.shipped_boxes_dir())
    out = project / "vm" / "Vagrantfile"
    render.write_vagrantfile(box, render.RenderOptions(driver="qemu"), out)
    before = out.read_text()
    with pytest.raises(RenderError):
        render.write_vagrantfile(box, render.RenderOptions(driver="bad"), out)
    assert out.read_text() == before
    assert [p.name for p in out.parent.iterdir()] == ["Vagrantfile"]


def test_jinja_environment_is_strict():
    env = render.environment()
    assert env.undefined is jinja2.StrictUndefined
    assert env.trim_blocks and env.lstrip_blocks and not env.autoescape
