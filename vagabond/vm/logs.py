"""`vagabond logs`: everything a person needs when a run failed, in one directory.

Host side: the serial console and qemu logs, the rendered Vagrantfile, vagrant's and Ansible's
output, vagabond's state. Guest side, when the guest still answers over SSH: the journal of the
current boot, SELinux AVC denials and dmesg. Each item is collected on its own; one that cannot be
had is listed in summary.json with the reason, and the rest still arrives.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from vagabond import files, process, timeouts, ui
from vagabond.definition.schema import Box
from vagabond.errors import UnsafePath, VagabondError
from vagabond.vm import remote
from vagabond.vm.workdir import Workdir

# AVC denials: ausearch reads the audit log (auditd); denials from before auditd
# started, or on a guest without it, are in the kernel log. Without a terminal (as over ssh here)
# ausearch reads its standard input instead of the log unless told --input-logs. It exits 1 when
# nothing matches, which is an answer, not a failure.
AVC_SCRIPT = r"""
cd /
if command -v ausearch >/dev/null 2>&1 && [ -s /var/log/audit/audit.log ]; then
  echo "== audit log: ausearch -m AVC,USER_AVC,SELINUX_ERR (/var/log/audit)"
  ausearch --input-logs -m AVC,USER_AVC,SELINUX_ERR -i </dev/null 2>&1; rc=$?; [ $rc -le 1 ] || exit $rc
fi
echo "== kernel log: denials before auditd started, or without auditd"
journalctl -k -b --no-pager 2>/dev/null | grep -E 'avc: +denied' || dmesg | grep -E 'avc: +denied' || true
"""

GUEST_ITEMS = {
    "journal.log": ["journalctl", "-b", "--no-pager", "-o", "short-precise"],
    "avc-denials.log": ["sh", "-c", AVC_SCRIPT],
    "dmesg.log": ["dmesg", "-T"],
}


@dataclass
class Item:
    name: str
    source: str
    ok: bool
    detail: str = ""


def collect(box: Box, wd: Workdir, out: Path) -> dict:
    """Write what there is to OUT/<box>/ and return the summary (also written as summary.json)."""
    # Every file goes in through files: a link planted in the logs directory (or the directory
    # itself swapped for one) is refused, never written through; one planted where a log was
    # expected is not read (its target could be any file root may read). Logs are the guest's
    # words: 0600, the collector's own.
    target = files.make_dirs(out / box.name, root=out.parent if out.parent != out else None, mode=0o700)
    items: list[Item] = []

    def host_file(src: Path, name: str) -> None:
        if src.is_symlink():
            items.append(Item(name, str(src), False, "a symbolic link, not a log vagabond made: not read"))
            return
        if not src.is_file():
            items.append(Item(name, str(src), False, "not found"))
            return
        try:
            files.copy_regular(src, target / name, mode=0o600)
            items.append(Item(name, str(src), True))
        except UnsafePath as exc:
            items.append(Item(name, str(src), False, exc.message))
        except PermissionError:
            # libvirt's log directory is root's: ask sudo (passwordless on CI runners), never prompt.
            # cat is given the path as a file it may not follow: sudo's root reads it only if it is one.
            result = process.run(
                ["sudo", "-n", "sh", "-c", '[ -f "$1" ] && [ ! -L "$1" ] && exec cat -- "$1"', "sh", str(src)],
                timeout=timeouts.TOOL,
            )
            if result.ok:
                files.write_text(target / name, result.stdout, mode=0o600)
                items.append(Item(name, str(src), True, "read with sudo"))
            else:
                items.append(Item(name, str(src), False, "permission denied (and sudo -n failed)"))

    host_file(wd.vagrantfile, "Vagrantfile")
    host_file(wd.state_file, wd.state_file.name)
    for log in ("vagrant.log", "ansible.log"):
        host_file(wd.logs / log, log)
    for machine in box.machine_names():
        for src, kind in ((wd.serial_log(machine), "serial.log"), (wd.qemu_log(machine), "qemu.log")):
            # A failed up removes the domain (and libvirt's copies); up kept them in logs/.
            saved = wd.saved_log(src)
            host_file(src if src.is_file() or not saved.is_file() else saved, f"{machine}-{kind}")
        items += _guest(wd, machine, target)
    summary = {
        "box": box.name,
        "workdir": str(wd.path),
        "collected_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "out": str(target),
        "items": [item.__dict__ for item in items],
    }
    files.write_json(target / "summary.json", summary, mode=0o600)
    return summary


def _guest(wd: Workdir, machine: str, target: Path) -> list[Item]:
    items = []
    unreachable = ""  # once the guest does not answer, the other items are not tried
    for name, argv in GUEST_ITEMS.items():
        filename = f"{machine}-{name}"
        source = f"guest {machine}: {' '.join(argv[:2]) if argv[0] != 'sh' else 'ausearch/journalctl'}"
        if unreachable:
            items.append(Item(filename, source, False, unreachable))
            continue
        try:
            result = remote.run(wd, machine, ["sudo", "-n", *argv], stream=False, timeout=timeouts.GUEST_COMMAND)
        except VagabondError as exc:  # not up, no SSH config, or ssh timed out
            unreachable = str(exc)
            items.append(Item(filename, source, False, unreachable))
            continue
        if result.returncode == 255:  # ssh's own failure: the guest does not answer
            unreachable = f"guest unreachable: {result.stderr.strip()[-200:]}"
            items.append(Item(filename, source, False, unreachable))
            continue
        files.write_text(
            target / filename,
            result.stdout + (f"\n[stderr]\n{result.stderr}" if result.stderr.strip() else ""),
            mode=0o600,
        )
        ok = result.returncode == 0
        items.append(Item(filename, source, ok, "" if ok else f"exit {result.returncode}"))
    return items


def collect_on_failure(box: Box, wd: Workdir, out: Path) -> None:
    """Best effort: a failure to collect logs must not hide the failure that asked for them."""
    try:
        with ui.step(f"collect logs into {out}"):
            summary = collect(box, wd, out)
        missing = [i["name"] for i in summary["items"] if not i["ok"]]
        ui.info(
            f"logs of {box.name} in {summary['out']}" + (f" (not available: {', '.join(missing)})" if missing else "")
        )
    except (VagabondError, OSError) as exc:
        ui.info(f"collecting logs failed: {exc}")
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM while collecting: the cleanup after this must still run
        ui.info("collecting logs was interrupted")
