"""A box's work directory (<project>/.vagabond/<box>/): its layout, state, lock, logs, and the names
of the libvirt objects it owns. Nothing else opens these files or makes these names."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from vagabond import libvirt, project
from vagabond.errors import Busy

if TYPE_CHECKING:  # importing the schema and the template engine costs ~200 ms: `vagabond run` skips them
    from vagabond.boxes import Box

ROOT_NAME = ".vagabond"
# What a VM leaves in its work directory besides its logs: removed by name when it is destroyed
# (--workdir may name a directory that holds other things too). The Vagrantfile's provisioning
# directory is provision.PROVISION_DIR (tests/unit/test_architecture.py keeps the two in step).
VM_FILES = (".vagrant", "ssh_config", "state.json", "inventory.ini", "ansible", "vagabond-provision",
            "site.yml", "ansible.cfg")  # the last two: what vagabond 0.1 wrote  # fmt: skip


def default_path(box_name: str, cwd: Path | None = None) -> Path:
    """<project root>/.vagabond/<box>: the same work directory from anywhere inside the project."""
    return project.project_root(cwd) / ROOT_NAME / box_name


def in_project(cwd: Path | None = None) -> list[Workdir]:
    """The work directories of the project the current directory belongs to."""
    root = project.project_root(cwd) / ROOT_NAME
    return [Workdir.at(p) for p in sorted(root.iterdir()) if p.is_dir()] if root.is_dir() else []


def domain_prefix(box_name: str, path: Path) -> str:
    """Every libvirt domain and volume of the work directory at ``path`` starts with this. The
    Vagrantfile computes the same in Ruby: Digest::SHA256.hexdigest(__dir__)[0, 8]."""
    return f"vagabond-{box_name}-{hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:8]}-"


@dataclass(frozen=True)
class Workdir:
    path: Path
    box: Box | None = None  # None for a directory found on disk (gc, `vagabond run`), read through its state

    @classmethod
    def for_box(cls, box: Box, option: Path | None = None) -> Workdir:
        return cls((option or default_path(box.name)).absolute(), box)

    @classmethod
    def at(cls, path: Path) -> Workdir:
        return cls(path.absolute())

    @property
    def vagrantfile(self) -> Path:
        return self.path / "Vagrantfile"

    @property
    def ssh_config(self) -> Path:
        return self.path / "ssh_config"

    @property
    def state_file(self) -> Path:
        return self.path / "state.json"

    @property
    def logs(self) -> Path:
        return self.path / "logs"

    # What provisioning keeps here: the inventory of the VM's machines, Ansible's home (facts, temp).
    @property
    def inventory(self) -> Path:
        return self.path / "inventory.ini"

    @property
    def ansible_home(self) -> Path:
        return self.path / "ansible"

    @property
    def prefix(self) -> str:
        if self.box is not None:
            return domain_prefix(self.box.name, self.path)
        return self.read_state().get("prefix", "")

    def domain(self, machine: str) -> str:
        return self.prefix + machine

    def serial_log(self, machine: str) -> Path:
        return libvirt.serial_log(self.domain(machine))

    def qemu_log(self, machine: str) -> Path:
        return libvirt.qemu_log(self.domain(machine))

    def saved_log(self, source: Path) -> Path:
        """Where save_console keeps a copy of libvirt's log of one of our domains."""
        return self.logs / source.name

    def save_console(self, machines: list[str]) -> None:
        """Keep the serial console and qemu logs: libvirt's copies go with the domain."""
        for machine in machines:
            for src in (self.serial_log(machine), self.qemu_log(machine)):
                if src.is_file():
                    self.logs.mkdir(parents=True, exist_ok=True)
                    with contextlib.suppress(OSError):
                        shutil.copyfile(src, self.saved_log(src))

    def forget_console(self, machines: list[str]) -> None:
        for machine in machines:
            self.serial_log(machine).unlink(missing_ok=True)
            self.qemu_log(machine).unlink(missing_ok=True)

    def log_file(self, name: str):
        """logs/<name>.log opened for appending (vagrant's and Ansible's output)."""
        self.logs.mkdir(parents=True, exist_ok=True)
        return (self.logs / f"{name}.log").open("a", encoding="utf-8")

    def read_state(self) -> dict:
        try:
            return json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return {}

    def write_state(self, **updates) -> dict:
        state = self.read_state() | updates
        self._make()
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2, sort_keys=True))
        tmp.replace(self.state_file)
        return state

    def remove_state(self) -> None:
        """Forget the VM: everything it left but the logs goes."""
        for name in VM_FILES:
            target = self.path / name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target, ignore_errors=True)
            else:
                target.unlink(missing_ok=True)

    def _make(self) -> None:
        if self.path.parent.name == ROOT_NAME and not self.path.parent.is_dir():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Like .pytest_cache: the whole directory is the host's, never the repository's.
            (self.path.parent / ".gitignore").write_text("# created by vagabond: nothing here belongs in git\n*\n")
        self.path.mkdir(parents=True, exist_ok=True)

    def busy(self) -> bool:
        """Is a vagabond command working here right now? (Asked without waiting, never creating the lock.)"""
        lock = self.path / ".lock"
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                return True
            raise
        finally:
            os.close(fd)
        return False

    @contextlib.contextmanager
    def lock(self, command: str) -> Iterator[None]:
        """One vagabond command at a time per work directory; other boxes are not affected."""
        self._make()
        lock_path = self.path / ".lock"
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
                name = self.box.name if self.box is not None else self.path.name
                raise Busy(
                    f"box {name!r} is busy: {holder} holds {lock_path}",
                    hint="wait for it to finish, or use --workdir for a second copy",
                ) from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"'vagabond {command}' (pid {os.getpid()})".encode(), 0)
            yield
        finally:
            os.close(fd)
