"""Base boxes of kind vagrant: a box Vagrant downloads itself (a catalog box, a box file URL),
added to its store on the host's network before `vagrant up`."""

from __future__ import annotations

from vagabond import timeouts, ui
from vagabond.definition.schema import Box, VagrantBase
from vagabond.host.vagrant import Vagrant


def download(spec: VagrantBase) -> bool:
    """A base that Vagrant downloads (a catalog box, a URL) is added to the box store here, on the
    host's network: `vagrant up` runs in the VMs' namespace, which has no route out when the host
    keeps one. A box already in the store is left as it is (Vagrant picks the version); True when
    this call added it."""
    v = Vagrant(timeout=timeouts.BOX_DOWNLOAD)
    if v.has_any_version(spec.box):
        return False
    if spec.url and not spec.url.endswith(".json") and not spec.checksum:
        ui.warning(
            f"{spec.url} is added without a checksum (the box file names none): pin it with checksum: sha256:HEX"
        )
    elif spec.url and spec.url.startswith("http://"):
        ui.warning(
            f"catalog {spec.url} is read over plain http: anyone on the way can change it, its checksums included"
        )
    with ui.step(f"download {spec.box}" + (f" from {spec.url}" if spec.url else "")):
        v.box_add_base(spec.box, spec.url, spec.version, spec.checksum)
    return True


# --- the kind's face (vagabond.bases.kinds) --------------------------------------------------------


def cache_key(box: Box) -> str:
    return ""  # Vagrant's own store keeps it


def cache_path(box: Box) -> None:
    return None


def make(box: Box, image: str | None = None) -> None:
    download(box.spec.base)
    return None
