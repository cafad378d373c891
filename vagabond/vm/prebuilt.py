"""The prebuilt box a VM boots when its catalog has one built from this very definition: which
one (`vagabond prebuilt`, CI cache keys), and its download into Vagrant's box store, which falls
back to the base box when it fails."""

from __future__ import annotations

from vagabond import timeouts, ui
from vagabond.catalog.catalogs import open_catalog
from vagabond.catalog.read import Published
from vagabond.definition.schema import Box
from vagabond.host.vagrant import Vagrant
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
    found, why = find(box)
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
    if box.spec.prebuilt is not None and not allowed:
        ui.info("--fresh: using the base box with full provisioning")
        return None
    found, why = in_store(box)
    if box.spec.prebuilt is not None:
        ui.info(f"using {why}" if found else f"using the base box with full provisioning: {why}")
    return found


def in_store(box: Box) -> tuple[Published | None, str]:
    """The box's current prebuilt box in Vagrant's box store (downloaded when missing) and what it
    is; or None and why not (no prebuilt box declared, none built from this definition, a failed
    download)."""
    if box.spec.prebuilt is None:
        return None, f"{box.name}'s box file declares no prebuilt box (add a prebuilt: section)"
    found, why = find(box)
    if found is None:
        return None, why
    fetched, failure = fetch(found)
    return (found, why) if fetched else (None, failure)


def find(box: Box) -> tuple[Published | None, str]:
    """The newest version in the box's catalog built from this very definition, or None and why
    (nothing downloaded)."""
    spec = box.spec.prebuilt
    if spec is None:
        return None, f"{box.name}'s box file declares no prebuilt box"
    return open_catalog(spec.catalog).find_current(playbooks.definition_digest(box), spec.name, spec.version)


def fetch(source: Published) -> tuple[Published | None, str]:
    """Download the prebuilt box before `vagrant up`, so that a failed download (server down,
    checksum mismatch) falls back to the base box instead of failing the run; the box, or None and
    why. Vagrant checks the checksum from the catalog and keeps nothing of a box that does not match."""
    v = Vagrant(timeout=timeouts.BOX_DOWNLOAD)
    if v.has_box(source.name, source.version):
        return source, ""
    try:
        with ui.step(f"download {source.name} {source.version}"):
            if failure := open_catalog(source.url).add_to_vagrant(v, source):
                raise _Failed(failure)  # the step says it failed, in the log and the job's summary
    except _Failed as exc:
        return None, str(exc)
    return source, ""


class _Failed(Exception):
    """A download that failed, carried out of its step."""
