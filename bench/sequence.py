"""`vagabond test` against the same sequence done with plain Vagrant, side by side in one run (as
root; it starts the sandbox when the host has no service manager):

  .venv/bin/python bench/sequence.py [--rounds 3]                              (target <= 0.5x)

Box: debian12-selinux, its SELinux packages from a local mirror. The sequence is what a project
tests with: a provisioned VM, the playbooks again for idempotence, a verify command, destroy.

- plain Vagrant: the Vagrantfile `vagabond render --fresh` writes (base box, Vagrant's ansible
  provisioner, no prebuilt box: what a project without vagabond has), `vagrant up`, `vagrant
  provision`, `vagrant ssh -c getenforce`, `vagrant destroy -f`;
- vagabond: `vagabond test debian12-selinux -- getenforce`, with the nightly prebuilt box of this
  definition published to a catalog on loopback (built once, before the rounds).

Both start from the same base box in Vagrant's store; each side runs alone on the machine, in
alternating order; the line gives the ratio of the medians and each side's spread.
"""

from __future__ import annotations

import shutil
import sys
import time

from common import ENV, VAGABOND, alternate, ensure_sandbox, publish_prebuilt, report, rounds, selinux_project, timed
from common import SELINUX_BOX as BOX

from vagabond import process

NAME = "vagabond-bench/sequence-selinux"
CATALOG_PORT = 8326


def main() -> int:
    n_rounds = rounds(__doc__)
    ensure_sandbox()
    project, servers = selinux_project("vagabond-bench-sequence-", NAME, CATALOG_PORT)
    plain = project / "plain"
    ours, theirs = [], []
    ok = False
    try:
        process.check(
            [VAGABOND, "base", "build", BOX], cwd=project, env=ENV, timeout=7200
        )  # in Vagrant's store, for both
        publish_prebuilt(project, CATALOG_PORT)
        process.check(
            [VAGABOND, "render", BOX, "--fresh", "-o", plain], cwd=project, env=ENV
        )  # the base box: no prebuilt

        def vagabond_side() -> float:
            took, result = timed([VAGABOND, "test", BOX, "--", "getenforce"], project, stream=True)
            assert f"using prebuilt {NAME} 1.0.0" in result.stderr, "vagabond test did not use the prebuilt box"
            assert "Enforcing" in result.stdout and "TASK [Activate SELinux (Debian)]" in result.stderr
            return took

        def plain_side() -> float:
            started = time.monotonic()
            up = process.check(["vagrant", "up"], cwd=plain, env=ENV, vm_network=True, timeout=7200, stream=True)
            assert "TASK [Activate SELinux (Debian)]" in up.stdout, "plain vagrant up did not provision"
            again = process.check(
                ["vagrant", "provision"], cwd=plain, env=ENV, vm_network=True, timeout=7200, stream=True
            )
            assert "changed=0" in again.stdout, "the second run changed something"
            verify = process.check(
                ["vagrant", "ssh", "-c", "sudo getenforce"], cwd=plain, env=ENV, vm_network=True
            )  # not on the user's PATH
            assert "Enforcing" in verify.stdout
            process.check(["vagrant", "destroy", "--force"], cwd=plain, env=ENV, vm_network=True)
            return time.monotonic() - started

        alternate(n_rounds, [(vagabond_side, ours, "vagabond test"), (plain_side, theirs, "plain vagrant")])
        ok = report(
            "vagabond test / the same sequence with plain Vagrant",
            ours,
            theirs,
            0.5,
            labels=("vagabond test", "plain vagrant"),
        )
    finally:
        process.run([VAGABOND, "destroy", BOX], cwd=project, env=ENV)
        if (plain / "Vagrantfile").exists():
            process.run(["vagrant", "destroy", "--force"], cwd=plain, env=ENV, vm_network=True)
        process.run(["vagrant", "box", "remove", "--force", "--all", NAME], env=ENV)
        for server in servers:
            server.terminate()
        shutil.rmtree(project, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
