"""A box's work directory (.vagabond/<box>/): Vagrantfile, Vagrant state, SSH config, logs, lock."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from typing import TYPE_CHECKING

from vagabond import project
from vagabond.errors import VagabondError

if TYPE_CHECKING:  # importing the schema and the template engine costs ~200 ms: `vagabond run` skips them
    from vagabond.boxes import Box

ROOT_NAME = ".vagabond"


def default_path(box_name: str, cwd: Path | None = None) -> Path:
    """<project root>/.vagabond/<box>: the same work directory from anywhere inside the project."""
    return project.project_root(cwd) / ROOT_NAME / box_name


class Busy(VagabondError):
    exit_code = 75  # EX_TEMPFAIL: try again later


@dataclass(frozen=True)
class Workdir:
    path: Path
    box: "Box"

    @classmethod
    def for_box(cls, box: "Box", option: Path | None = None) -> "Workdir":
        return cls((option or default_path(box.name)).absolute(), box)

    def _make(self) -> None:
        if self.path.parent.name == ROOT_NAME and not self.path.parent.is_dir():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Like .pytest_cache: the whole directory is the host's, never the repository's.
            (self.path.parent / ".gitignore").write_text("# created by vagabond: nothing here belongs in git\n*\n")
        self.path.mkdir(parents=True, exist_ok=True)

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

    @property
    def prefix(self) -> str:
        """Every libvirt domain and volume of this work directory starts with this."""
        from vagabond import render

        return render.domain_prefix(self.box.name, self.path)

    def domain(self, machine: str) -> str:
        return self.prefix + machine

    def exists(self) -> bool:
        return self.vagrantfile.is_file()

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
                raise Busy(
                    f"box {self.box.name!r} is busy: {holder} holds {lock_path}",
                    hint="wait for it to finish, or use --workdir for a second copy",
                ) from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"'vagabond {command}' (pid {os.getpid()})".encode(), 0)
            yield
        finally:
            os.close(fd)

    def remove_state(self) -> None:
        """Forget everything about the VM, keep nothing but the logs directory's parent gone too."""
        for name in (".vagrant", "ssh_config", "state.json", "inventory.ini", "ansible", "site.yml", "ansible.cfg"):
            target = self.path / name
            if target.is_dir():
                shutil.rmtree(target, ignore_errors=True)
            else:
                target.unlink(missing_ok=True)
