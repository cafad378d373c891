"""A base box vagabond made (built or imported) in its cache: the .box file and a one-version
catalog to add it from, checked again whenever its file changed; and adding it to Vagrant's store."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

from vagabond import files, timeouts, ui
from vagabond.host.vagrant import Vagrant


@dataclass(frozen=True)
class MadeBase:
    """A base box vagabond made (built or imported) in its cache: the .box file and a one-version
    catalog to add it from."""

    name: str
    version: str
    box_file: Path
    catalog: Path
    sha256: str

    INFO = "base.json"
    VERIFIED = ".verified"  # the box file's identity when its sha256 was last checked

    @property
    def catalog_url(self) -> str:
        return self.catalog.resolve().as_uri()

    def save(self, directory: Path) -> None:
        files.write_json(directory / self.INFO, {k: str(v) for k, v in self.__dict__.items()})
        self._stamp(directory)

    def _identity(self) -> list[int]:
        # ctime and inode change with every write of the file, a CI cache restore included (tar
        # can set mtime back, never ctime): an unchanged identity is the file that was checked.
        st = self.box_file.stat()
        return [st.st_size, st.st_ino, st.st_ctime_ns]

    def _stamp(self, directory: Path) -> None:
        files.write_json(directory / self.VERIFIED, self._identity())

    @classmethod
    def load(cls, directory: Path) -> MadeBase | None:
        """The base box recorded in ``directory``, when its box file is still there and still the
        one that was made: checked against its recorded sha256 whenever the file changed since the
        last check (a cache restored it), None (and said) when it does not match."""
        try:
            data = files.loads((directory / cls.INFO).read_bytes(), str(directory / cls.INFO), max_bytes=2**16)
            data.pop("kernel", None)  # written by earlier versions, never read
            box = cls(**{k: Path(v) if k in ("box_file", "catalog") else v for k, v in data.items()})
        except (OSError, ValueError, TypeError, AttributeError):
            return None
        if not (box.box_file.is_file() and box.catalog.is_file()):
            return None
        try:
            checked = files.loads((directory / cls.VERIFIED).read_bytes(), "stamp", max_bytes=256)
        except (OSError, ValueError):
            checked = None
        if checked != box._identity():
            with ui.step(f"sha256 of {box.box_file.name} (changed since it was last checked)"):
                actual = files.sha256_file(box.box_file)
            if actual != box.sha256:
                ui.warning(
                    f"{box.box_file}: sha256 {actual[:12]}... is not the {box.sha256[:12]}... it was made with: "
                    "making it again"
                )
                return None
            with contextlib.suppress(PermissionError):  # a shared cache this user reads, not writes
                box._stamp(directory)
        return box


def copy_box(built: MadeBase, directory: Path) -> Path:
    """A copy of the cached .box file in ``directory`` (made if missing), written whole or not at
    all, with its description beside it (BOX.box.json: name, version, sha256), so that `vagabond
    publish` takes it as it is and plain Vagrant elsewhere can download it from that catalog."""
    target = files.copy(built.box_file, directory / f"{files.safe_name(built.name)}-{built.version}.box")
    info = {
        "name": built.name,
        "version": built.version,
        "sha256": built.sha256,
        "description": f"base box {built.name} made by vagabond",
    }
    files.write_json(target.with_name(target.name + ".json"), info, sort_keys=True)
    return target


def add_to_store(built: MadeBase) -> MadeBase:
    """Make sure Vagrant's box store has this version of a box vagabond made."""
    v = Vagrant(timeout=timeouts.BOX_ADD)
    if not v.has_box(built.name, built.version):
        with ui.step(f"vagrant box add {built.name} {built.version}"):
            v.box_add_catalog(built.catalog_url)
    return built
