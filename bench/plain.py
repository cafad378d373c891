"""Plain `vagrant up` of the rendered Vagrantfile against `vagabond up`, both from the same current
prebuilt box, side by side in one run (as root; it starts the sandbox when the host has no
service manager):

  .venv/bin/python bench/plain.py [--rounds 3]                                   (target <= 1.2x)

The box (debian12-selinux, its SELinux packages from a local mirror) is built and published to a
catalog served on loopback, on the host for vagabond and inside the VMs' namespace for plain
Vagrant. Both sides start with the box in neither Vagrant's box store nor the pool: each round
removes it, so each side downloads it, uploads it into the pool and boots it. Each side runs
alone on the machine, in alternating order; the line gives the ratio of the medians and each
side's spread.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time

from common import ENV, VAGABOND, alternate, ensure_sandbox, publish_prebuilt, report, rounds, selinux_project, timed
from common import SELINUX_BOX as BOX

from vagabond import process, sandbox
from vagabond.host import libvirt

NAME = "vagabond-bench/plain-selinux"
CATALOG_PORT = 8325


def forget_box() -> None:
    """Neither side may find the box already downloaded or uploaded."""
    process.run(["vagrant", "box", "remove", "--force", "--all", NAME], env=ENV)
    for vol in libvirt.box_images(NAME):
        libvirt.delete_volume(vol)


def main() -> int:
    n_rounds = rounds(__doc__)
    ensure_sandbox()
    project, servers = selinux_project("vagabond-bench-plain-", NAME, CATALOG_PORT)
    # Plain Vagrant runs in the VMs' namespace: the same catalog on its loopback too.
    servers.append(
        subprocess.Popen(
            sandbox.wrap(
                [
                    sys.executable,
                    "-m",
                    "http.server",
                    "--bind",
                    "127.0.0.1",
                    str(CATALOG_PORT),
                    "--directory",
                    str(project / "catalog"),
                ]
            ),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    )
    plain = project / "plain"
    ours, theirs = [], []
    try:
        publish_prebuilt(project, CATALOG_PORT)
        process.check([VAGABOND, "render", BOX, "-o", plain], cwd=project, env=ENV)

        def vagabond_side() -> float:
            took, result = timed([VAGABOND, "up", BOX], project, stream=True)
            assert f"using prebuilt {NAME} 1.0.0" in result.stderr, "vagabond up did not use the prebuilt box"
            process.check([VAGABOND, "destroy", BOX], cwd=project, env=ENV)
            return took

        def plain_side() -> float:
            took, result = timed(["vagrant", "up"], plain, vm_network=True, stream=True)
            # site.yml lists the imported playbooks' tasks, each skipped: the box holds their work.
            assert re.search(r"TASK \[Activate SELinux \(Debian\)\] \**\nskipping: \[default\]", result.stdout), (
                "plain vagrant up ran the playbooks"
            )
            assert (
                re.search(r"default\s*: ok=\d+\s+changed=0 ", result.stdout) and "SELinux is enforcing" in result.stdout
            )
            process.check(["vagrant", "destroy", "--force"], cwd=plain, env=ENV, vm_network=True)
            return took

        alternate(
            n_rounds, [(vagabond_side, ours, "vagabond up"), (plain_side, theirs, "vagrant up")], before=forget_box
        )
        # Plain over vagabond: the target is that plain `vagrant up` costs at most 1.2x.
        ok = report(
            "plain vagrant up / vagabond up, from the prebuilt box",
            theirs,
            ours,
            1.2,
            labels=("vagrant up", "vagabond up"),
        )
    finally:
        process.run([VAGABOND, "destroy", BOX], cwd=project, env=ENV)
        if (plain / "Vagrantfile").exists():
            process.run(["vagrant", "destroy", "--force"], cwd=plain, env=ENV, vm_network=True)
        forget_box()
        for server in servers:
            server.terminate()
        shutil.rmtree(project, ignore_errors=True)
        time.sleep(0.1)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
