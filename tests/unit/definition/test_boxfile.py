"""Box schema: shipped boxes load, and every kind of mistake gets a pinned file:line message."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import write_box
from vagabond import paths
from vagabond.definition import boxfile
from vagabond.definition import project as project_mod
from vagabond.errors import BoxDefinitionError, BoxNotFound
from vagabond.vm import workdir

VALID = """\
description: AlmaLinux 9 in FIPS mode
base:
  box: almalinux/9
guest: redhat
resources:
  cpus: 2
  memory: 2048
modes:
  fips: true
"""


def problems(project, text, name="alma9-fips"):
    write_box(project, name, text)
    with pytest.raises(BoxDefinitionError) as info:
        boxfile.find_box(name, project / "boxes")
    return info.value.problems


def test_shipped_boxes_load():
    found = {b.name: b for b in boxfile.list_boxes(paths.shipped_boxes_dir())}
    assert {"centos7-selinux", "alma9-fips", "debian12", "debian12-selinux"} <= set(found)
    assert found["centos7-selinux"].spec.modes.selinux == "enforcing"
    assert found["alma9-fips"].spec.modes.fips is True
    assert found["debian12"].spec.base.kind == "mmdebstrap"


def test_valid_box_defaults(project):
    write_box(project, "alma9-fips", VALID)
    box = boxfile.find_box("alma9-fips", project / "boxes")
    assert box.spec.resources.memory == 2048
    assert box.spec.resources.disk == 20
    assert box.spec.base.kind == "vagrant"
    assert box.spec.synced_folders == []
    assert box.machine_names() == ["default"]


def test_wrong_type_names_file_line_and_field(project):
    text = VALID.replace("cpus: 2", "cpus: [2]")
    assert problems(project, text) == ["boxes/alma9-fips.yaml:6: resources.cpus: Input should be a valid integer"]


def test_string_number_is_not_silently_converted(project):
    text = VALID.replace("cpus: 2", 'cpus: "2"')
    assert problems(project, text) == [
        "boxes/alma9-fips.yaml:6: resources.cpus: Input should be a valid integer (got '2')"
    ]


@pytest.mark.parametrize(
    ("memory", "disk", "mib", "gib"),
    [
        ("2048", "20", 2048, 20),
        ("2G", "40G", 2048, 40),
        ("2048M", "40GiB", 2048, 40),
        ("'1 GiB'", "'1T'", 1024, 1024),
        ('"3072"', "8", 3072, 8),
    ],
)
def test_sizes_take_units(project, memory, disk, mib, gib):
    write_box(project, "s", f"description: x\nbase: {{box: a/b}}\nresources: {{memory: {memory}, disk: {disk}}}\n")
    resources = boxfile.find_box("s", project / "boxes").spec.resources
    assert (resources.memory, resources.disk) == (mib, gib)


@pytest.mark.parametrize(
    ("memory", "problem"),
    [
        ("lots", "resources.memory: 'lots' is not a size: write a number of MiB, or one with a unit (512M, 2G)"),
        ("1500K", "resources.memory: '1500K' is not a whole number of MiB"),
        (
            "100",
            "resources.memory: Input should be greater than or equal to 256 (got 100); memory is in MiB "
            "unless it has a unit (2G, 2048M)",
        ),
    ],
)
def test_a_size_that_is_not_one_says_which_unit(project, memory, problem):
    text = f"description: x\nbase: {{box: a/b}}\nresources: {{memory: {memory}}}\n"
    assert problems(project, text, name="s") == [f"boxes/s.yaml:3: {problem}"]


def test_unknown_key_is_an_error(project):
    text = VALID.replace("  cpus: 2", "  cpuss: 2")
    assert problems(project, text) == ["boxes/alma9-fips.yaml:6: resources.cpuss: unknown key: did you mean 'cpus'?"]


def test_the_cpu_under_emulation_is_one_qemu_model_vagabond_knows(project):
    text = VALID.replace("  cpus: 2", "  cpus: 2\n  cpu: host")
    assert problems(project, text) == [
        "boxes/alma9-fips.yaml:7: resources.cpu: Input should be 'qemu64', 'Nehalem' or 'max' (got 'host')"
    ]


def test_missing_required_key(project):
    text = VALID.replace("description: AlmaLinux 9 in FIPS mode\n", "")
    assert problems(project, text) == ["boxes/alma9-fips.yaml:1: description: required key is missing"]


def test_missing_nested_key_points_at_its_parent(project):
    text = VALID.replace("  box: almalinux/9\n", "  version: '>= 9'\n")
    assert problems(project, text) == ["boxes/alma9-fips.yaml:3: base.box: required key is missing"]


def test_bad_mode_value(project):
    text = VALID.replace("  fips: true", "  selinux: enforced")
    assert problems(project, text) == [
        "boxes/alma9-fips.yaml:9: modes.selinux: Input should be 'enforcing', 'permissive' or 'disabled' (got "
        "'enforced')"
    ]


def test_out_of_range(project):
    text = VALID.replace("cpus: 2", "cpus: 0")
    assert problems(project, text) == [
        "boxes/alma9-fips.yaml:6: resources.cpus: Input should be greater than or equal to 1 (got 0)"
    ]


def test_several_problems_are_all_reported(project):
    text = VALID.replace("cpus: 2", "cpus: many").replace("memory: 2048", "memory: lots")
    assert problems(project, text) == [
        "boxes/alma9-fips.yaml:6: resources.cpus: Input should be a valid integer (got 'many')",
        "boxes/alma9-fips.yaml:7: resources.memory: 'lots' is not a size: write a number of MiB, or one with "
        "a unit (512M, 2G)",
    ]


def test_yaml_syntax_error_has_line(project):
    text = VALID.replace("  cpus: 2", "  cpus: [2")
    (problem,) = problems(project, text)
    assert problem.startswith("boxes/alma9-fips.yaml:")
    assert "YAML syntax error" in problem


def test_duplicate_key_is_refused(project):
    (problem,) = problems(project, VALID + "guest: debian\n")
    assert problem.startswith("boxes/alma9-fips.yaml:") and "duplicate key" in problem


def test_control_characters_are_refused(project):
    text = VALID.replace("description: AlmaLinux 9 in FIPS mode", 'description: "two\\nlines"')
    assert problems(project, text) == [
        "boxes/alma9-fips.yaml:1: description: control character '\\n' is not allowed "
        "(write the value on one line, without tabs or NUL)"
    ]


def test_machine_names_are_allow_listed(project):
    text = VALID + "machines:\n  - name: \"web'; system('x')\"\n"
    assert problems(project, text) == [
        "boxes/alma9-fips.yaml:11: machines[0].name: "
        "\"web'; system('x')\" is not a valid name (lowercase letters, digits and '-', starting with a letter)"
    ]


def test_duplicate_machine_names(project):
    text = VALID + "machines:\n  - name: web\n  - name: web\n"
    assert problems(project, text) == ["boxes/alma9-fips.yaml:1: machine names must be unique: web repeated"]


def test_unknown_base_kind(project):
    text = VALID.replace("  box: almalinux/9", "  kind: iso\n  box: almalinux/9")
    assert problems(project, text) == [
        "boxes/alma9-fips.yaml:3: base.kind: must be one of: vagrant, mmdebstrap, image (got 'iso')"
    ]


def test_missing_playbook_is_reported_with_line(project):
    text = VALID + "playbooks:\n  - playbooks/deps.yml\n"
    assert problems(project, text) == [
        "boxes/alma9-fips.yaml:11: playbooks[0].path: 'playbooks/deps.yml' does not exist"
    ]


def test_playbook_shorthand_and_vars(project):
    (project / "playbooks" / "deps.yml").write_text("- hosts: all\n  tasks: []\n")
    write_box(
        project, "x", VALID + "playbooks:\n  - playbooks/deps.yml\n  - path: playbooks/deps.yml\n    vars: {a: 1}\n"
    )
    box = boxfile.find_box("x", project / "boxes")
    assert [p.vars for p in box.spec.playbooks] == [{}, {"a": 1}]
    assert box.playbook_paths() == [project / "playbooks" / "deps.yml"] * 2


def test_bad_file_name(project):
    write_box(project, "Bad Name", VALID)
    with pytest.raises(BoxDefinitionError, match=r"^boxes/Bad Name.yaml:1: box file name 'Bad Name' must be"):
        boxfile.load_box(project / "boxes" / "Bad Name.yaml")


def test_not_a_mapping(project):
    assert problems(project, "- just\n- a list\n") == [
        "boxes/alma9-fips.yaml:1: a box file must be a mapping of keys (description, base, ...)"
    ]


def test_unknown_box_lists_available(project):
    write_box(project, "one", VALID)
    with pytest.raises(BoxNotFound, match=r"^no box named 'two' in boxes \(available: one\)$"):
        boxfile.find_box("two", project / "boxes")


SHIPPED = (paths.shipped_boxes_dir(), "shipped")


def test_box_dirs_precedence_and_the_shipped_boxes_always_last(project, monkeypatch):
    assert project_mod.box_dirs(None) == [(project / "boxes", "project"), SHIPPED]
    monkeypatch.setenv("VAGABOND_BOXES", "/elsewhere")
    assert project_mod.box_dirs(None) == [(Path("/elsewhere"), "VAGABOND_BOXES"), SHIPPED]
    assert project_mod.box_dirs("/opt/b") == [(Path("/opt/b"), "--boxes-dir"), SHIPPED]


def test_project_root_is_found_from_a_subdirectory(project):
    deep = project / "src" / "pkg"
    deep.mkdir(parents=True)
    assert project_mod.project_root(deep) == project
    assert project_mod.box_dirs(cwd=deep)[0] == (project / "boxes", "project")
    assert workdir.default_path("b", deep) == project / ".vagabond" / "b"


def test_a_directory_with_only_a_work_directory_is_a_project_root(tmp_path):
    (tmp_path / ".vagabond").mkdir()
    (tmp_path / "a" / "b").mkdir(parents=True)
    assert project_mod.project_root(tmp_path / "a" / "b") == tmp_path


def test_outside_any_project_the_current_directory_is_the_root(tmp_path):
    assert project_mod.project_root(tmp_path) == tmp_path
    assert project_mod.box_dirs(cwd=tmp_path) == [(tmp_path / "boxes", "project"), SHIPPED]
    # No boxes/ of its own: the shipped boxes are all there is, and nothing complains.
    names = {b.name for b in boxfile.list_boxes(project_mod.box_dirs(cwd=tmp_path))}
    assert {"debian12", "debian12-selinux", "centos7-selinux", "alma9-fips"} <= names


def test_project_boxes_and_shipped_boxes_together(project):
    write_box(project, "debian12", VALID)  # overrides the shipped box of that name
    write_box(project, "mine", VALID)
    dirs = project_mod.box_dirs(cwd=project)
    entries = {e.name: e for e in boxfile.scan(dirs)}
    assert (entries["debian12"].origin, entries["debian12"].overrides) == ("project", "shipped")
    assert entries["debian12"].path == project / "boxes" / "debian12.yaml"
    assert (entries["mine"].origin, entries["mine"].overrides) == ("project", None)
    assert (entries["centos7-selinux"].origin, entries["centos7-selinux"].overrides) == ("shipped", None)
    assert boxfile.find_box("debian12", dirs).spec.description == "AlmaLinux 9 in FIPS mode"
    assert boxfile.find_box("centos7-selinux", dirs).origin == "shipped"
    # A command that names no box means the project's own boxes.
    assert sorted(b.name for b in boxfile.default_selection(dirs)) == ["debian12", "mine"]


def test_a_broken_box_file_does_not_hide_the_others(project):
    write_box(project, "good", VALID)
    write_box(project, "bad", "description: x\nbase: {box: a/b}\nresource: {memory: 1}\n")
    entries = {e.name: e for e in boxfile.scan(project_mod.box_dirs(cwd=project))}
    assert entries["good"].box is not None and entries["debian12"].box is not None
    assert entries["bad"].box is None
    assert entries["bad"].problems == ("boxes/bad.yaml:3: resource: unknown key: did you mean 'resources'?",)


def test_a_missing_boxes_dir_given_by_the_user_is_an_error(project):
    with pytest.raises(BoxNotFound, match=r"^boxes directory /nowhere does not exist$"):
        boxfile.find_box("debian12", project_mod.box_dirs("/nowhere"))
