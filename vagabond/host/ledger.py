"""The ledger: what vagabond created in libvirt and Vagrant's box store, recorded outside the work
directories.

`vagabond gc` reconciles libvirt with this record: a work directory that was deleted (or a box that
was removed) leaves objects only this record can tie back to vagabond, and nothing absent from it
is ever touched. The file is small JSON, updated under a lock with an atomic rename.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

from vagabond import files, paths, timeouts, ui
from vagabond.definition import project

# The file's name before the ledger had its own (the module was called "registry"); read() takes
# such a file over once, under the ledger's lock.
_EARLIER_NAME = "registry.json"


def path() -> Path:
    return paths.state_dir() / "ledger.json"


LISTS = ("volumes", "networks", "swapfiles", "warm")


def _valid(data: object) -> bool:
    return (
        isinstance(data, dict)
        and isinstance(data.get("workdirs", {}), dict)
        and all(isinstance(k, str) and isinstance(v, str) for k, v in data.get("workdirs", {}).items())
        and all(
            isinstance(data.get(key, []), list) and all(isinstance(x, str) for x in data.get(key, [])) for key in LISTS
        )
    )


def read() -> dict:
    """The record; a file that is not one is put aside (never silently read as empty, which the
    next update would write back, dropping every earlier record) and rebuilt from what is known."""
    target = path()
    earlier = target.with_name(_EARLIER_NAME)
    if not os.path.lexists(target) and os.path.lexists(earlier):
        with _locked():
            files.take_over(earlier, target)
    return _read(target)


def _read(target: Path) -> dict:
    try:
        with files.open_regular_read(target) as fh:  # a link at the ledger's name is refused
            raw = fh.read()
    except FileNotFoundError:
        data = {}
    else:
        try:
            data = files.loads(raw, str(target))
        except ValueError:
            data = None
        if not _valid(data):
            data = _recover(target)
    data.pop("boxes", None)  # box names, as earlier versions recorded them: no proof of whose image a volume is
    data.setdefault("workdirs", {})  # libvirt name prefix -> work directory
    data.setdefault("volumes", [])  # box image volumes a vagabond run uploaded into the pool
    data.setdefault("networks", [])  # libvirt networks a vagabond run brought into being
    data.setdefault("swapfiles", [])  # swap files `vagabond prepare` made
    data.setdefault("warm", [])  # frozen disk layers of warm images, in the pool
    return data


def _recover(target: Path) -> dict:
    """Keep the corrupt file for a person to look at, and start again from what can be known without
    it: the work directories of the current project, whose state names their libvirt prefix. (libvirt
    alone cannot say which directory owns a domain, so gc leaves alone what the record lost.)"""
    aside = target.with_name(f"{target.name}.corrupt-{int(time.time())}")
    with contextlib.suppress(OSError):
        target.replace(aside)
    workdirs = {prefix: str(path) for prefix, path in project.recorded_workdirs().items()}
    ui.info(
        f"warning: {target} was not vagabond's ledger; kept it as {aside.name} and rebuilt the record of "
        f"{len(workdirs)} work directories of this project; gc leaves alone anything the record no longer names"
    )
    data = {"workdirs": workdirs, "volumes": [], "networks": [], "swapfiles": [], "warm": []}
    files.write_json(target, data, sort_keys=True)
    return data


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    lock = path().with_suffix(".lock")
    fd = files.open_lock(lock)
    try:
        files.wait_for_lock(fd, lock, timeouts.PUBLISH_LOCK, "recording what vagabond created")
        yield
    finally:
        os.close(fd)


@contextlib.contextmanager
def _updating() -> Iterator[dict]:
    target = path()
    with _locked():
        files.take_over(target.with_name(_EARLIER_NAME), target)
        data = _read(target)
        yield data
        files.write_json(target, data, sort_keys=True)


def add_workdir(prefix: str, workdir: Path) -> None:
    if read()["workdirs"].get(prefix) == str(workdir):
        return
    with _updating() as data:
        data["workdirs"][prefix] = str(workdir)


def add_volumes(names: list[str]) -> None:
    """Box image volumes this run uploaded (vagrant-libvirt said so): `vagabond gc` may remove them
    once no box of Vagrant's store and no domain needs them. Nothing else in the pool is ever ours."""
    if not names or set(names) <= set(read()["volumes"]):
        return
    with _updating() as data:
        data["volumes"] = sorted(set(data["volumes"]) | set(names))


def add_networks(names: list[str]) -> None:
    if not names or set(names) <= set(read()["networks"]):
        return
    with _updating() as data:
        data["networks"] = sorted(set(data["networks"]) | set(names))


def add_warm(names: list[str]) -> None:
    """Frozen disk layers of warm images (vagabond.vm.warm): gc removes one no warm image needs."""
    if not names or set(names) <= set(read()["warm"]):
        return
    with _updating() as data:
        data["warm"] = sorted(set(data["warm"]) | set(names))


def add_swapfile(path: Path) -> None:
    with _updating() as data:
        data["swapfiles"] = sorted(set(data["swapfiles"]) | {str(path)})


def forget(
    *,
    workdirs: list[str] = (),
    volumes: list[str] = (),
    networks: list[str] = (),
    swapfiles: list[str] = (),
    warm: list[str] = (),
) -> None:
    with _updating() as data:
        for prefix in workdirs:
            data["workdirs"].pop(prefix, None)
        data["volumes"] = [v for v in data["volumes"] if v not in volumes]
        data["networks"] = [n for n in data["networks"] if n not in networks]
        data["swapfiles"] = [s for s in data["swapfiles"] if s not in swapfiles]
        data["warm"] = [w for w in data["warm"] if w not in warm]
