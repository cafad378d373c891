"""Ansible: the playbooks a box runs and their digest, inventory from the SSH config, one
ansible-playbook run, and the checks that prove a mode."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from vagabond import paths, process, remote, timeouts, ui
from vagabond.boxes import Box
from vagabond.errors import ModeCheckFailed
from vagabond.workdir import Workdir


@dataclass(frozen=True)
class PlaybookRun:
    path: Path
    vars: dict


@dataclass(frozen=True)
class ModeCheck:
    mode: str
    argv: tuple[str, ...]
    expect: str


def mode_playbooks(box: Box) -> list[PlaybookRun]:
    modes = box.spec.modes
    runs = []
    if modes.selinux is not None:
        runs.append(PlaybookRun(paths.shipped_playbooks_dir() / "modes" / "selinux.yml", {"selinux_state": modes.selinux}))
    if modes.fips:
        runs.append(PlaybookRun(paths.shipped_playbooks_dir() / "modes" / "fips.yml", {}))
    return runs


def mode_checks(box: Box) -> list[ModeCheck]:
    modes = box.spec.modes
    checks = []
    if modes.selinux is not None:
        # Through sudo: its secure_path has the sbin directories whatever the box's login PATH is.
        checks.append(ModeCheck("selinux", ("sudo", "-n", "getenforce"), modes.selinux.capitalize()))
    if modes.fips:
        checks.append(ModeCheck("fips", ("cat", "/proc/sys/crypto/fips_enabled"), "1"))
    return checks


def all_playbooks(box: Box) -> list[PlaybookRun]:
    """Modes first (they may reboot the guest), then the box's dependency playbooks in order."""
    deps = [PlaybookRun(path, dict(p.vars)) for path, p in zip(box.playbook_paths(), box.spec.playbooks)]
    return mode_playbooks(box) + deps


# Beside a playbook, what Ansible loads by convention (roles, vars, templates, its own plugins).
ANSIBLE_DIRS = ("roles", "group_vars", "host_vars", "vars", "tasks", "handlers", "templates", "files", "library",
                "module_utils", "filter_plugins", "lookup_plugins", "collections", "requirements.yml")  # fmt: skip


def playbook_inputs(playbook: Path, project_dir: Path) -> list[Path]:
    """Every file a playbook can load: its directory tree (roles, included tasks, templates, vars),
    hidden entries left out. A playbook at the project's top level gets only itself and Ansible's
    conventional neighbours, not the whole project (the code under test is not a dependency)."""
    home = playbook.parent
    if home.resolve() == project_dir.resolve():
        roots = [playbook] + [home / name for name in ANSIBLE_DIRS]
    else:
        roots = [home]
    found = set()
    for root in roots:
        candidates = [root] if root.is_file() else (root.rglob("*") if root.is_dir() else [])
        for path in candidates:
            if path.is_file() and not any(part.startswith(".") for part in path.relative_to(home).parts):
                found.add(path)
    return sorted(found)


