"""What the benchmarks share: the environment they run vagabond and Vagrant in, timing, spreads.

vagabond runs on the host as a user runs it; plain Vagrant and the servers guests reach run in the
VMs' network namespace when the host keeps them in one (scripts/sandbox.sh, started here when
there is no service manager), so the baseline talks to its VMs from where vagabond's programs do.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from vagabond import process, sandbox

ROOT = Path(__file__).resolve().parent.parent
VAGABOND = str(Path(sys.executable).with_name("vagabond"))
ENV = dict(
    os.environ,
    VAGRANT_CHECKPOINT_DISABLE="1",
    VAGRANT_DEFAULT_PROVIDER="libvirt",
    PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}",
)
CACHE = Path(os.environ.get("VAGABOND_CACHE") or Path.home() / ".cache" / "vagabond")


def ensure_sandbox() -> None:
    """Without a service manager, libvirtd belongs in a namespace of its own (the network rule)."""
    if os.geteuid() == 0 and not Path("/run/systemd/system").is_dir():
        process.check([ROOT / "scripts" / "sandbox.sh", "start"], timeout=300)
        ENV.setdefault("VAGABOND_NETNS", sandbox.configured() or "")


def timed(
    argv,
    cwd,
    *,
    vm_network: bool = False,
    timeout: float = 7200,
    stream: bool = False,
    env_extra: dict[str, str] | None = None,
) -> tuple[float, process.Result]:
    started = time.monotonic()
    sink = (lambda line: print(f"  | {line}", end="", flush=True)) if stream else False
    result = process.check(
        argv, cwd=cwd, env=ENV | (env_extra or {}), timeout=timeout, vm_network=vm_network, stream=sink
    )
    return time.monotonic() - started, result


def serve(directory: Path, port: int, *, for_guests: bool) -> subprocess.Popen:
    """A static HTTP server: for guests, inside their namespace on every address; otherwise on the
    host's loopback, where vagabond and `vagrant box add` read catalogs."""
    argv = [
        sys.executable,
        "-m",
        "http.server",
        "--bind",
        "0.0.0.0" if for_guests else "127.0.0.1",
        str(port),
        "--directory",
        str(directory),
    ]
    if for_guests:
        argv = sandbox.wrap(argv)
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
    time.sleep(1)
    if proc.poll() is not None:
        raise SystemExit(f"bench: could not serve {directory} on port {port}")
    return proc


def spread(values: list[float]) -> str:
    return f"min {min(values):.3g} / median {statistics.median(values):.3g} / max {max(values):.3g}"


def report(
    name: str,
    ours: list[float],
    theirs: list[float],
    target: float,
    *,
    lower_is_better: bool = True,
    labels: tuple[str, str] = ("vagabond", "baseline"),
) -> bool:
    """Ratio of the medians (first side / second side), each side's spread, and the per-round ratios."""
    ratio = statistics.median(ours) / statistics.median(theirs)
    ok = ratio <= target if lower_is_better else ratio >= target
    rounds = [a / b for a, b in zip(ours, theirs, strict=True)]
    width = max(len(label) for label in labels)
    print(
        f"{name}: ratio {ratio:.3f}x ({'meets' if ok else 'MISSES'} target "
        f"{'<=' if lower_is_better else '>='} {target}x)\n"
        f"  {labels[0]:<{width}}  s: {spread(ours)} ({len(ours)} runs)\n"
        f"  {labels[1]:<{width}}  s: {spread(theirs)} ({len(theirs)} runs)\n"
        f"  per-round ratios: {spread(rounds)}",
        flush=True,
    )
    return ok


MIRROR_PORT = 8321
SELINUX_BOX = "debian12-selinux"
SELINUX_PACKAGES = ["selinux-basics", "selinux-policy-default", "auditd"]


def selinux_project(prefix: str, name: str, catalog_port: int) -> tuple[Path, list[subprocess.Popen]]:
    """A project whose debian12-selinux gets its SELinux packages from a local mirror (guests reach
    it in their namespace) and names a prebuilt box ``name`` in a catalog served on the host's
    loopback; returns the project and the two servers."""
    process.check(
        [ROOT / "scripts" / "local-apt-repo.sh", CACHE / "apt-repo", "bookworm", *SELINUX_PACKAGES], timeout=1800
    )
    project = Path(tempfile.mkdtemp(prefix=prefix))
    (project / "boxes").mkdir()
    (project / "catalog").mkdir()
    shutil.copy(ROOT / "boxes" / "debian12.yaml", project / "boxes")
    mirror = [f"deb [trusted=yes] http://192.168.121.1:{MIRROR_PORT}/ ./"]
    (project / "boxes" / f"{SELINUX_BOX}.yaml").write_text(
        (ROOT / "boxes" / f"{SELINUX_BOX}.yaml").read_text()
        + f"vars: {json.dumps({'vagabond_apt_sources': mirror})}\n"
        + f"prebuilt:\n  name: {name}\n  catalog: http://127.0.0.1:{catalog_port}/metadata.json\n"
    )
    servers = [
        serve(CACHE / "apt-repo", MIRROR_PORT, for_guests=True),
        serve(project / "catalog", catalog_port, for_guests=False),
    ]
    return project, servers


def rounds(doc: str) -> int:
    """The command line every benchmark takes: --help shows its docstring, --rounds N."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="rounds per side (default: 3)")
    return parser.parse_args().rounds


def publish_prebuilt(
    project: Path, catalog_port: int, box: str = SELINUX_BOX, version: str = "1.0.0", workdir: Path | None = None
) -> dict:
    """Build the project's box into a prebuilt box (once, before the rounds; from the VM in workdir
    when given) and publish it to the project's catalog, as the nightly job does; what build said."""
    print(f"building and publishing the prebuilt box {box} {version} (once) ...", flush=True)
    from_vm = ["--workdir", workdir] if workdir else []
    argv = [VAGABOND, "build", box, *from_vm, "--out", project / "dist", "--version", version, "--json"]
    info = json.loads(process.check(argv, cwd=project, env=ENV, timeout=7200).stdout)
    catalog = ["--catalog", project / "catalog", "--base-url", f"http://127.0.0.1:{catalog_port}"]
    process.check([VAGABOND, "publish", info["path"], *catalog], cwd=project, env=ENV)
    return info


def alternate(rounds: int, sides: list, before=None) -> None:
    """Each side once per round, alone, in alternating order (first one side first, then the
    other): ``sides`` are (run, times, name) with run() returning seconds, appended to times."""
    for i in range(rounds):
        for run, times, name in sides if i % 2 == 0 else list(reversed(sides)):
            if before is not None:
                before()
            times.append(run())
            print(f"round {i + 1}: {name} {times[-1]:.1f}s", flush=True)


def write_figures(path: Path | None, bench: str, charts: list[dict]) -> None:
    """The run's figures as JSON for bench/chart.py (the documentation's charts): each chart a
    title, a unit and its series, label -> every measured value (not only the median)."""
    if path is None:
        return
    doc = {
        "bench": bench,
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
        "host": f"{os.cpu_count()} cores, {sandbox_driver()}",
        "charts": charts,
    }
    path.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"figures written to {path}", flush=True)


def sandbox_driver() -> str:
    """The libvirt driver this host gets (the figures mean little without it)."""
    from vagabond.host import detect

    return f"driver {detect.probe_and_decide(None).driver}"
