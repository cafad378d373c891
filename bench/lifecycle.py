"""Lifecycle benchmark, side by side in one run on this host (as root; it starts the sandbox when
the host has no service manager):

  .venv/bin/python bench/lifecycle.py [--rounds 3] [--calls 15]

1. `vagabond up --no-provision` against plain `vagrant up --no-provision` of the Vagrantfile
   `vagabond render` writes for the same box                                       (target <= 1.05x)
   Each side boots alone: the other side's VM is destroyed first, the order alternates between
   rounds, and both start from the same box store and pool (the base box image is uploaded once,
   before the first round).
2. `vagabond run BOX -- true` against `vagrant ssh -c true` on the same VM       (target <= 0.1x)
3. the same playbook through `vagabond provision` against Vagrant's own ansible
   provisioner (`vagrant provision`) on the same VM                               (target <= 0.5x)

Each line gives the ratio of the medians and the spread (min / median / max) of each side.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from common import ENV, ROOT, VAGABOND, alternate, ensure_sandbox, report, timed, write_figures

from vagabond import process
from vagabond.vm.workdir import Workdir

BENCH = ROOT / "bench"
BOX = "debian12-bench"


def vagabond(*args) -> list[str]:
    return [VAGABOND, "--boxes-dir", str(BENCH / "boxes"), *args]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="rounds per side for up and provision")
    parser.add_argument("--calls", type=int, default=15, help="calls per side for the run benchmark")
    parser.add_argument("--json", type=Path, help="also write every figure here (for bench/chart.py)")
    args = parser.parse_args()
    ensure_sandbox()

    project = Path(tempfile.mkdtemp(prefix="vagabond-bench-"))
    baseline = project / "baseline"
    wd = project / ".vagabond" / BOX
    verdicts = []

    def ours_up() -> float:
        took = timed(vagabond("up", BOX, "--no-provision"), project)[0]
        process.check(vagabond("destroy", BOX), cwd=project, env=ENV)  # alone: no VM of this side stays
        return took

    def theirs_up() -> float:
        took = timed(["vagrant", "up", "--provider=libvirt", "--no-provision"], baseline, vm_network=True)[0]
        process.check(["vagrant", "destroy", "--force"], cwd=baseline, env=ENV, vm_network=True)
        return took

    try:
        # The base box built, added and uploaded to the pool once; the baseline is the same box
        # rendered for plain Vagrant into a directory of its own (so its own domain names).
        process.check(vagabond("up", BOX, "--no-provision"), cwd=project, env=ENV, timeout=3600)
        process.check(vagabond("destroy", BOX), cwd=project, env=ENV)
        process.check(vagabond("render", BOX, "-o", baseline), cwd=project, env=ENV)

        up_ours, up_theirs = [], []
        alternate(args.rounds, [(ours_up, up_ours, "vagabond up"), (theirs_up, up_theirs, "vagrant up")])
        verdicts.append(report("up", up_ours, up_theirs, 1.05))

        # One VM serves the run and provision benchmarks, both sides in turn.
        process.check(vagabond("up", BOX, "--no-provision"), cwd=project, env=ENV, timeout=3600)
        process.check([VAGABOND, "run", BOX, "--", "true"], cwd=project, env=ENV)  # opens the shared connection
        run_ours, run_theirs = [], []
        as_vagabond = Workdir.at(wd).vagrant_env()  # vagrant in vagabond's work directory, as vagabond runs it
        for _ in range(args.calls):
            run_ours.append(timed([VAGABOND, "run", BOX, "--", "true"], project)[0])
            run_theirs.append(timed(["vagrant", "ssh", "-c", "true"], wd, vm_network=True, env_extra=as_vagabond)[0])
        verdicts.append(report("run", run_ours, run_theirs, 0.1))

        # Vagrant's own ansible provisioner, same playbook, same VM: a second Vagrantfile in the
        # work directory (VAGRANT_VAGRANTFILE) adds it under a name of its own, and shares the
        # machine state; `--provision-with` runs it alone (not the rendered file's provisioner).
        playbook = BENCH / "playbooks" / "bench.yml"
        (wd / "Vagrantfile.provisioner").write_text(
            (wd / "Vagrantfile").read_text()
            + f"\nVagrant.configure('2') do |config|\n  config.vm.provision 'bench', type: 'ansible' do |ansible|\n"
            f"    ansible.playbook = '{playbook}'\n    ansible.compatibility_mode = '2.0'\n  end\nend\n"
        )
        prov_ours, prov_theirs = [], []

        def theirs_provision() -> float:
            return timed(
                ["vagrant", "provision", "--provision-with", "bench"],
                wd,
                vm_network=True,
                env_extra={**as_vagabond, "VAGRANT_VAGRANTFILE": "Vagrantfile.provisioner"},
            )[0]

        alternate(
            args.rounds + 1,
            [
                (lambda: timed(vagabond("provision", BOX), project)[0], prov_ours, "vagabond provision"),
                (theirs_provision, prov_theirs, "vagrant provision"),
            ],
        )
        verdicts.append(report("provision", prov_ours, prov_theirs, 0.5))
        write_figures(
            args.json,
            "lifecycle",
            [
                {
                    "title": "Boot, no provisioning: vagabond up against plain vagrant up",
                    "unit": "s",
                    "series": {"vagrant up --no-provision": up_theirs, "vagabond up --no-provision": up_ours},
                },
                {
                    "title": "The same playbook: vagabond provision against Vagrant's ansible provisioner",
                    "unit": "s",
                    "series": {"vagrant provision": prov_theirs, "vagabond provision": prov_ours},
                },
            ],
        )
    finally:
        process.run(vagabond("destroy", BOX), cwd=project, env=ENV)
        if (baseline / "Vagrantfile").exists():
            process.run(["vagrant", "destroy", "--force"], cwd=baseline, env=ENV, vm_network=True)
        shutil.rmtree(project, ignore_errors=True)
    return 0 if all(verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
