"""`vagabond ps`: the VMs of every recorded work directory, as libvirt has them now."""

from __future__ import annotations

import json
import time

from typer.testing import CliRunner

from vagabond.cli.app import app
from vagabond.host import ledger, libvirt
from vagabond.vm.workdir import Workdir


def make_workdir(root, name, prefix, box, machines):
    wd = Workdir.at(root / name)
    wd.path.mkdir(parents=True)
    (wd.path / "state.json").write_text(
        json.dumps({"prefix": prefix, "box": box, "driver": "qemu", "up_at": time.time() - 3700})
    )
    wd.ssh_config.write_text(
        "".join(f"Host {m}\n  HostName 192.168.121.{i + 10}\n  User vagrant\n" for i, m in enumerate(machines))
    )
    ledger.add_workdir(prefix, wd.path)
    return wd


def test_ps_lists_recorded_vms_only(tmp_path, monkeypatch):
    monkeypatch.setenv("VAGABOND_STATE", str(tmp_path / "state"))
    make_workdir(tmp_path, "a", "vagabond-web-1111-", "web", ["default"])
    make_workdir(tmp_path, "b", "vagabond-db-2222-", "db", ["primary", "replica"])
    make_workdir(tmp_path, "gone", "vagabond-old-3333-", "old", ["default"])  # no domains any more: not listed
    domains = {
        "vagabond-web-1111-default": "running",
        "vagabond-db-2222-primary": "running",
        "vagabond-db-2222-replica": "shut off",
        "someone-elses-vm": "running",
    }
    asked = []

    def states(prefix=""):
        asked.append(prefix)
        return {k: v for k, v in domains.items() if k.startswith(prefix)}

    monkeypatch.setattr(libvirt, "domains", states)
    result = CliRunner().invoke(app, ["ps", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [(r["box"], r["machine"], r["state"], r["address"]) for r in rows] == [
        ("web", "default", "running", "192.168.121.10"),
        ("db", "primary", "running", "192.168.121.10"),
        ("db", "replica", "shut off", "192.168.121.11"),
    ]
    assert all(3600 <= r["age_seconds"] < 3800 and r["driver"] == "qemu" for r in rows)
    assert [sorted(a) for a in asked] == [["vagabond-db-2222-", "vagabond-old-3333-", "vagabond-web-1111-"]], (
        "only ours"
    )
    table = CliRunner().invoke(app, ["ps"]).stdout
    assert "someone-elses-vm" not in table and "1h" in table and "replica" in table


def test_a_workdir_that_moved_on_keeps_its_vm_listed_without_claiming_it(tmp_path, monkeypatch):
    monkeypatch.setenv("VAGABOND_STATE", str(tmp_path / "state"))
    wd = make_workdir(tmp_path, "a", "vagabond-web-1111-", "web", ["default"])
    (wd.path / "state.json").write_text(json.dumps({"prefix": "vagabond-web-9999-", "box": "web2"}))
    monkeypatch.setattr(libvirt, "domains", lambda prefix="": {"vagabond-web-1111-default": "running"})
    [row] = json.loads(CliRunner().invoke(app, ["ps", "--json"]).stdout)
    assert (row["box"], row["address"], row["driver"]) == ("?", None, None)
    assert "no VMs" in CliRunner().invoke(app, ["ps"], env={"VAGABOND_STATE": str(tmp_path / "empty")}).stderr
