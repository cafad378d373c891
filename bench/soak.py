"""A long run of VMs loses nothing: N cycles in a row (as root; it starts the sandbox when the host
has no service manager):

  .venv/bin/python bench/soak.py [--cycles 20] [--seed S] [--json PATH]

Each cycle brings a VM up (the base box debian12 and the prebuilt debian12-selinux, built and
published to a local catalog once, in turn), runs a command in it, checks that a second
provisioning run changes nothing, and destroys it. Every fifth cycle interrupts its `up` at a
random moment (SIGINT or SIGTERM, as a cancelled CI job sends them) and expects it to clean up
after itself; every fifth, starting with the third, runs two VMs of one box side by side.

After each cycle it looks for what was left in libvirt: domains and volumes of the cycle's work
directories, and vagrant-libvirt's network when the soak made it and no domain uses it. For every
failure it prints the phase, the error and the end of the guest's serial console.
Target: 0 infrastructure failures and 0 leaks in 20 cycles.
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from common import ENV, VAGABOND, ensure_sandbox, publish_prebuilt, selinux_project

from vagabond.host import libvirt
from vagabond.vm import workdir

CATALOG_PORT = 8327
PREBUILT = "vagabond-soak/debian12-selinux"


def vagabond(project: Path, *args: str, timeout: float = 3600) -> subprocess.CompletedProcess:
    return subprocess.run([VAGABOND, *args], cwd=project, env=ENV, capture_output=True, text=True, timeout=timeout)


class Soak:
    def __init__(self, project: Path, rng: random.Random) -> None:
        self.project = project
        self.rng = rng
        self.failures: list[dict] = []
        self.leaks: list[dict] = []
        self.phases: Counter = Counter()
        self.network_before = libvirt.MGMT_NETWORK in libvirt.networks()

    def step(self, cycle: int, phase: str, box: str, wd: Path, *args: str) -> bool:
        self.phases[phase] += 1
        started = time.monotonic()
        result = vagabond(self.project, *args)
        took = time.monotonic() - started
        print(f"  cycle {cycle} {phase} {box}: exit {result.returncode} in {took:.0f}s", flush=True)
        if result.returncode == 0:
            return True
        serial = sorted((wd / "logs").glob("*-serial.log")) + sorted(
            libvirt.LOG_DIR.glob(f"{workdir.domain_prefix(box, wd)}*-serial.log")
        )
        console = serial[-1].read_text(errors="replace")[-1500:] if serial else "(no serial console kept)"
        error = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
        self.failures.append(
            {
                "cycle": cycle,
                "phase": phase,
                "box": box,
                "exit": result.returncode,
                "error": error[-1] if error else result.stderr[-500:],
                "console": console,
            }
        )
        print(f"  FAILED {phase}: {self.failures[-1]['error']}\n  serial console (end):\n{console}", flush=True)
        return False

    def leaked(self, cycle: int, boxes_and_workdirs: list[tuple[str, Path]]) -> None:
        found = []
        for box, wd in boxes_and_workdirs:
            prefix = workdir.domain_prefix(box, wd)
            found += [f"domain {d}" for d in libvirt.domains(prefix)] + [f"volume {v}" for v in libvirt.volumes(prefix)]
        net = libvirt.MGMT_NETWORK
        if not self.network_before and net in libvirt.networks() and not libvirt.network_in_use(net):
            found.append(f"network {net} (made by the soak, used by no domain)")
        if found:
            self.leaks.append({"cycle": cycle, "left": found})
            print(f"  LEAKED after cycle {cycle}: {', '.join(found)}", flush=True)

    def ordinary(self, cycle: int, box: str) -> None:
        wd = self.project / ".vagabond" / f"soak-{cycle}"
        args = ["--workdir", str(wd)]
        if self.step(cycle, "up", box, wd, "up", box, *args):
            self.step(cycle, "run", box, wd, "run", box, *args, "--", "true")
            self.step(cycle, "check-idempotence", box, wd, "provision", box, *args, "--check-idempotence")
        self.step(cycle, "destroy", box, wd, "destroy", box, *args)
        self.leaked(cycle, [(box, wd)])

    # Where in `up` an interrupt may land, by the line that says the phase began.
    PHASES = {
        "debian12": ["driver ", "vagrant up (", "Waiting for domain to get an IP address", "Machine booted and ready!"],
        "debian12-selinux": [
            "driver ",
            "download ",
            "vagrant up (",
            "Waiting for domain to get an IP address",
            "Machine booted and ready!",
            "selinux on default",
        ],
    }

    def interrupted(self, cycle: int, box: str) -> None:
        """up, stopped in a phase chosen at random (a moment after the line that begins it): it must
        end (130) within GitHub's 10 s and leave nothing."""
        wd = self.project / ".vagabond" / f"soak-{cycle}"
        sig = self.rng.choice([signal.SIGINT, signal.SIGTERM])
        phase = self.rng.choice(self.PHASES[box])
        after = self.rng.uniform(0, 3)
        self.phases["interrupted up"] += 1
        proc = subprocess.Popen(
            [VAGABOND, "up", box, "--workdir", str(wd)],
            cwd=self.project,
            env=ENV,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        seen = []
        for line in proc.stderr:
            seen.append(line)
            if phase in line:
                time.sleep(after)
                break
        if proc.poll() is None:
            proc.send_signal(sig)
            stopped = time.monotonic()
            try:
                _, err = proc.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                _, err = proc.communicate()
                self.failures.append(
                    {
                        "cycle": cycle,
                        "phase": "interrupted up",
                        "box": box,
                        "exit": None,
                        "error": f"{sig.name} in {phase!r}: still running 10 s later",
                        "console": "",
                    }
                )
            else:
                took = time.monotonic() - stopped
                print(
                    f"  cycle {cycle} up {box}: {sig.name} {after:.1f}s into {phase!r}, exit {proc.returncode} "
                    f"{took:.1f}s later",
                    flush=True,
                )
                self.phases[f"interrupted: {phase.strip()}"] += 1
                if proc.returncode != 130:
                    self.failures.append(
                        {
                            "cycle": cycle,
                            "phase": "interrupted up",
                            "box": box,
                            "exit": proc.returncode,
                            "error": err[-500:],
                            "console": "",
                        }
                    )
        else:
            proc.wait()
            print(f"  cycle {cycle} up {box}: finished before the phase {phase!r} (exit {proc.returncode})", flush=True)
        self.step(
            cycle, "destroy", box, wd, "destroy", box, "--workdir", str(wd)
        )  # a finished up leaves a VM to destroy
        self.leaked(cycle, [(box, wd)])

    def side_by_side(self, cycle: int, box: str) -> None:
        wds = [self.project / ".vagabond" / f"soak-{cycle}-{side}" for side in "ab"]
        self.phases["up side by side"] += 2
        procs = [
            subprocess.Popen(
                [VAGABOND, "up", box, "--workdir", str(wd)],
                cwd=self.project,
                env=ENV,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for wd in wds
        ]
        for wd, proc in zip(wds, procs, strict=True):
            _, err = proc.communicate(timeout=3600)
            print(f"  cycle {cycle} up {box} ({wd.name}): exit {proc.returncode}", flush=True)
            if proc.returncode != 0:
                self.failures.append(
                    {
                        "cycle": cycle,
                        "phase": "up side by side",
                        "box": box,
                        "exit": proc.returncode,
                        "error": err[-500:],
                        "console": "",
                    }
                )
            else:
                self.step(cycle, "run", box, wd, "run", box, "--workdir", str(wd), "--", "true")
        for wd in wds:
            self.step(cycle, "destroy", box, wd, "destroy", box, "--workdir", str(wd))
        self.leaked(cycle, [(box, wd) for wd in wds])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cycles", type=int, default=20)
    parser.add_argument("--seed", type=int, default=None, help="for the random interrupts (default: the clock)")
    parser.add_argument("--json", type=Path, default=None, help="write the result here too")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else int(time.time())
    ensure_sandbox()
    project, servers = selinux_project("vagabond-soak-", PREBUILT, CATALOG_PORT)
    started = time.monotonic()
    try:
        publish_prebuilt(project, CATALOG_PORT)
        soak = Soak(project, random.Random(seed))
        for cycle in range(args.cycles):
            box = "debian12" if cycle % 2 == 0 else "debian12-selinux"
            print(f"cycle {cycle} ({box})", flush=True)
            if cycle % 5 == 4:
                soak.interrupted(cycle, box)
            elif cycle % 5 == 2:
                soak.side_by_side(cycle, "debian12")
            else:
                soak.ordinary(cycle, box)
    finally:
        for server in servers:
            server.terminate()
    infra = list(soak.failures)
    print(
        f"\nsoak: {args.cycles} cycles in {(time.monotonic() - started) / 60:.0f} min (seed {seed}): "
        f"{len(infra)} failures, {len(soak.leaks)} cycles with leaks",
        flush=True,
    )
    print("  phases run: " + ", ".join(f"{name} {n}" for name, n in sorted(soak.phases.items())))
    for phase, n in sorted(Counter(f["phase"] for f in infra).items()):
        print(f"  failed {phase}: {n}")
    result = {
        "cycles": args.cycles,
        "seed": seed,
        "phases": dict(soak.phases),
        "failures": soak.failures,
        "leaks": soak.leaks,
        "minutes": round((time.monotonic() - started) / 60, 1),
    }
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0 if not infra and not soak.leaks else 1


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.exit(main())
