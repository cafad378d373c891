"""Warm start against a cold boot, side by side in one run on this host (as root; it starts the
sandbox when the host has no service manager):

  .venv/bin/python bench/warm.py [--rounds 3] [--resets 5] [--json PATH]

The box is debian12-selinux, provisioned from a local mirror (the guests reach it in their namespace).
1. From no VM to `vagabond run BOX -- getenforce` saying Enforcing: `vagabond up BOX` restoring the
   warm image `vagabond save` made, against `vagabond up BOX --cold` (boot and full provisioning).
   Each side alone: the VM is destroyed before each; the order alternates between rounds.
   Targets: warm <= 2 s median (p95 <= 3 s); the ratio is printed against the cold side.
2. `vagabond reset BOX` (the same VM back to its warm image), --resets times        (target <= 2 s)
3. `vagabond test BOX` starting from the warm image: restore, idempotence, verify, destroy
                                                                                   (target <= 15 s)
4. The warm image's memory file against the VM's memory                           (target <= 0.5x)
5. The warm image as one file (`save --export`, compressed for a cache or a catalog): its size, its
   memory image's, the time to write it; `up --warm-from FILE` where no warm image is left (take
   in, restore) to Enforcing, against the cold side of 1.

Each line gives the figure, its spread (min / median / max) and the target.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tarfile
from pathlib import Path

from common import ENV, VAGABOND, alternate, ensure_sandbox, report, selinux_project, spread, timed, write_figures

from vagabond import process

BOX = "debian12-selinux"
CATALOG_PORT = 8328  # an empty catalog: the box boots from its base, as with no prebuilt box published


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="rounds per side (default: 3)")
    parser.add_argument("--resets", type=int, default=5, help="resets timed (default: 5)")
    parser.add_argument("--json", type=Path, help="also write every figure here (for bench/chart.py)")
    args = parser.parse_args()
    ensure_sandbox()
    project, servers = selinux_project("vagabond-bench-warm-", "bench/none", CATALOG_PORT)
    verdicts = []

    def vagabond(*argv: str, timeout: float = 7200) -> process.Result:
        return process.check([VAGABOND, *argv], cwd=project, env=ENV, timeout=timeout)

    def to_enforcing(*up_args: str) -> float:
        vagabond("destroy", BOX)  # each side alone, from no VM
        took, _ = timed([VAGABOND, "up", BOX, *up_args], project)
        ran, result = timed([VAGABOND, "run", BOX, "--", "getenforce"], project)
        if result.stdout.strip() != "Enforcing":
            raise SystemExit(f"bench: getenforce said {result.stdout.strip()!r}")
        return took + ran

    try:
        print("the base box, a cold up and a warm image of it (once) ...", flush=True)
        vagabond("up", BOX, "--cold")
        described = process.check([VAGABOND, "save", BOX, "--json"], cwd=project, env=ENV, timeout=900).stdout
        print(described, flush=True)

        warm, cold = [], []
        alternate(
            args.rounds,
            [(lambda: to_enforcing(), warm, "warm up + run"), (lambda: to_enforcing("--cold"), cold, "cold up + run")],
        )
        verdicts.append(report("up to Enforcing", warm, cold, 1.0, labels=("warm (restore)", "cold (boot+provision)")))
        p95 = sorted(warm)[min(len(warm) - 1, round(0.95 * (len(warm) - 1)))]
        met = statistics.median(warm) <= 2.0 and p95 <= 3.0
        print(f"  warm target <= 2 s median, p95 <= 3 s: {'meets' if met else 'MISSES'} (p95 {p95:.2f} s)")
        verdicts.append(met)

        vagabond("destroy", BOX)
        vagabond("up", BOX)  # restored: the VM reset goes back to
        resets = []
        for i in range(args.resets):
            vagabond("run", BOX, "--", "touch", f"/home/vagrant/after-{i}")
            resets.append(timed([VAGABOND, "reset", BOX], project)[0])
            print(f"reset {i + 1}: {resets[-1]:.2f}s", flush=True)
        met = statistics.median(resets) <= 2.0
        print(f"reset: {spread(resets)} s ({len(resets)} runs; {'meets' if met else 'MISSES'} target <= 2 s)")
        verdicts.append(met)

        vagabond("destroy", BOX)
        tests = []
        for _ in range(args.rounds):
            tests.append(timed([VAGABOND, "test", BOX], project)[0])
            print(f"test from the warm image: {tests[-1]:.1f}s", flush=True)
        met = statistics.median(tests) <= 15.0
        print(f"test: {spread(tests)} s ({len(tests)} runs; {'meets' if met else 'MISSES'} target <= 15 s)")
        verdicts.append(met)

        image = sorted(
            (Path(ENV.get("VAGABOND_CACHE") or Path.home() / ".cache/vagabond") / "warm").glob(
                f"vagabond-{BOX}-*/default.*.save"
            ),
            key=lambda p: p.stat().st_mtime,
        )[-1]
        ratio = image.stat().st_size / (1024 * 2**20)
        print(f"warm image: {image.stat().st_size / 2**20:.0f} MiB, {ratio:.2f}x the VM's 1024 MiB (target <= 0.5x)")
        verdicts.append(ratio <= 0.5)
        vagabond("up", BOX)  # the VM to export (the test runs left none)
        exported = project / "warm.tar"
        wrote, _ = timed([VAGABOND, "save", BOX, "--export", str(exported), "--no-secrets"], project)
        with tarfile.open(exported) as tar:
            memory = sum(m.size for m in tar.getmembers() if m.name.endswith(".save.gz"))
        print(
            f"exported warm image: {exported.stat().st_size / 2**20:.0f} MiB in {wrote:.1f} s; its memory image "
            f"{memory / 2**20:.0f} MiB, {memory / (1024 * 2**20):.2f}x the VM's memory",
            flush=True,
        )
        taken = []
        for _ in range(args.rounds):
            vagabond("destroy", BOX)
            vagabond("save", BOX, "--drop")
            took, _ = timed([VAGABOND, "up", BOX, "--warm-from", str(exported)], project)
            ran, result = timed([VAGABOND, "run", BOX, "--", "getenforce"], project)
            if result.stdout.strip() != "Enforcing":
                raise SystemExit(f"bench: getenforce said {result.stdout.strip()!r}")
            taken.append(took + ran)
            print(f"up --warm-from to Enforcing: {taken[-1]:.1f}s", flush=True)
        report("taken in from the file", taken, cold, 1.0, labels=("up --warm-from", "cold (boot+provision)"))
        write_figures(
            args.json,
            "warm",
            [
                {
                    "title": "No VM to getenforce: a warm image restored against a cold boot with provisioning",
                    "unit": "s",
                    "series": {"vagabond up --cold": cold, "vagabond up (warm image)": warm},
                },
                {"title": "vagabond reset", "unit": "s", "series": {"vagabond reset": resets}},
                {
                    "title": "No warm image here to getenforce: one taken in from its file against a cold boot",
                    "unit": "s",
                    "series": {"vagabond up --cold": cold, "vagabond up --warm-from FILE": taken},
                },
            ],
        )
    finally:
        process.run([VAGABOND, "destroy", BOX], cwd=project, env=ENV)
        process.run([VAGABOND, "save", BOX, "--drop"], cwd=project, env=ENV)
        for server in servers:
            server.terminate()
        shutil.rmtree(project, ignore_errors=True)
    return 0 if all(verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
