"""A user's project: its root (found by walking up, as git finds .git), where its boxes are looked
up, and `vagabond init`, which starts one.

A project is a directory holding boxes/ (box files), playbooks/ (what they run) and, once a VM has
run, .vagabond/ (work directories). Paths in a box file are relative to the project root.
"""

from __future__ import annotations

import os
from pathlib import Path

from vagabond import files, paths
from vagabond.errors import UsageError

BOXES = "boxes"
# Where the project's work directories live (<project>/.vagabond/<box>/), and the record each keeps
# of its VM: vagabond.vm.workdir owns everything else in them.
WORKDIRS = ".vagabond"
STATE = "state.json"
# A directory holding either of these is a project's root (as one holding .git is a repository's).
PROJECT_MARKERS = (BOXES, WORKDIRS)
STARTER_BOX = "project"
STARTER_PLAYBOOK = "playbooks/deps.yml"


def project_root(cwd: Path | None = None) -> Path:
    """The project the current directory belongs to: the nearest directory, walking up, that
    holds boxes/ or .vagabond/; the current directory itself when none does (a new project)."""
    start = (cwd or Path.cwd()).absolute()
    for directory in (start, *start.parents):
        if any((directory / marker).is_dir() for marker in PROJECT_MARKERS):
            return directory
    return start


def read_state(workdir: Path) -> dict:
    """A work directory's record of its VM ({} when there is none, or it is not one): bounded JSON,
    as any file others may have written."""
    try:
        state = files.loads((workdir / STATE).read_bytes(), str(workdir / STATE), max_bytes=2**20)
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def recorded_workdirs(cwd: Path | None = None) -> dict[str, Path]:
    """The work directories of the current project with the libvirt prefix their state names."""
    root = project_root(cwd) / WORKDIRS
    found = {}
    for directory in sorted(root.iterdir()) if root.is_dir() else []:
        prefix = read_state(directory).get("prefix") if directory.is_dir() else None
        if isinstance(prefix, str) and prefix:
            found[prefix] = directory.absolute()
    return found


def box_dirs(option: str | Path | None = None, cwd: Path | None = None) -> list[tuple[Path, str]]:
    """Where box files are looked up, first match wins, each with where it came from: --boxes-dir,
    else $VAGABOND_BOXES, else the project's boxes/; then the boxes shipped with vagabond, so a
    project box overrides a shipped box of the same name and the others stay available."""
    env = os.environ.get("VAGABOND_BOXES")
    if option:
        first = [(Path(option).absolute(), "--boxes-dir")]
    elif env:
        first = [(Path(env).absolute(), "VAGABOND_BOXES")]
    else:
        first = [(project_root(cwd) / BOXES, "project")]
    shipped = paths.shipped_boxes_dir()
    return [d for d in first if d[0].resolve() != shipped.resolve()] + [(shipped, "shipped")]


STARTER_BOX_TEXT = f"""\
# A box: the VM this project's tests run in. `vagabond up {STARTER_BOX}` boots it, provisions it
# and checks its modes; the README of vagabond lists every key ("Box files").
description: Debian 12 for this project's tests

# Where the VM starts from: built here from Debian's packages, no box catalog needed.
# Other bases: {{box: NAME, version: ...}} from a box catalog, or {{kind: image, image: URL, ...}}.
base:
  kind: mmdebstrap
  suite: bookworm
  box: vagabond/debian12
guest: debian

resources: {{memory: 1024, cpus: 2, disk: 8}}   # MiB, count, GiB

# What containers cannot give you; each mode is set by vagabond and checked after every up.
# modes: {{selinux: enforcing}}                 # enforcing | permissive | disabled; or fips: true

# Ansible playbooks that install the project's dependencies, in order (paths from the project root).
playbooks:
  - {STARTER_PLAYBOOK}

# The project, copied into the VM at every up (rsync).
synced_folders:
  - {{src: ., dest: /src, exclude: [.git, .vagabond]}}
"""

STARTER_PLAYBOOK_TEXT = """\
# The project's dependencies, installed in the VM by `vagabond up` (and baked into a prebuilt box
# by `vagabond build`, so CI does not install them on every run). Run it again with
# `vagabond provision BOX`: a second run should report changed=0.
- name: Dependencies
  hosts: all
  become: true
  vars:
    test_packages: []   # e.g. [make, gcc]: the distribution's package names
  tasks:
    - name: Install the packages the tests need
      when: test_packages | length > 0
      ansible.builtin.package:
        name: "{{ test_packages }}"
        state: present
"""

PLAYBOOKS_HOOK = f"""
# The project's dependencies (added by `vagabond init`).
playbooks:
  - {STARTER_PLAYBOOK}
"""


def init(root: Path, names: list[str]) -> tuple[list[Path], list[Path]]:
    """Start a project in ``root``: the named shipped boxes (or a commented starter box) in boxes/,
    and a starter playbook they run. Returns (written, kept): nothing is ever overwritten; a box
    file that exists already is an error and then nothing at all is written."""
    from vagabond.definition import boxfile  # the schema (pydantic) only for init, not for every project lookup

    shipped = [(paths.shipped_boxes_dir(), "shipped")]
    texts: dict[Path, str] = {}
    for name in names or [STARTER_BOX]:
        target = root / BOXES / f"{name}.yaml"
        if not names:
            texts[target] = STARTER_BOX_TEXT
            continue
        box = boxfile.find_box(name, shipped)
        text = box.path.read_text(encoding="utf-8")
        texts[target] = text if box.spec.playbooks else text.rstrip("\n") + "\n" + PLAYBOOKS_HOOK
    taken = [p for p in texts if p.exists()]
    if taken:
        listed = ", ".join(str(p.relative_to(root)) for p in taken)
        raise UsageError(
            f"{listed} already exists in {root}; nothing was written", hint="edit the existing file, or remove it first"
        )
    playbook = root / STARTER_PLAYBOOK
    kept = [playbook] if playbook.exists() else []
    if not kept:
        texts[playbook] = STARTER_PLAYBOOK_TEXT
    for path, text in texts.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "x", encoding="utf-8") as fh:  # "x": never overwrite, even in a race
            fh.write(text)
    return list(texts), kept
