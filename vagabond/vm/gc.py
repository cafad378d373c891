"""`vagabond gc`: remove what vagabond created in libvirt and nothing still owns.

Owners are work directories and Vagrant's box store. An object is vagabond's only when the
ledger (vagabond.host.ledger) ties it to vagabond: a domain or volume whose name starts with a
recorded work directory prefix, a base-box image volume of a box vagabond added (vagrant-libvirt
leaves those in the pool when the box is removed), a network a vagabond run brought into being.
Everything else in libvirt is left alone, whatever its name.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from vagabond import ui
from vagabond.host import ledger, libvirt
from vagabond.host.vagrant import Vagrant, box_name
from vagabond.vm import warmimage
from vagabond.vm.workdir import Workdir


@dataclass
class Orphan:
    kind: str  # domain, volume, box image, warm layer, network
    name: str
    reason: str
    removed: bool = False


def _workdir_verdict(prefix: str, path: Path) -> str | None:
    """None while the work directory still owns this prefix (or is busy); otherwise why not."""
    wd = Workdir.at(path)
    if not wd.path.is_dir():
        return f"its work directory {path} is gone"
    if wd.busy():
        return None  # a vagabond command is running there right now
    state = wd.read_state()
    if not state:
        return f"its work directory {path} holds no VM (destroyed)"
    if state.get("prefix") != prefix:
        return f"its work directory {path} now holds another VM"
    return None


def find() -> list[Orphan]:
    data = ledger.read()
    domains = list(libvirt.domains())
    volumes = libvirt.volumes()
    orphans: list[Orphan] = []
    dead_prefixes = {}
    for prefix, workdir in sorted(data["workdirs"].items()):
        reason = _workdir_verdict(prefix, Path(workdir))
        if reason:
            dead_prefixes[prefix] = reason
    for name in domains:
        for prefix, reason in dead_prefixes.items():
            if name.startswith(prefix):
                orphans.append(Orphan("domain", name, reason))
    for vol in volumes:
        for prefix, reason in dead_prefixes.items():
            if vol.startswith(prefix):
                orphans.append(Orphan("volume", vol, reason))
    kept_domains = [d for d in domains if not any(o.kind == "domain" and o.name == d for o in orphans)]
    in_use = libvirt.volumes_in_use(kept_domains) if kept_domains else set()
    in_use |= (kept_warm := warmimage.layers_in_use())  # a warm image needs its layers and the box image below
    for vol in volumes:
        if vol in data["warm"] and vol not in kept_warm and vol not in in_use:
            orphans.append(Orphan("warm layer", vol, "no warm image in this cache uses it"))
    store = Vagrant()
    for vol in volumes:
        match = libvirt.BOX_IMAGE.match(vol)
        if vol not in data["volumes"] or not match:  # only an image a vagabond run uploaded itself
            continue
        box, version = box_name(match["box"]), match["version"]
        if vol in in_use or store.has_box(box, version):
            continue
        orphans.append(Orphan("box image", vol, f"box {box} {version} is no longer in Vagrant's box store"))
    existing = libvirt.networks()
    for net in data["networks"]:
        if net in existing and not libvirt.network_in_use(net, among=kept_domains):
            orphans.append(Orphan("network", net, "no domain uses it"))
    return orphans


def collect(dry_run: bool = False) -> list[Orphan]:
    """Find the orphans and, unless dry_run, remove them; the ledger forgets what is gone."""
    if not dry_run:
        for item in warmimage.drop_orphaned():  # first: their layers are then no longer in use
            ui.info(f"removed {item}: its work directory is gone")
    orphans = find()
    if dry_run:
        return orphans
    gone: set[str] = set()
    for orphan in orphans:
        if orphan.kind == "domain":
            removed = libvirt.remove_domain(orphan.name)
            orphan.removed = f"domain {orphan.name}" in removed
            gone |= {item.split(" ", 1)[1] for item in removed if item.startswith("volume ")}
        elif orphan.kind in ("volume", "box image", "warm layer"):
            orphan.removed = orphan.name in gone or libvirt.delete_volume(orphan.name)
        elif orphan.kind == "network":
            orphan.removed = libvirt.remove_network_if_unused(orphan.name)
        if not orphan.removed:
            ui.info(f"could not remove {orphan.kind} {orphan.name}")
    _forget_finished()
    return orphans


def _forget_finished() -> None:
    """Drop ledger entries that own nothing any more: the record stays as small as the host's state."""
    data = ledger.read()
    domains, volumes, networks = list(libvirt.domains()), libvirt.volumes(), libvirt.networks()
    stale = []
    for prefix, workdir in data["workdirs"].items():
        leftovers = [n for n in domains + volumes if n.startswith(prefix)]
        if not leftovers and _workdir_verdict(prefix, Path(workdir)):
            stale.append(prefix)
    ledger.forget(
        workdirs=stale,
        networks=[n for n in data["networks"] if n not in networks],
        volumes=[v for v in data["volumes"] if v not in volumes],
        warm=[w for w in data["warm"] if w not in volumes],
    )


def as_dicts(orphans: list[Orphan]) -> list[dict]:
    return [asdict(o) for o in orphans]
