"""A user's project: `vagabond init`, and the same project from any directory inside it."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from vagabond.cli.app import app
from vagabond.definition import boxfile, project
from vagabond.errors import UsageError
from vagabond.host import libvirt

runner = CliRunner()


def test_init_starts_a_fresh_project_with_a_starter_box(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["init"])
    assert result.exit_code == 0, result.output
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file()) == [
        "boxes/project.yaml",
        "playbooks/deps.yml",
    ]
    box = boxfile.find_box("project", project.box_dirs(cwd=tmp_path))
    assert box.origin == "project" and box.playbook_paths() == [tmp_path / "playbooks" / "deps.yml"]
    assert box.spec.synced_folders[0].dest == "/src"
    assert "vagabond up project" in result.stdout and "wrote boxes/project.yaml" in result.stderr


def test_init_copies_shipped_boxes_and_runs_the_starter_playbook_in_them(tmp_path):
    written, kept = project.init(tmp_path, ["debian12-selinux", "centos7-selinux"])
    assert sorted(p.relative_to(tmp_path).as_posix() for p in written) == [
        "boxes/centos7-selinux.yaml",
        "boxes/debian12-selinux.yaml",
        "playbooks/deps.yml",
    ]
    assert kept == []
    dirs = project.box_dirs(cwd=tmp_path)
    for name in ("debian12-selinux", "centos7-selinux"):
        box = boxfile.find_box(name, dirs)
        assert box.origin == "project", "the project's copy overrides the shipped box"
        assert box.spec.modes.selinux == "enforcing"
        assert box.playbook_paths() == [tmp_path / "playbooks" / "deps.yml"]


def test_init_refuses_to_overwrite_and_writes_nothing(tmp_path):
    (tmp_path / "boxes").mkdir()
    (tmp_path / "boxes" / "debian12.yaml").write_text("mine\n")
    with pytest.raises(UsageError, match=r"^boxes/debian12.yaml already exists in .*; nothing was written"):
        project.init(tmp_path, ["debian12-selinux", "debian12"])
    assert (tmp_path / "boxes" / "debian12.yaml").read_text() == "mine\n"
    assert not (tmp_path / "boxes" / "debian12-selinux.yaml").exists()
    assert not (tmp_path / "playbooks").exists()


def test_init_keeps_an_existing_playbook(tmp_path):
    (tmp_path / "playbooks").mkdir()
    (tmp_path / "playbooks" / "deps.yml").write_text("- hosts: all\n  tasks: []\n")
    written, kept = project.init(tmp_path, ["debian12"])
    assert [p.name for p in written] == ["debian12.yaml"] and kept == [tmp_path / "playbooks" / "deps.yml"]
    assert (tmp_path / "playbooks" / "deps.yml").read_text() == "- hosts: all\n  tasks: []\n"


def test_init_of_an_unknown_box_names_the_shipped_ones(tmp_path):
    result = runner.invoke(app, ["init", "nope"], catch_exceptions=False)
    assert result.exit_code == 4
    assert result.stderr.startswith("error: no box named 'nope' in the shipped boxes (available: alma10, alma9-fips")


def test_commands_answer_about_the_same_vm_from_a_subdirectory(tmp_path, monkeypatch):
    project.init(tmp_path, ["debian12"])
    deep = tmp_path / "src" / "deep"
    deep.mkdir(parents=True)
    monkeypatch.chdir(deep)
    monkeypatch.setattr(libvirt, "domains", lambda prefix="": {})
    result = runner.invoke(app, ["status", "debian12", "--json"])
    assert result.exit_code == 6, result.output
    assert f"box 'debian12' is not up here ({tmp_path / '.vagabond' / 'debian12'})" in result.stderr


@pytest.mark.parametrize(
    "argv",
    [
        ["halt", "debian12"],
        ["ssh", "debian12"],
        ["provision", "debian12"],
        ["provision", "debian12", "--check-idempotence"],
    ],
)
def test_a_command_on_a_vm_that_was_never_brought_up_says_so_in_one_line(tmp_path, monkeypatch, argv):
    project.init(tmp_path, ["debian12"])
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(libvirt, "domains", lambda prefix="": {})
    result = runner.invoke(app, argv)
    assert result.exit_code == 6, result.output
    assert result.stderr == (
        f"error: box 'debian12' is not up here ({tmp_path / '.vagabond' / 'debian12'}) "
        "(run 'vagabond up debian12' first)\n"
    )
