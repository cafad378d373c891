"""A stand-in for a distribution's generic cloud image, built from Debian's packages: cloud-init
(with growpart from cloud-guest-utils) and openssh, no vagrant user, a GPT disk with a BIOS boot
partition and the root partition last, as the images distributions publish. Cached like base boxes."""

from __future__ import annotations

from pathlib import Path

from vagabond import paths
from vagabond.bases import diskimage, guest, mmdebstrap
from vagabond.definition.schema import MmdebstrapBase


def build_generic_image() -> Path:
    target = paths.cache_dir() / "images" / f"debian12-genericcloud-gpt-r{guest.RECIPE_VERSION}.qcow2"
    if target.is_file():
        return target
    spec = MmdebstrapBase(
        kind="mmdebstrap",
        suite="bookworm",
        box="test/generic",
        packages=["cloud-init", "cloud-guest-utils", "fdisk"],
        disk=4,
    )
    rootfs = mmdebstrap.rootfs(spec)
    target.parent.mkdir(parents=True, exist_ok=True)
    with diskimage.scratch_dir(target.parent, "generic-") as tmp:
        raw = tmp / "disk.raw"
        mmdebstrap.make_disk(raw, rootfs, spec.disk, kernel_out=tmp / "vmlinuz", vagrant_user=False, gpt=True)
        partial = target.with_suffix(".partial")
        diskimage.convert_to_qcow2(raw, partial)
        partial.replace(target)
    return target


if __name__ == "__main__":
    print(build_generic_image())