def definition_digest(box: Box) -> str:
    """sha256 over the box file and everything that provisions it (each playbook with every file it
    can load), in order: a prebuilt box is current exactly when this matches the digest recorded
    when it was built, so a changed role, template or vars file makes it stale too."""
    digest = hashlib.sha256()
    digest.update(box.path.read_bytes())
    for run in all_playbooks(box):
        digest.update(b"\0playbook\0" + run.path.name.encode() + b"\0" + json.dumps(run.vars, sort_keys=True).encode())
        for path in playbook_inputs(run.path, box.project_dir):
            digest.update(b"\0" + str(path.relative_to(run.path.parent)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def write_site(wd: Workdir, runs: Sequence[PlaybookRun]) -> Path:
    """One playbook importing all of them: a single ansible-playbook start-up and SSH connection."""
    site = [{"import_playbook": str(r.path.resolve()), "vars": r.vars} if r.vars else {"import_playbook": str(r.path.resolve())} for r in runs]
    path = wd.site_playbook
    path.write_text(json.dumps(site, indent=2) + "\n")  # JSON is YAML: no quoting surprises
    return path


def write_inventory(wd: Workdir) -> Path:
    lines = ["[all]"]
    for host in remote.hosts(wd):
        # The host name is the ssh_config alias: ssh resolves address, port, user and key from -F.
        lines.append(f"{host} ansible_user=vagrant")
    path = wd.inventory
    path.write_text("\n".join(lines) + "\n")
    return path


def mitogen_strategies() -> Path | None:
    """Mitogen's strategy plugins, unless VAGABOND_MITOGEN=0.

    Mitogen keeps one Python interpreter per host for the whole run instead of starting one per
    task: under software emulation, where each Python start costs seconds, an 8-task playbook
    takes a quarter of the time (bench/lifecycle.py).
    """
    if os.environ.get("VAGABOND_MITOGEN", "1") == "0":
        return None
    spec = importlib.util.find_spec("ansible_mitogen")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "plugins" / "strategy"
    return path if path.is_dir() else None


def ansible_env(wd: Workdir) -> dict[str, str]:
    state = wd.ansible_home
    # An ansible.cfg of our own, so one in the user's cwd or home cannot change the settings below.
    config = wd.ansible_config
    if not config.is_file():
        wd.path.mkdir(parents=True, exist_ok=True)
        config.write_text("# Settings come from vagabond's environment variables (vagabond/provision.py).\n[defaults]\n")
    env = dict(os.environ)
    env.update(
        {
            "ANSIBLE_CONFIG": str(config),
            "ANSIBLE_HOME": str(state),
            "ANSIBLE_LOCAL_TEMP": str(state / "tmp"),
            # Same SSH config and master connection as `vagabond run`. Ansible splits this with
            # shlex: the path is quoted, so a space, a quote or "-o" in it stays part of the path.
            "ANSIBLE_SSH_ARGS": f"-F {shlex.quote(str(wd.ssh_config))}",
            "ANSIBLE_SSH_CONTROL_PATH_DIR": str(remote.control_dir()),
            # One SSH round trip per task instead of three: modules go over stdin.
            "ANSIBLE_PIPELINING": "True",
            # Throwaway VMs get new host keys on every boot.
            "ANSIBLE_HOST_KEY_CHECKING": "False",
            "ANSIBLE_RETRY_FILES_ENABLED": "False",
            "ANSIBLE_PYTHON_INTERPRETER": "auto_silent",
            # Module files go to a world-writable place, so become (vagrant -> root) needs no chmod dance.
            "ANSIBLE_REMOTE_TMP": "/tmp/.ansible-${USER}/tmp",
            # Facts are gathered once per play and cached between runs (`vagabond provision`).
            "ANSIBLE_GATHERING": "smart",
            "ANSIBLE_CACHE_PLUGIN": "jsonfile",
            "ANSIBLE_CACHE_PLUGIN_CONNECTION": str(state / "facts"),
            "ANSIBLE_CACHE_PLUGIN_TIMEOUT": "7200",
            "ANSIBLE_FORKS": "10",
            "ANSIBLE_NOCOLOR": "0" if ui.interactive() else "1",
            "ANSIBLE_DEPRECATION_WARNINGS": "False",
        }
    )
    strategies = mitogen_strategies()
    if strategies is not None:
        env["ANSIBLE_STRATEGY_PLUGINS"] = str(strategies)
        env["ANSIBLE_STRATEGY"] = "mitogen_linear"
    return env


RECAP = re.compile(r"^(\S+)\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)


@dataclass(frozen=True)
class Recap:
    host: str
    ok: int
    changed: int
    unreachable: int
    failed: int


def parse_recap(output: str) -> list[Recap]:
    return [Recap(m[0], int(m[1]), int(m[2]), int(m[3]), int(m[4])) for m in RECAP.findall(output)]


def run_playbooks(wd: Workdir, extra_vars: Sequence[str] = (), *, timeout: float = timeouts.PLAYBOOK) -> list[Recap]:
    runs = all_playbooks(wd.box)
    if not runs:
        ui.info("no playbooks to run")
        return []
    site = write_site(wd, runs)
    inventory = write_inventory(wd)
    argv = [process.which("ansible-playbook") or "ansible-playbook", "-i", str(inventory), str(site)]
    for value in extra_vars:
        argv += ["--extra-vars", value]
    with wd.log_file("ansible") as log:
        def sink(line: str) -> None:
            log.write(line)
            log.flush()  # the log is what a person reads while a long task runs
            if line.strip():
                ui.info(f"ansible: {line.rstrip()}")

        result = process.check(argv, cwd=wd.path, env=ansible_env(wd), timeout=timeout, stream=sink, vm_network=True,
                               hint=f"full output in {wd.logs / 'ansible.log'}")  # fmt: skip
    return parse_recap(result.stdout)


def run_checks(wd: Workdir, machines: Sequence[str]) -> list[tuple[str, ModeCheck, str]]:
    """Prove each mode from inside each machine; raise ModeCheckFailed naming the first that is off."""
    results = []
    for machine in machines:
        for check in mode_checks(wd.box):
            got = remote.check(wd, machine, list(check.argv)).stdout.strip()
            results.append((machine, check, got))
            if got != check.expect:
                raise ModeCheckFailed(
                    f"{check.mode} check failed on {machine}: '{' '.join(check.argv)}' printed {got!r}, expected {check.expect!r}"
                )
    return results
