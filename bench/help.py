"""`vagabond --help` and `vagabond up --help` against the same help with every command's modules
imported first (what the CLI did before its commands imported their modules themselves), side by
side in one run, each process alone, alternating:

  .venv/bin/python bench/help.py [--rounds 20] [--json PATH]

Target: `vagabond --help` <= 0.25 s median on this host. Each line gives the spread (min / median /
max) of both sides and the ratio against the eager side.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import ENV, VAGABOND, report, spread, write_figures

TARGET = 0.25
# What the command modules use: imported up front, this is the old eager CLI.
EAGER = (
    "import sys; import vagabond.build, vagabond.vm.lifecycle, vagabond.vm.testrun, vagabond.vm.warm, "
    "vagabond.vm.render, vagabond.ci.workflow, vagabond.host.doctor, vagabond.host.prepare, "
    "vagabond.catalog.transaction, vagabond.bases.cloudimage, vagabond.bases.mmdebstrap, vagabond.vm.gc; "
    "from vagabond.entry import main; sys.argv = ['vagabond', *sys.argv[1:]]; main()"
)


def once(argv: list[str]) -> float:
    started = time.monotonic()
    subprocess.run(argv, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=20, help="runs per side (default: 20)")
    parser.add_argument("--json", type=Path, help="also write every figure here (for bench/chart.py)")
    args = parser.parse_args()
    ok, charts = True, []
    for words in (["--help"], ["up", "--help"]):
        ours: list[float] = []
        eager: list[float] = []
        once([VAGABOND, *words])  # a warm-up of each side: the page cache, not the figure
        once([sys.executable, "-c", EAGER, *words])
        for i in range(args.rounds):
            sides = [(ours, [VAGABOND, *words]), (eager, [sys.executable, "-c", EAGER, *words])]
            for times, argv in sides if i % 2 == 0 else reversed(sides):
                times.append(once(argv))
        name = "vagabond " + " ".join(words)
        report(name, ours, eager, 1.0, labels=("lazy (today)", "eager imports"))
        if words == ["--help"]:
            met = statistics.median(ours) <= TARGET
            ok = ok and met
            print(f"  target <= {TARGET} s median: {'meets' if met else 'MISSES'} ({spread(ours)} s)", flush=True)
        charts.append({"title": name, "unit": "s", "series": {"vagabond": ours, "eager imports": eager}})
    write_figures(args.json, "help", charts)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
