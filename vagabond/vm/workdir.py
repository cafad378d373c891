"""A box's work directory (<project>/.vagabond/<box>/): its layout, state, lock, logs, and the names
of the libvirt objects it owns. Nothing else opens these files or makes these names."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from vagabond import files, timeouts
from vagabond.definition import project
from vagabond.errors import Busy, VagabondError

if TYPE_CHECKING:  # importing the schema and the template engine costs ~200 ms: `vagabond run` skips them
    from vagabond.definition.schema import Box
    from vagabond.host.vagrant import Vagrant

ROOT_NAME = project.WORKDIRS
# What destroy keeps of what vagabond made here: the rendered Vagrantfile (a file a person may use)
# and the logs of the run.
KEPT = ("Vagrantfile", "logs", ".lock")


def default_path(box_name: str, cwd: Path | None = None) -> Path:
    """<project root>/.vagabond/<box>: the same work directory from anywhere inside the project."""
    return project.project_root(cwd) / ROOT_NAME / box_name


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
        return self.path / project.STATE

    @property
    def ssh_key(self) -> Path:
        """This VM's own SSH private key (its public half beside it, .pub)."""
        return self.path / "ssh_key"

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

    def vagrant_env(self) -> dict[str, str]:
        """What the Vagrantfile here needs from its environment: vagabond's own driver decision
        (which may rest on a smoke boot the Vagrantfile cannot do) and this VM's own SSH key."""
        state = self.read_state()
        env = {"VAGABOND_DRIVER": state["driver"]} if state.get("driver") else {}
        if state.get("ssh_key") and self.ssh_key.is_file():
            env["VAGABOND_SSH_KEY"] = str(self.ssh_key)
        return env

    def vagrant(self, *, timeout: float = timeouts.VAGRANT, stream=False) -> Vagrant:
        """Vagrant in this directory, with vagrant_env()."""
        from vagabond.host.vagrant import Vagrant  # python-vagrant: not on `vagabond run`'s path

        return Vagrant(self.path, timeout=timeout, stream=stream, env=self.vagrant_env() or None)

    def domain(self, machine: str) -> str:
        return self.prefix + machine

    def serial_log(self, machine: str) -> Path:
        from vagabond.host import libvirt  # and the terminal with it: not on `vagabond run`'s path

        return libvirt.serial_log(self.domain(machine))

    def qemu_log(self, machine: str) -> Path:
        from vagabond.host import libvirt  # as above

        return libvirt.qemu_log(self.domain(machine))

    def saved_log(self, source: Path) -> Path:
        """Where save_console keeps a copy of libvirt's log of one of our domains."""
        return self.logs / source.name

    def save_console(self, machines: list[str]) -> None:
        """Keep the serial console and qemu logs: libvirt's copies go with the domain."""
        for machine in machines:
            for src in (self.serial_log(machine), self.qemu_log(machine)):
                if src.is_file():
                    with contextlib.suppress(OSError, VagabondError):
                        files.make_dirs(self.logs, root=self.path)
                        files.copy(src, self.saved_log(src))

    def forget_console(self, machines: list[str]) -> None:
        for machine in machines:
            self.serial_log(machine).unlink(missing_ok=True)
            self.qemu_log(machine).unlink(missing_ok=True)

    def log_file(self, name: str):
        """logs/<name>.log opened for appending (vagrant's and Ansible's output), never through a link."""
        files.make_dirs(self.logs, root=self.path)
        return files.open_append(self.logs / f"{name}.log")

    def read_state(self) -> dict:
        return project.read_state(self.path)

    def write_state(self, **updates) -> dict:
        state = self.read_state() | updates
        self._make()
        files.write_json(self.state_file, state, sort_keys=True)
        return state

    def claim(self, *names: str) -> None:
        """Say that vagabond is about to make these entries of the work directory: those not there
        yet are recorded as vagabond's, and only recorded entries are removed again (--workdir may
        name a directory that holds the project's own ansible.cfg or site.yml)."""
        state = self.read_state()
        created = list(state.get("created", []))
        new = [
            n for n in names if n not in created and not (self.path / n).exists() and not (self.path / n).is_symlink()
        ]
        if new:
            self.write_state(created=created + new)

    def remove_state(self) -> list[str]:
        """Forget the VM: what vagabond recorded making here goes (the Vagrantfile and the logs
        stay), nothing else; returns what was removed."""
        state = self.read_state()
        removed = []
        for name in state.get("created", []):
            if not isinstance(name, str) or name in KEPT or "/" in name or name in (".", ".."):
                continue
            if files.remove(self.path / name):
                removed.append(name)
        files.remove(self.state_file)
        return removed

    def _make(self) -> None:
        if self.path.parent.name == ROOT_NAME and not self.path.parent.is_dir():
            files.make_dirs(self.path.parent)
            # Like .pytest_cache: the whole directory is the host's, never the repository's.
            files.write_text(self.path.parent / ".gitignore", "# created by vagabond: nothing here belongs in git\n*\n")
        files.make_dirs(self.path)

    def busy(self) -> bool:
        """Is a vagabond command working here right now? (Asked without waiting, never creating the lock.)"""
        lock = self.path / ".lock"
        try:
            fd = os.open(lock, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:  # none there (or a link, which no vagabond made): nobody of ours holds it
            return False
        try:
            return not files.try_lock(fd)
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def lock(self, command: str) -> Iterator[None]:
        """One vagabond command at a time per work directory; other boxes are not affected."""
        self._make()
        lock_path = self.path / ".lock"
        fd = files.open_lock(lock_path)
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
            with contextlib.suppress(OSError):  # a lock file of another user's, opened read-only
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"'vagabond {command}' (pid {os.getpid()})".encode(), 0)
            yield
        finally:
            os.close(fd)
