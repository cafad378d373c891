"""Prebuilt dependency box benchmark, side by side in one run (as root; it starts the sandbox when
the host has no service manager):

  .venv/bin/python bench/prebuilt.py [--json FILE]

1. time to a ready debian12-selinux VM (SELinux enforcing, verified) from the base box with full
   provisioning (`vagabond up --fresh`) against from the prebuilt box published to a local
   catalog (`vagabond up`, download and box add included)                      (target >= 3x faster)
2. the size of vagabond's box (`vagabond build`) against plain `vagrant package` of the same
   provisioned VM (vagrant-libvirt copies the disk, runs libguestfs' virt-sysprep and
   virt-sparsify on the copy, and tars it with gzip); vagabond build then continues with that
   very VM                                                                      (target <= 0.6x)

The SELinux packages come from a local apt mirror served inside the namespace (as in the tests).
"""

from __future__ import annotations

import argparse
import glob
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from common import CACHE, ENV, ROOT, VAGABOND, ensure_sandbox, publish_prebuilt, serve, timed, write_figures

from vagabond import process
from vagabond.host import detect, libvirt

BOX = "debian12-selinux"
MIRROR_PORT, CATALOG_PORT = 8321, 8324
SELINUX_PACKAGES = ["selinux-basics", "selinux-policy-default", "auditd"]


def guestfs_env() -> dict[str, str]:
    """libguestfs builds its appliance from a kernel in /boot (linux-image-cloud-amd64 here)."""
    kernels = sorted(glob.glob("/boot/vmlinuz-*"))
    if not shutil.which("virt-sysprep") or not kernels:
        raise SystemExit(
            "bench: plain `vagrant package` needs libguestfs-tools and a kernel in /boot "
            "(apt-get install --no-install-recommends libguestfs-tools linux-image-cloud-amd64)"
        )
    release = kernels[-1].removeprefix("/boot/vmlinuz-")
    env = {
        "LIBGUESTFS_BACKEND": "direct",
        "SUPERMIN_KERNEL": kernels[-1],
        "SUPERMIN_MODULES": f"/lib/modules/{release}",
    }
    if detect.probe_and_decide(None).driver == "qemu":  # libguestfs would try /dev/kvm and abort here
        env["LIBGUESTFS_BACKEND_SETTINGS"] = "force_tcg"
    return env


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path, help="also write every figure here (for bench/chart.py)")
    args = parser.parse_args()
    ensure_sandbox()
    ENV.update(guestfs_env())
    process.check(
        [ROOT / "scripts" / "local-apt-repo.sh", CACHE / "apt-repo", "bookworm", *SELINUX_PACKAGES], timeout=1800
    )
    project = Path(tempfile.mkdtemp(prefix="vagabond-bench-prebuilt-"))
    version = f"0.0.{int(time.time())}"  # never one Vagrant's box store already holds
    name = "vagabond-bench/debian12-selinux"
    (project / "boxes").mkdir()
    (project / "catalog").mkdir()
    shutil.copy(ROOT / "boxes" / "debian12.yaml", project / "boxes")
    (project / "boxes" / f"{BOX}.yaml").write_text(
        (ROOT / "boxes" / f"{BOX}.yaml").read_text()
        + f"prebuilt:\n  name: {name}\n  catalog: http://127.0.0.1:{CATALOG_PORT}/metadata.json\n"
    )
    (project / "vars.json").write_text(
        json.dumps({"vagabond_apt_sources": [f"deb [trusted=yes] http://192.168.121.1:{MIRROR_PORT}/ ./"]})
    )
    fresh, prebuilt = project / "fresh", project / "prebuilt"
    servers = [
        serve(CACHE / "apt-repo", MIRROR_PORT, for_guests=True),
        serve(project / "catalog", CATALOG_PORT, for_guests=False),
    ]
    try:
        # Both sides start from cached inputs: the base box is built and uploaded to the pool first.
        process.check(
            [VAGABOND, "up", "debian12", "--no-provision", "--workdir", project / "warm"],
            cwd=project,
            env=ENV,
            timeout=3600,
        )
        process.check([VAGABOND, "destroy", "debian12", "--workdir", project / "warm"], cwd=project, env=ENV)

        print("base box + full provisioning ...", flush=True)
        t_fresh, _ = timed(
            [VAGABOND, "up", BOX, "--fresh", "-e", f"@{project / 'vars.json'}", "--workdir", fresh],
            project,
            stream=True,
        )

        print("plain `vagrant package` of that VM (it packages a copy of the disk) ...", flush=True)
        process.check([VAGABOND, "halt", BOX, "--workdir", fresh], cwd=project, env=ENV)
        plain = project / "plain.box"
        timed(["vagrant", "package", "--output", plain], fresh, vm_network=True, stream=True)
        size_plain = plain.stat().st_size
        plain.unlink()

        info = publish_prebuilt(project, CATALOG_PORT, BOX, version, workdir=fresh)

        print("prebuilt box from the catalog ...", flush=True)
        t_prebuilt, result = timed([VAGABOND, "up", BOX, "--workdir", prebuilt], project, stream=True)
        if f"using prebuilt {name} {version}" not in result.stderr:
            raise SystemExit("bench: up did not use the prebuilt box")
        size_ours = info["size"]
    finally:
        for workdir in (fresh, prebuilt):
            process.run([VAGABOND, "destroy", BOX, "--workdir", workdir], cwd=project, env=ENV)
        process.run(["vagrant", "box", "remove", "--force", "--all", name], env=ENV)
        for vol in libvirt.box_images(name):
            libvirt.delete_volume(vol)
        for server in servers:
            server.terminate()
        shutil.rmtree(project, ignore_errors=True)
    speedup = t_fresh / t_prebuilt
    print(
        f"time to ready {BOX}: base box + provisioning {t_fresh:.0f}s vs prebuilt {t_prebuilt:.0f}s "
        f"-> {speedup:.1f}x faster ({'meets' if speedup >= 3 else 'MISSES'} target >= 3x)"
    )
    ratio = size_ours / size_plain
    print(
        f"box size: vagabond build {size_ours / 2**20:.0f} MiB vs vagrant package {size_plain / 2**20:.0f} MiB "
        f"-> ratio {ratio:.2f}x ({'meets' if ratio <= 0.6 else 'MISSES'} target <= 0.6x)"
    )
    write_figures(
        args.json,
        "prebuilt",
        [
            {
                "title": f"Ready {BOX} (SELinux enforcing, verified)",
                "unit": "s",
                "series": {"base box + full provisioning": [t_fresh], "prebuilt box from the catalog": [t_prebuilt]},
            },
            {
                "title": "Size of the provisioned box",
                "unit": "MiB",
                "series": {
                    "vagrant package": [round(size_plain / 2**20, 1)],
                    "vagabond build": [round(size_ours / 2**20, 1)],
                },
            },
        ],
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
