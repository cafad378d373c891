"""What vagabond created in libvirt and Vagrant's box store, recorded outside the work directories.

`vagabond gc` reconciles libvirt with this record: a work directory that was deleted (or a box that
was removed) leaves objects only this record can tie back to vagabond, and nothing absent from it
is ever touched. The file is small JSON, updated under a lock with an atomic rename.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

from vagabond import paths, ui, workdir


def path() -> Path:
    return paths.state_dir() / "registry.json"


def _valid(data: object) -> bool:
    return (isinstance(data, dict) and isinstance(data.get("workdirs", {}), dict)
            and all(isinstance(k, str) and isinstance(v, str) for k, v in data.get("workdirs", {}).items())
            and all(isinstance(data.get(key, []), list) and all(isinstance(x, str) for x in data.get(key, []))
                    for key in ("boxes", "networks", "swapfiles")))  # fmt: skip


def read() -> dict:
    """The record; a file that is not one is put aside (never silently read as empty, which the
    next update would write back, dropping every earlier record) and rebuilt from what is known."""
    target = path()
    try:
        text = target.read_text()
    except FileNotFoundError:
        data = {}
    else:
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        if not _valid(data):
            data = _recover(target)
    data.setdefault("workdirs", {})  # libvirt name prefix -> work directory
    data.setdefault("boxes", [])  # box names vagabond added to Vagrant's box store
    data.setdefault("networks", [])  # libvirt networks a vagabond run brought into being
    data.setdefault("swapfiles", [])  # swap files `vagabond prepare` made
    return data


def _recover(target: Path) -> dict:
    """Keep the corrupt file for a person to look at, and start again from what can be known without
    it: the work directories of the current project, whose state names their libvirt prefix. (libvirt
    alone cannot say which directory owns a domain, so gc leaves alone what the record lost.)"""
    aside = target.with_name(f"{target.name}.corrupt-{int(time.time())}")
    with contextlib.suppress(OSError):
        target.replace(aside)
    workdirs = {wd.prefix: str(wd.path) for wd in workdir.in_project() if wd.prefix}
    ui.info(f"warning: {target} was not a vagabond registry; kept it as {aside.name} and rebuilt the record of "
            f"{len(workdirs)} work directories of this project; gc leaves alone anything the record no longer names")
    data = {"workdirs": workdirs, "boxes": [], "networks": [], "swapfiles": []}
    target.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    return data


@contextlib.contextmanager
def _updating() -> Iterator[dict]:
    target = path()
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.with_suffix(".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        data = read()
        yield data
        tmp = target.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
        tmp.replace(target)


def add_workdir(prefix: str, workdir: Path) -> None:
    if read()["workdirs"].get(prefix) == str(workdir):
        return
    with _updating() as data:
        data["workdirs"][prefix] = str(workdir)


def add_box(name: str) -> None:
    if name in read()["boxes"]:
        return
    with _updating() as data:
        data["boxes"] = sorted(set(data["boxes"]) | {name})


def add_networks(names: list[str]) -> None:
    if not names or set(names) <= set(read()["networks"]):
        return
    with _updating() as data:
        data["networks"] = sorted(set(data["networks"]) | set(names))


def add_swapfile(path: Path) -> None:
    with _updating() as data:
        data["swapfiles"] = sorted(set(data["swapfiles"]) | {str(path)})


def forget(*, workdirs: list[str] = (), boxes: list[str] = (), networks: list[str] = (), swapfiles: list[str] = ()) -> None:
    with _updating() as data:
        for prefix in workdirs:
            data["workdirs"].pop(prefix, None)
        data["boxes"] = [b for b in data["boxes"] if b not in boxes]
        data["networks"] = [n for n in data["networks"] if n not in networks]
        data["swapfiles"] = [s for s in data["swapfiles"] if s not in swapfiles]
