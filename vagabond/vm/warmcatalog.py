"""Warm images and catalogs: which warm image may go into one (`vagabond publish`), and, when the
prebuilt box `up` would boot has a warm image made on a host like this one (`vagabond build
--warm`, then publish), its download and take-in instead of a cold boot; otherwise one line says
why not.

The catalog's description of an image (its key) only chooses which one to download: the archive
is then taken in as `up --warm-from` takes in a CI cache (vagabond.vm.warmarchive), its manifest
compared with this VM's key again and every file checked: what the restored VM can be (its
domain, disk and network) is bounded; what its guest holds is the catalog's, as a box's disk is.

A warm image belongs to the work directory it was made in (its domain names come from that
path): a nightly build and the CI jobs of one repository share it, since the runners check the
repository out at the same path.
"""

from __future__ import annotations

import tarfile
from pathlib import Path

from vagabond import files, ui
from vagabond.catalog.catalogs import open_catalog
from vagabond.definition.schema import Box
from vagabond.errors import Interrupted, VagabondError, WarmError
from vagabond.vm import prebuilt, warmarchive, warmimage
from vagabond.vm.workdir import Workdir


def take_in(box: Box, wd: Workdir, wanted: dict) -> bool:
    """The catalog's warm image of this VM in place of the work directory's own; True when taken
    in (a restore follows), False and one line when there is none to take (nothing is said when
    the catalog has no prebuilt box for this definition: booting cold says that)."""
    if box.spec.prebuilt is None:
        return False
    found, _ = prebuilt.find(box)
    if found is None:
        return False
    catalog = open_catalog(found.url)
    offers, why = catalog.warm_offers(found)
    if not offers:
        ui.info(f"no warm image to download: {why}")
        return False
    differences = [warmimage.difference(o.key, wanted) for o in offers]
    if None not in differences:
        ui.info(
            f"booting cold: the warm images of {found.name} {found.version} in its catalog are of other VMs "
            f"({len(offers)}; {differences[0]})"
        )
        return False
    chosen = offers[differences.index(None)]
    try:
        path = catalog.download_warm(chosen)
    except Interrupted:
        raise  # a cancelled run ends, it does not boot cold
    except (VagabondError, OSError) as exc:
        message = exc.message if isinstance(exc, VagabondError) else f"{chosen.url}: {exc.strerror or exc}"
        ui.warning(f"not using the catalog's warm image: {message}", title=f"vagabond up {box.name}")
        return False
    named = f"the warm image of {found.name} {found.version}"
    try:
        return warmarchive.take_in(box, wd, path, wanted, step=f"take in {named}", named=named, source=found)
    finally:
        files.remove(path)  # taken in, or refused: the download is not needed either way


def check_publishable(archive: Path, key: dict, key_digest: str) -> None:
    """A warm image that may go into a catalog, where anyone who reads it can restore it: every
    member of the tar is one its manifest lists, and those are the VM's disks and memory images
    only (no SSH key: its VM takes a new one where it is restored); it was not provisioned with
    -e values; and its key is the one the box description gives. WarmError otherwise."""
    try:
        with files.open_regular_read(archive) as fh, tarfile.open(fileobj=fh, mode="r|") as tar:
            members = iter(tar)
            first = warmarchive._next(members, archive)
            if (
                first is None
                or first.name != warmarchive.MANIFEST
                or not first.isreg()
                or first.size > warmarchive.MANIFEST_MAX
            ):
                raise WarmError(
                    f"{archive} is not a warm image archive: it does not start with its {warmarchive.MANIFEST}"
                )
            manifest = files.loads(tar.extractfile(first).read(), f"{archive}:{warmarchive.MANIFEST}")
            held = []
            while (member := warmarchive._next(members, archive)) is not None:
                held.append(member.name)
    except (tarfile.TarError, ValueError, EOFError) as exc:
        raise WarmError(f"{archive} is not a whole warm image archive: {exc}") from None
    if (
        not isinstance(manifest, dict)
        or manifest.get("format") != warmarchive.FORMAT
        or not warmimage._valid(manifest.get("meta"))
        or not isinstance(manifest.get("files"), dict)
    ):
        raise WarmError(f"{archive} is not a warm image of format {warmarchive.FORMAT}")
    listed = manifest["files"]
    others = sorted(
        n
        for n in {*listed, *held}
        if not (warmarchive.LAYER_NAME.fullmatch(n) or warmarchive.MEMORY_NAME.fullmatch(n.removesuffix(".gz")))
    )
    if others or not warmimage.rekeys(manifest["meta"]):
        raise WarmError(
            f"{archive} carries {', '.join(warmimage._shown(n) for n in others) or 'no way to give its VM a new key'}: "
            "a warm image in a catalog must open no VM restored from it (its guest needs vagabond's guest agent)",
            hint="publish the box alone (--no-warm)",
        )
    if sorted(held) != sorted(listed):
        raise WarmError(
            f"{archive} holds other files than its manifest lists", hint="publish the box alone (--no-warm)"
        )
    saved = manifest["meta"]["key"]
    provisioning = saved.get("provisioning") if isinstance(saved.get("provisioning"), dict) else {}
    if provisioning.get("extra_vars") != warmimage.extra_vars_digest(()):
        raise WarmError(
            f"{archive} is of a VM provisioned with -e values, which may be secrets: never published",
            hint="publish the box alone (--no-warm)",
        )
    if saved != key or warmimage.key_digest(saved) != key_digest:
        raise WarmError(
            f"{archive} is not the warm image its box description names (its key differs)",
            hint="publish what 'vagabond build --warm' wrote",
        )
