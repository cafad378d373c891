"""The prebuilt box a VM boots when its catalog has one built from this very definition: which
one (`vagabond prebuilt`, CI cache keys), and its download into Vagrant's box store, which falls
back to the base box when it fails."""

from __future__ import annotations

from vagabond import timeouts, ui
from vagabond.errors import CommandFailed
from vagabond.host.vagrant import Vagrant
from vagabond.publish import read
from vagabond.publish.read import Published
from vagabond.spec.schema import Box
from vagabond.vm import playbooks


def current(box: Box) -> dict:
    """Which prebuilt box `up` would boot, and why (for `vagabond prebuilt` and CI cache keys):
    version is None when the box has no prebuilt section or no catalog version matches."""
    spec = box.spec.prebuilt
    if spec is None:
        return {
            "box": box.name,
            "name": None,
            "catalog": None,
            "version": None,
            "store": None,
            "reason": f"box {box.name!r} has no prebuilt section",
        }
    found, why = read.find_current(spec.catalog, playbooks.definition_digest(box), spec.name, spec.version)
    # The version's own directory: a CI cache of it holds that version once, not every version stored.
    store = str(Vagrant().box_dir(spec.name) / found.version) if found else None
    return {
        "box": box.name,
        "name": spec.name,
        "catalog": spec.catalog,
        "version": found.version if found else None,
        "store": store,
        "reason": why,
    }


def fetch_current(box: Box, *, allowed: bool = True) -> Published | None:
    """The prebuilt box, downloaded into Vagrant's box store, when its catalog has a version built
    from this exact definition; otherwise None (base box + full provisioning), always saying why."""
    if box.spec.prebuilt is None:
        return None
    if not allowed:
        ui.info("--fresh: using the base box with full provisioning")
        return None
    spec = box.spec.prebuilt
    found, why = read.find_current(spec.catalog, playbooks.definition_digest(box), spec.name, spec.version)
    if found is None:
        ui.info(f"using the base box with full provisioning: {why}")
        return None
    if fetch(found) is None:
        return None
    ui.info(f"using {why}")
    return found


def fetch(source: Published) -> Published | None:
    """Download the prebuilt box before `vagrant up`, so that a failed download (server down,
    checksum mismatch) falls back to the base box instead of failing the run. Vagrant checks the
    checksum from the catalog and keeps nothing of a box that does not match."""
    v = Vagrant(timeout=timeouts.BOX_DOWNLOAD)
    if v.has_box(source.name, source.version):
        return source
    try:
        with ui.step(f"download {source.name} {source.version}"):
            v.box_add_catalog(source.url, source.version)
    except CommandFailed as exc:
        # Vagrant's message is a paragraph (then details): keep the paragraph, on one line.
        reason = " ".join(exc.stderr.strip().split("\n\n")[0].split()) or str(exc)
        ui.info(
            f"using the base box with full provisioning: download of {source.name} {source.version} failed: {reason}"
        )
        return None
    return source
