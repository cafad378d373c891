"""`vagabond prepare`: make a fresh CI runner (or any host) ready for VMs, idempotently.

Each step looks first and acts only when needed, and says what it did:
- swap: a VM killed by the OOM killer takes the whole test run with it, so when RAM (plus swap) is
  short of what the boxes need, a swap file makes up the difference;
- /dev/kvm: when the hardware can run KVM but the device is not open to everyone (GitHub's x64
  runners), a udev rule opens it, and the driver probe runs again;
- libvirt: started when no service manager did it, with the storage pool 'default';
- Docker's firewall: Docker sets the FORWARD policy to DROP; guests behind libvirt's bridges need
  the DOCKER-USER chain to let their traffic through.
"""

from __future__ import annotations

import grp
import os
import pwd
import re
import shlex
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from vagabond import files, github, process, timeouts, ui
from vagabond.definition.schema import Box
from vagabond.errors import PrepareError, UsageError
from vagabond.host import detect, doctor, ledger, libvirt

DEFAULT_SWAP_FILE = Path("/var/lib/vagabond/swapfile")
HOST_HEADROOM_MIB = doctor.HOST_OVERHEAD_MIB
UDEV_RULE = Path("/etc/udev/rules.d/99-vagabond-kvm.rules")
# Docker's FORWARD policy drops what libvirt's NAT would pass. prepare opens DOCKER-USER for the
# guests of vagabond's network only (vagrant-libvirt's management subnet), out through the host's
# default route only (not into Docker's own networks, nor other libvirt networks, which stay as
# their owners set them), and only replies back in. Each rule carries a comment: --undo finds its own.
COMMENT = ["-m", "comment", "--comment", "vagabond"]
# What earlier vagabonds added (every libvirt bridge, anywhere): removed when found.
LEGACY_RULES = (
    ["-i", "virbr+", "-j", "ACCEPT"],
    ["-o", "virbr+", "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT"],
)


def docker_user_rules(uplink: str) -> list[list[str]]:
    subnet = libvirt.MGMT_SUBNET
    return [
        ["-s", subnet, "-i", "virbr+", "-o", uplink, *COMMENT, "-j", "ACCEPT"],
        ["-d", subnet, "-i", uplink, "-o", "virbr+", "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", *COMMENT]
        + ["-j", "ACCEPT"],
    ]


def default_uplink() -> str | None:
    """The interface of the host's default route (where guests' traffic leaves), or None."""
    route = process.run(["ip", "-o", "route", "show", "default"], timeout=timeouts.PROBE)
    match = re.search(r"\bdev (\S+)", route.stdout) if route.ok else None
    return match.group(1) if match else None


UDEV_TEXT = 'KERNEL=="kvm", GROUP="kvm", MODE="0666", OPTIONS+="static_node=kvm"\n'


@dataclass
class Action:
    step: str
    changed: bool
    detail: str


def parse_size(text: str) -> int:
    """'4G', '512M', '2048' (MiB) -> MiB."""
    match = re.fullmatch(r"\s*(\d+)\s*([MmGg]i?[Bb]?)?\s*", text)
    if not match:
        raise UsageError(
            f"swap size {text!r} is not a size", hint="use e.g. 4G or 512M (0 removes vagabond's swap file)"
        )
    number, unit = int(match[1]), (match[2] or "M")[0].upper()
    return number * 1024 if unit == "G" else number


def needed_mib(boxes: list[Box]) -> int:
    """What the boxes' VMs need at once (every machine of the biggest box), plus the host's own share."""
    return max((b.memory_mib() for b in boxes), default=0) + HOST_HEADROOM_MIB


def active_swaps(path: Path = Path("/proc/swaps")) -> dict[str, int]:
    """Active swap areas: file -> size in MiB."""
    swaps = {}
    for line in path.read_text().splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 3:
            swaps[parts[0].replace("\\040", " ")] = int(parts[2]) // 1024
    return swaps


