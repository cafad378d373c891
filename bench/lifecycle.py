"""Lifecycle benchmark, side by side in one run on this host (run it inside the sandbox namespace):

  scripts/sandbox.sh exec .venv/bin/python bench/lifecycle.py [--calls 15] [--rounds 2]

1. `vagabond run BOX -- true` against `vagrant ssh -c true` on the same VM      (target <= 0.1x)
2. the same playbook through `vagabond provision` against Vagrant's own ansible
   provisioner (`vagrant provision`) on the same VM                              (target <= 0.5x)
3. `vagabond up` against plain `vagrant up` of the same rendered Vagrantfile     (target <= 1.05x)
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from vagabond import process

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
BOX = "debian12-bench"
VAGABOND = str(Path(sys.executable).with_name("vagabond"))
ENV = dict(os.environ, VAGRANT_CHECKPOINT_DISABLE="1", VAGRANT_DEFAULT_PROVIDER="libvirt",
           PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")  # fmt: skip


def timed(argv, cwd, env=ENV, timeout=3600) -> float:
    started = time.monotonic()
    process.run(argv, cwd=cwd, env=env, timeout=timeout)
    return time.monotonic() - started


def vagabond(*args) -> list[str]:
    return [VAGABOND, "--boxes-dir", str(BENCH / "boxes"), *args]


def report(name: str, ours: list[float], theirs: list[float], target: str, ok) -> None:
    a, b = statistics.median(ours), statistics.median(theirs)
    verdict = "meets" if ok(a / b) else "MISSES"
    print(f"{name}: vagabond {a:.3f}s vs baseline {b:.3f}s (median of {len(ours)}/{len(theirs)}) "
          f"-> ratio {a / b:.3f}x ({verdict} target {target})", flush=True)  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=15, help="calls per side for the run benchmark")
    parser.add_argument("--rounds", type=int, default=2, help="rounds per side for up and provision")
    args = parser.parse_args()

    project = Path(tempfile.mkdtemp(prefix="vagabond-bench-"))
    baseline = project / "baseline"
    wd = project / ".vagabond" / BOX
    results = []
    try:
        # Build/add the base box and warm the libvirt pool so neither side pays for the first upload.
        process.run(vagabond("up", BOX, "--no-provision"), cwd=project, env=ENV, timeout=3600)
        process.run(vagabond("destroy", BOX), cwd=project, env=ENV)

        up_ours, up_theirs = [], []
        for _ in range(args.rounds):
            up_ours.append(timed(vagabond("up", BOX, "--no-provision"), project))
            baseline.mkdir(exist_ok=True)
            shutil.copy(wd / "Vagrantfile", baseline / "Vagrantfile")
            up_theirs.append(timed(["vagrant", "up", "--provider=libvirt"], baseline))
            process.run(["vagrant", "destroy", "--force"], cwd=baseline, env=ENV)
            if _ < args.rounds - 1:
                process.run(vagabond("destroy", BOX), cwd=project, env=ENV)
        results.append(("up", up_ours, up_theirs, "<= 1.05x", lambda r: r <= 1.05))

        # The VM from the last vagabond up serves the run and provision benchmarks.
        process.run([VAGABOND, "run", BOX, "--", "true"], cwd=project, env=ENV)  # open the shared connection
        run_ours = [timed([VAGABOND, "run", BOX, "--", "true"], project) for _ in range(args.calls)]
        run_theirs = [timed(["vagrant", "ssh", "-c", "true"], wd) for _ in range(args.calls)]
        results.append(("run", run_ours, run_theirs, "<= 0.1x", lambda r: r <= 0.1))

        # Vagrant's own ansible provisioner, same playbook, same VM: a second Vagrantfile in the same
        # directory (VAGRANT_VAGRANTFILE) adds the provisioner and shares the machine state.
        playbook = BENCH / "playbooks" / "bench.yml"
        (wd / "Vagrantfile.provisioner").write_text(
            (wd / "Vagrantfile").read_text()
            + f"\nVagrant.configure('2') do |config|\n  config.vm.provision 'ansible' do |ansible|\n"
            f"    ansible.playbook = '{playbook}'\n    ansible.compatibility_mode = '2.0'\n  end\nend\n"
        )
        theirs_env = dict(ENV, VAGRANT_VAGRANTFILE="Vagrantfile.provisioner")
        prov_ours, prov_theirs = [], []
        for _ in range(args.rounds + 1):
            prov_ours.append(timed(vagabond("provision", BOX), project))
            prov_theirs.append(timed(["vagrant", "provision"], wd, env=theirs_env))
        results.append(("provision", prov_ours, prov_theirs, "<= 0.5x", lambda r: r <= 0.5))
    finally:
        process.run(vagabond("destroy", BOX), cwd=project, env=ENV, check=False)
        if baseline.exists():
            process.run(["vagrant", "destroy", "--force"], cwd=baseline, env=ENV, check=False)
        shutil.rmtree(project, ignore_errors=True)
    for name, ours, theirs, target, ok in results:
        report(name, ours, theirs, target, ok)
    return 0


if __name__ == "__main__":
    sys.exit(main())
