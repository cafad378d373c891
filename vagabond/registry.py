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
from collections.abc import Iterator
from pathlib import Path

from vagabond import paths


def path() -> Path:
    return paths.state_dir() / "registry.json"


def read() -> dict:
    try:
        data = json.loads(path().read_text())
    except (OSError, ValueError):
        data = {}
    data.setdefault("workdirs", {})  # libvirt name prefix -> work directory
    data.setdefault("boxes", [])  # box names vagabond added to Vagrant's box store
    data.setdefault("networks", [])  # libvirt networks a vagabond run brought into being
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


def forget(*, workdirs: list[str] = (), boxes: list[str] = (), networks: list[str] = ()) -> None:
    with _updating() as data:
        for prefix in workdirs:
            data["workdirs"].pop(prefix, None)
        data["boxes"] = [b for b in data["boxes"] if b not in boxes]
        data["networks"] = [n for n in data["networks"] if n not in networks]