def _check_ours(swap_file: Path) -> None:
    """Only a swap file vagabond made may be replaced or removed: --swap-file is a path from the
    command line, and the steps below swapoff, unlink and overwrite it."""
    if (swap_file.exists() or swap_file.is_symlink()) and str(swap_file.absolute()) not in ledger.read()["swapfiles"]:
        raise UsageError(
            f"{swap_file} exists and is not a swap file vagabond made: it is left as it is",
            hint="choose another --swap-file",
        )


def ensure_swap(boxes: list[Box], size: str | None, swap_file: Path) -> Action:
    swap_file = swap_file.absolute()
    _check_ours(swap_file)
    swaps = active_swaps()
    ours = swaps.get(str(swap_file))
    if size is not None and parse_size(size) == 0:
        if ours is None:
            return Action("swap", False, f"no swap file at {swap_file}")
        process.check(["swapoff", str(swap_file)], timeout=timeouts.SWAP)
        swap_file.unlink(missing_ok=True)
        ledger.forget(swapfiles=[str(swap_file)])
        return Action("swap", True, f"removed {swap_file} ({ours} MiB)")
    mem = detect.meminfo()
    if size is not None:
        want = parse_size(size)
        why = f"--swap {size}"
    else:
        need = needed_mib(boxes)
        have = mem.get("MemAvailable", 0) + mem.get("SwapFree", 0)
        if have >= need:
            return Action("swap", False, f"enough memory: {have} MiB available (RAM + swap), boxes need {need} MiB")
        want = -(-(need - have) // 1024) * 1024  # whole GiB
        why = f"boxes need {need} MiB, {have} MiB available"
    if ours is not None and ours >= want - 1:  # the swap header takes a page
        return Action("swap", False, f"{swap_file} already active ({ours} MiB)")
    if ours is not None:
        process.check(["swapoff", str(swap_file)], timeout=timeouts.SWAP)
    swap_file.parent.mkdir(parents=True, exist_ok=True)
    swap_file.unlink(missing_ok=True)
    free = shutil.disk_usage(swap_file.parent).free // 2**20
    if free < want + 1024:
        raise PrepareError(
            f"not enough disk for a {want} MiB swap file in {swap_file.parent} ({free} MiB free)",
            hint="pass a smaller --swap or another --swap-file",
        )
    ledger.add_swapfile(swap_file)  # recorded before it exists: an interrupted run leaves nothing unowned
    # fallocate is instant; file systems that cannot swap on preallocated files get a written one.
    made = process.run(["fallocate", "-l", f"{want}M", str(swap_file)], timeout=timeouts.SWAP)
    if not made.ok:
        process.check(
            ["dd", "if=/dev/zero", f"of={swap_file}", "bs=1M", f"count={want}", "status=none"],
            timeout=timeouts.SWAP_WRITE,
        )
    os.chmod(swap_file, 0o600)
    process.check(["mkswap", str(swap_file)], timeout=timeouts.SWAP)
    process.check(
        ["swapon", str(swap_file)], timeout=timeouts.SWAP, hint="this host may not allow swap files (some containers)"
    )
    return Action("swap", True, f"created and enabled {swap_file} ({want} MiB; {why})")


# The module a CPU flag asks for: GitHub's x64 runners expose vmx or svm, and the image may not
# have loaded the module yet.
KVM_MODULE = {"vmx": "kvm_intel", "svm": "kvm_amd"}
# What software emulation costs, in the words a job summary gives it (timeouts.NON_KVM_COEF scales waits).
EMULATION_COST = "VMs run under software emulation (qemu driver), 5-10x slower than under KVM"


def _load_kvm_module(facts: detect.HostFacts) -> str:
    """modprobe kvm_intel or kvm_amd when the CPU has the flag and neither is loaded; what was done."""
    flag = next((f for f in ("vmx", "svm") if f in facts.cpu_flags), None)
    if flag is None or facts.modules & detect.HW_MODULES or not shutil.which("modprobe"):
        return ""
    result = process.run(["modprobe", KVM_MODULE[flag]], timeout=timeouts.TOOL)
    return (
        f"loaded {KVM_MODULE[flag]}"
        if result.ok
        else f"modprobe {KVM_MODULE[flag]} failed: {result.stderr.strip()[-200:]}"
    )


def ensure_kvm_access(device: Path = Path("/dev/kvm")) -> Action:
    action = _kvm_access(device)
    if "driver now kvm" not in action.detail and not action.detail.endswith("driver kvm"):
        # A silent 5-10x is the worst outcome on a CI runner: say it where the job's reader looks.
        ui.warning(f"{EMULATION_COST}: {action.detail}", title="vagabond prepare: no KVM")
        github.summary_line(f"⚠️ No KVM on this runner: {EMULATION_COST}. {action.detail}")
    return action


def _kvm_access(device: Path) -> Action:
    facts = detect.probe_host(smoke="never")
    loaded = _load_kvm_module(facts)
    if loaded:
        facts = detect.probe_host(smoke="never")
    done = f"{loaded}; " if loaded else ""
    hardware = bool(facts.cpu_flags & {"vmx", "svm"}) and bool(facts.modules & detect.HW_MODULES)
    if facts.kvm_device == "missing":
        return Action("kvm", bool(loaded), f"{done}no /dev/kvm: VMs run under software emulation (qemu driver)")
    if not hardware:
        return Action(
            "kvm",
            bool(loaded),
            f"{done}KVM cannot work on this host ({detect.probe_and_decide(None).reason}): qemu driver",
        )
    mode = device.stat().st_mode & 0o777
    if mode & 0o006 == 0o006 and facts.kvm_device == "ok":
        return Action(
            "kvm",
            bool(loaded),
            f"{done}{device} is usable (mode {mode:o}); driver {detect.probe_and_decide(None).driver}",
        )
    files.write_text(UDEV_RULE, UDEV_TEXT)
    process.check(["udevadm", "control", "--reload-rules"], timeout=timeouts.TOOL)
    process.check(["udevadm", "trigger", "--name-match=kvm"], timeout=timeouts.TOOL)
    process.run(["udevadm", "settle", "--timeout=10"], timeout=timeouts.TOOL)
    decision = detect.decide_driver(detect.probe_host(smoke="auto", refresh=True))
    return Action(
        "kvm",
        True,
        f"{done}wrote {UDEV_RULE} and re-triggered /dev/kvm; driver now {decision.driver}: {decision.reason}",
    )


def _alive(daemon: str) -> bool:
    """A running process of that name; a dead one its parent has not reaped yet (state Z, which
    pgrep still lists) is not one."""
    found = process.run(["pgrep", "-x", daemon], timeout=timeouts.PROBE)
    for pid in found.stdout.split() if found.ok else []:
        try:
            state = (PROC / pid / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state != "Z":
            return True
    return False


PROC = Path("/proc")


def ensure_libvirt() -> Action:
    if libvirt.answers():
        started = ""
    elif Path("/run/systemd/system").is_dir():
        process.check(["systemctl", "start", "libvirtd"], timeout=timeouts.SERVICE)
        started = "started libvirtd (systemctl)"
    else:
        for daemon in ("virtlogd", "libvirtd"):
            if not _alive(daemon):
                process.check(
                    [daemon, "-d"], timeout=timeouts.SERVICE, vm_network=True
                )  # guests' networks live where libvirtd does
        started = "started virtlogd and libvirtd (no service manager)"
    if started:
        deadline = time.monotonic() + 30
        while not libvirt.answers():
            if time.monotonic() > deadline:
                raise PrepareError(
                    "libvirtd was started but does not answer", hint="see its log: journalctl -u libvirtd"
                )
            time.sleep(0.3)
    done = [started] if started else []
    info = libvirt.run("pool-info", libvirt.POOL)
    if not info.ok:
        files.make_dirs(libvirt.POOL_DIR, mode=0o711)
        libvirt.check("pool-define-as", libvirt.POOL, "dir", "--target", str(libvirt.POOL_DIR))
        libvirt.run("pool-autostart", libvirt.POOL)
        done.append(f"defined storage pool {libvirt.POOL} ({libvirt.POOL_DIR})")
        info = libvirt.run("pool-info", libvirt.POOL)
    if not re.search(r"State:\s+running", info.stdout):
        libvirt.run("pool-build", libvirt.POOL)
        libvirt.check("pool-start", libvirt.POOL)
        done.append(f"started storage pool {libvirt.POOL}")
    if done:
        return Action("libvirt", True, "; ".join(done))
    return Action("libvirt", False, f"libvirtd answers; storage pool {libvirt.POOL} is running")


def ensure_docker_forwarding() -> Action:
    if not shutil.which("iptables"):
        return Action("firewall", False, "no iptables")
    if not process.run(["iptables", "-w", "-S", "DOCKER-USER"], timeout=timeouts.PROBE).ok:
        return Action("firewall", False, "no Docker firewall chain (DOCKER-USER): nothing to open")
    removed = _remove_rules(LEGACY_RULES)
    uplink = default_uplink()
    if uplink is None:
        return Action("firewall", bool(removed), "no default route: no way out to open for the guests")
    added = []
    for rule in reversed(docker_user_rules(uplink)):  # inserted at the top, in this order
        if not process.run(["iptables", "-w", "-C", "DOCKER-USER", *rule], timeout=timeouts.PROBE).ok:
            process.check(["iptables", "-w", "-I", "DOCKER-USER", *rule], timeout=timeouts.PROBE)
            added.append(" ".join(rule))
    what = f"DOCKER-USER lets vagabond's guests ({libvirt.MGMT_SUBNET}) out through {uplink} and their replies back"
    if added or removed:
        return Action("firewall", True, f"{what} ({len(added)} rules added, {len(removed)} earlier ones removed)")
    return Action("firewall", False, what + " already")


def _remove_rules(rules) -> list[str]:
    """Delete each rule DOCKER-USER holds (every copy of it); what was removed."""
    removed = []
    for rule in rules:
        while process.run(["iptables", "-w", "-C", "DOCKER-USER", *rule], timeout=timeouts.PROBE).ok:
            process.check(["iptables", "-w", "-D", "DOCKER-USER", *rule], timeout=timeouts.PROBE)
            removed.append(" ".join(rule))
    return removed


def undo_docker_forwarding() -> Action:
    """Every rule of vagabond's in DOCKER-USER (its comment, or an earlier vagabond's rules) removed."""
    if (
        not shutil.which("iptables")
        or not process.run(["iptables", "-w", "-S", "DOCKER-USER"], timeout=timeouts.PROBE).ok
    ):
        return Action("firewall", False, "no Docker firewall chain (DOCKER-USER): nothing to remove")
    listed = process.check(["iptables", "-w", "-S", "DOCKER-USER"], timeout=timeouts.PROBE).stdout.splitlines()
    ours = [
        shlex.split(line)[2:] for line in listed if line.startswith("-A DOCKER-USER ") and "--comment vagabond" in line
    ]
    removed = _remove_rules([*ours, *LEGACY_RULES])
    return Action("firewall", bool(removed), f"removed {len(removed)} rules of vagabond's from DOCKER-USER")


def undo_kvm_access() -> Action:
    if not UDEV_RULE.is_file() or UDEV_RULE.read_text() != UDEV_TEXT:
        return Action("kvm", False, f"no udev rule of vagabond's ({UDEV_RULE})")
    files.remove(UDEV_RULE)
    process.run(["udevadm", "control", "--reload-rules"], timeout=timeouts.TOOL)
    process.run(["udevadm", "trigger", "--name-match=kvm"], timeout=timeouts.TOOL)
    return Action("kvm", True, f"removed {UDEV_RULE}; /dev/kvm gets the distribution's permissions back")


def undo_user_access(user: str) -> Action:
    done = []
    for path, perms in ((LIBVIRT_SOCKET, "rw"), (libvirt.LOG_DIR, "rwx")):
        acl = process.run(["getfacl", "--omit-header", "--absolute-names", str(path)], timeout=timeouts.TOOL)
        if acl.ok and f"user:{user}:{perms}" in acl.stdout:
            process.check(["setfacl", "--remove", f"u:{user}", str(path)], timeout=timeouts.TOOL)
            done.append(f"ACL on {path} removed")
    # The groups stay: a user's groups may be theirs for other reasons; say so.
    detail = "; ".join(done) or "no ACL of vagabond's"
    return Action("user", bool(done), f"{user}: {detail} (groups libvirt and kvm kept: remove with gpasswd -d)")


def undo(*, swap_file: Path = DEFAULT_SWAP_FILE, user: str | None = None) -> list[Action]:
    """What prepare added, removed: its firewall rules, its udev rule, its swap file, a user's ACLs."""
    if os.geteuid() != 0:
        raise UsageError(
            "vagabond prepare --undo changes the host", hint="run it as root: sudo vagabond prepare --undo"
        )
    actions = [undo_docker_forwarding(), undo_kvm_access(), ensure_swap([], "0", swap_file)]
    return actions + ([undo_user_access(user)] if user else [])


LIBVIRT_SOCKET = Path("/run/libvirt/libvirt-sock")


def ensure_user_access(user: str) -> Action:
    """Let USER run VMs without root (a CI job's own user: its tests and its files stay its own):
    a member of the groups libvirt and kvm for the sessions to come, and, for the job's session,
    which started before the groups changed, an ACL on libvirt's socket; and one on libvirt's log
    directory, where its VMs' serial logs go."""
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise UsageError(f"--user {user!r}: no such user") from None
    if entry.pw_uid == 0:
        return Action("user", False, "root needs no access granted")
    done = []
    for group in ("libvirt", "kvm"):
        try:
            members = grp.getgrnam(group).gr_mem
        except KeyError:
            continue
        if user not in members:
            process.check(["usermod", "--append", "--groups", group, user], timeout=timeouts.TOOL)
            done.append(f"added to group {group}")
    if LIBVIRT_SOCKET.exists():
        acl = process.run(["getfacl", "--omit-header", "--absolute-names", str(LIBVIRT_SOCKET)], timeout=timeouts.TOOL)
        if f"user:{user}:rw" not in acl.stdout:
            process.check(
                ["setfacl", "--modify", f"u:{user}:rw", str(LIBVIRT_SOCKET)],
                timeout=timeouts.TOOL,
                hint="apt-get install acl",
            )
            done.append(f"may use {LIBVIRT_SOCKET} now")
    # vagrant-libvirt creates each VM's serial log (the Vagrantfile puts it beside libvirt's own
    # logs, where a failed boot's console is kept) as the user who runs Vagrant: that user must be
    # able to create files there. Without this, `vagrant up` by a non-root user stops at "Error
    # creating path for serial port output log" (found by the runner twin, which runs up as runner).
    if libvirt.LOG_DIR.is_dir():
        acl = process.run(["getfacl", "--omit-header", "--absolute-names", str(libvirt.LOG_DIR)], timeout=timeouts.TOOL)
        if f"user:{user}:rwx" not in acl.stdout:
            process.check(
                ["setfacl", "--modify", f"u:{user}:rwx", str(libvirt.LOG_DIR)],
                timeout=timeouts.TOOL,
                hint="apt-get install acl",
            )
            done.append(f"may write VMs' serial logs in {libvirt.LOG_DIR} now")
    if done:
        return Action("user", True, f"{user}: {'; '.join(done)}")
    return Action("user", False, f"{user} may already use libvirt and /dev/kvm")


def prepare(
    boxes: list[Box], *, swap: str | None = None, swap_file: Path = DEFAULT_SWAP_FILE, user: str | None = None
) -> list[Action]:
    if os.geteuid() != 0:
        raise UsageError(
            "vagabond prepare changes the host (swap, udev, daemons, firewall)",
            hint="run it as root: sudo vagabond prepare",
        )
    actions = [ensure_swap(boxes, swap, swap_file), ensure_kvm_access(), ensure_libvirt(), ensure_docker_forwarding()]
    return actions + ([ensure_user_access(user)] if user else [])


def as_dicts(actions: list[Action]) -> list[dict]:
    return [asdict(a) for a in actions]
