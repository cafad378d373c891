"""Dependency-box recipes: describe a .box for a catalog, repackage an installed box."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

from vagabond import images, provision, ui
from vagabond.boxes import Box
from vagabond.errors import UsageError
from vagabond.vm import Vagrant


def definition_digest(box: Box) -> str:
    """sha256 over the box file and every playbook that provisions it, in order: a prebuilt box is
    current exactly when this matches the digest recorded when it was built."""
    digest = hashlib.sha256()
    digest.update(box.path.read_bytes())
    for run in provision.all_playbooks(box):
        digest.update(b"\0" + str(run.path.name).encode() + b"\0" + run.path.read_bytes())
    return digest.hexdigest()


def describe(box_file: Path, *, name: str, version: str, description: str = "", base: dict | None = None,
             digest: str | None = None) -> dict:  # fmt: skip
    """Write BOX.box.json beside the box: what publish, and people, need to know about it."""
    info = {
        "name": name,
        "version": version,
        "provider": "libvirt",
        "architecture": "amd64",
        "sha256": images.sha256_file(box_file),
        "size": box_file.stat().st_size,
        "description": description,
        "base": base,
        "definition_digest": digest,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    box_file.with_name(box_file.name + ".json").write_text(json.dumps(info, indent=2) + "\n")
    return info


def repackage(name: str, version: str | None, out: Path) -> dict:
    """Re-export a box from Vagrant's box store (`vagrant box repackage`) with its description."""
    out.mkdir(parents=True, exist_ok=True)
    v = Vagrant(out, timeout=3600)
    versions = v.box_versions(name)
    if not versions:
        raise UsageError(f"no libvirt box named {name!r} in Vagrant's box store (see 'vagrant box list')")
    if version is None:
        version = max(versions, key=lambda s: tuple(int(p) if p.isdigit() else p for p in s.split(".")))
    elif version not in versions:
        raise UsageError(f"{name} has no version {version!r} installed (installed: {', '.join(versions)})")
    target = out / f"{name.replace('/', '-')}-{version}-libvirt.box"
    package = out / "package.box"
    package.unlink(missing_ok=True)
    with ui.step(f"vagrant box repackage {name} libvirt {version}"):
        v.box_repackage(name, version)
    package.replace(target)
    return describe(target, name=name, version=version, base={"box": name, "version": version}) | {"path": str(target)}
