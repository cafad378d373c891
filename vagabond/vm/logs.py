"""`vagabond logs`: everything a person needs when a run failed, in one directory.

Host side: the serial console and qemu logs, the rendered Vagrantfile, vagrant's and Ansible's
output, vagabond's state. Guest side, when the guest still answers over SSH: the journal of the
current boot, SELinux AVC denials and dmesg. Each item is collected on its own; one that cannot be
had is listed in summary.json with the reason, and the rest still arrives.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from vagabond import process, timeouts, ui
from vagabond.errors import VagabondError
from vagabond.spec.schema import Box
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
    target = out / box.name
    target.mkdir(parents=True, exist_ok=True)
    items: list[Item] = []

    def host_file(src: Path, name: str) -> None:
        if not src.is_file():
            items.append(Item(name, str(src), False, "not found"))
            return
        try:
            shutil.copyfile(src, target / name)
            items.append(Item(name, str(src), True))
        except PermissionError:
            # libvirt's log directory is root's: ask sudo (passwordless on CI runners), never prompt.
            result = process.run(["sudo", "-n", "cat", str(src)], timeout=timeouts.TOOL)
            if result.ok:
                (target / name).write_text(result.stdout)
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
    (target / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
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
        (target / filename).write_text(
            result.stdout + (f"\n[stderr]\n{result.stderr}" if result.stderr.strip() else "")
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
