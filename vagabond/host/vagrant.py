"""The only python-vagrant adapter: every vagrant call goes through process.run and fails loudly."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path

import vagrant

from vagabond import process, timeouts

SLASH = "-VAGRANTSLASH-"


def store_name(name: str) -> str:
    """Box ``name`` as Vagrant spells it on disk and vagrant-libvirt in volume names ('/' as -VAGRANTSLASH-)."""
    return name.replace("/", SLASH)


def box_name(stored: str) -> str:
    """The box name behind a store_name."""
    return stored.replace(SLASH, "/")


# Vagrant prints its own version check and usage hints unless told not to; CI logs need neither.
QUIET_ENV = {
    "VAGRANT_CHECKPOINT_DISABLE": "1",
    "VAGRANT_NO_COLOR": "1",
    "VAGRANT_DEFAULT_PROVIDER": "libvirt",
}

# Subcommands that talk to VMs run in the VMs' network namespace (vagabond.sandbox); the box
# store's commands download from catalogs and stay on the host's network.
VM_FACING = frozenset(
    {
        "up",
        "halt",
        "destroy",
        "reload",
        "resume",
        "suspend",
        "provision",
        "ssh",
        "ssh-config",
        "status",
        "package",
        "rsync",
    }
)


def vagrant_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.update(QUIET_ENV)
    if extra:
        env.update(extra)
    return env


class Vagrant(vagrant.Vagrant):
    """python-vagrant's parsing with vagabond's process gateway underneath.

    python-vagrant runs subprocess itself and, in some paths, swallows CalledProcessError and
    parses whatever came back; routing its three runners through process.run gives one timeout
    policy, live output and a CommandFailed that names the vagrant command.
    """

    def __init__(
        self,
        root: Path | None = None,
        *,
        env: Mapping[str, str] | None = None,
        timeout: float = timeouts.VAGRANT,
        stream: bool | process.LineSink = False,
    ) -> None:
        super().__init__(root=str(root) if root else None, env=vagrant_env(env))
        self.timeout = timeout
        self.stream = stream
        self.watchdog = None  # see process.run: a callable that may stop a long vagrant command

    def _exe(self, args) -> list[str]:
        exe = process.which("vagrant") or "vagrant"
        return [exe] + [str(a) for a in args if a is not None]

    @staticmethod
    def _vm_facing(args) -> bool:
        return bool(args) and str(args[0]) in VM_FACING

    def _call_vagrant_command(self, args) -> None:
        process.check(
            self._exe(args),
            cwd=self.root,
            env=self.env,
            timeout=self.timeout,
            stream=self.stream,
            watchdog=self.watchdog,
            vm_network=self._vm_facing(args),
        )

    def _run_vagrant_command(self, args) -> str:
        return process.check(
            self._exe(args), cwd=self.root, env=self.env, timeout=self.timeout, vm_network=self._vm_facing(args)
        ).stdout

    def _stream_vagrant_command(self, args) -> Iterator[str]:
        lines: list[str] = []
        process.check(
            self._exe(args),
            cwd=self.root,
            env=self.env,
            timeout=self.timeout,
            stream=lines.append,
            vm_network=self._vm_facing(args),
        )
        yield from lines

    def rsync(self) -> None:
        """`vagrant rsync`: the rsync synced folders copied into the running machines again."""
        self._call_vagrant_command(["rsync"])

    def version(self) -> str:
        # python-vagrant parses `vagrant --version`; keep the call in our gateway.
        out = self._run_vagrant_command(["--version"])
        return out.strip().removeprefix("Vagrant ").strip()

    def box_dir(self, name: str) -> Path:
        """Where Vagrant's box store keeps every version of box ``name``."""
        home = Path(self.env.get("VAGRANT_HOME") or Path.home() / ".vagrant.d")
        return home / "boxes" / store_name(name)

    def has_box(self, name: str, version: str) -> bool:
        """Is this box version in Vagrant's box store? Read from disk: `vagrant box list` costs ~2 s."""
        version_dir = self.box_dir(name) / version
        # Vagrant 2.4 adds an architecture level: <version>/<arch>/<provider>.
        return (version_dir / "libvirt").is_dir() or any(version_dir.glob("*/libvirt/metadata.json"))

    def box_add_catalog(self, url: str, version: str | None = None) -> None:
        """Add a box from a catalog (metadata.json) URL; Vagrant checks the checksum it lists."""
        # python-vagrant's box_add always passes --name, which Vagrant refuses for catalog URLs.
        pin = ["--box-version", version] if version else []
        self._call_vagrant_command(["box", "add", "--force", "--provider", "libvirt", *pin, url])

    def has_any_version(self, name: str) -> bool:
        """Does Vagrant's box store hold any version of box ``name`` for libvirt? Read from disk."""
        store = self.box_dir(name)
        return store.is_dir() and any(self.has_box(name, version.name) for version in store.iterdir())

    def box_add_base(
        self, name: str, url: str | None = None, version: str | None = None, checksum: str | None = None
    ) -> None:
        """Add a base box the way its box file names it: by name from the catalog Vagrant knows, from
        a catalog's metadata.json (which names the box), or from a box file under ``name``."""
        argv = ["box", "add", "--provider", "libvirt"]
        if url is None or url.endswith(".json"):
            argv += ["--box-version", version] if version else []
            argv.append(url or name)
        else:  # a box file has no versions; Vagrant checks the checksum the box file gives
            kind, _, value = (checksum or "").partition(":")
            argv += ["--name", name, *(["--checksum-type", kind, "--checksum", value] if value else []), url]
        self._call_vagrant_command(argv)

    def box_repackage(self, name: str, version: str) -> None:
        """`vagrant box repackage NAME libvirt VERSION`: writes package.box into this Vagrant's root."""
        self._call_vagrant_command(["box", "repackage", name, "libvirt", version])

    def box_versions(self, name: str) -> list[str]:
        return [b.version for b in self.box_list() if b.name == name and b.provider in ("libvirt", None)]
