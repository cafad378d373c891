"""The mode playbooks' Red Hat branches, run by the real ansible-playbook at the process seam: no EL
guest is reachable here, so the commands a guest would run (getenforce, fips-mode-setup,
update-crypto-policies, and the kernel's FIPS flag) answer with recorded outputs of the real
commands, and the playbooks run in check mode (nothing on this host changes; the tasks that only
read still run). Facts say which distribution it is."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, stub_programs
from vagabond import process

pytestmark = pytest.mark.real

MODES = REPO / "playbooks" / "modes"

# Recorded on the real systems: each command's successive outputs (the last one repeats).
RECORDED = {
    "getenforce": {"el7-disabled": ["Disabled", "Permissive", "Enforcing"], "el-enforcing": ["Enforcing"]},
    "fips": {"off-then-on": ["0", "1"], "on": ["1"]},
    "update-crypto-policies": {"fips": ["FIPS"], "default": ["DEFAULT"]},
}

STUB = """#!/bin/sh
# Answers with its recorded outputs in turn, the last one again and again.
me=$(basename "$0")
n=$(/bin/cat "$STATE/$me.n" 2>/dev/null || echo 1); echo $((n + 1)) > "$STATE/$me.n"
sed -n "${n}p;\\$p" "$STATE/$me.out" | head -n1
echo "$me $*" >> "$STATE/calls"
"""

CAT = """#!/bin/sh
if [ "$1" = /proc/sys/crypto/fips_enabled ]; then exec fips-flag; fi
exec /bin/cat "$@"
"""


def recording_env() -> dict[str, str]:
    """ansible-playbook's environment for these tests: every task's result recorded as JSON."""
    return dict(
        os.environ,
        ANSIBLE_STDOUT_CALLBACK="record",
        ANSIBLE_CALLBACK_PLUGINS=str(Path(__file__).with_name("callback_plugins")),
        ANSIBLE_HOST_KEY_CHECKING="False",
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_LOCALHOST_WARNING="False",
        ANSIBLE_INVENTORY_UNPARSED_WARNING="False",
    )


def run(
    tmp_path, monkeypatch, playbook: str, facts: dict, outputs: dict[str, list[str]], extra: dict | None = None
) -> dict:
    state = tmp_path / "state"
    state.mkdir()
    for name, lines in outputs.items():
        (state / f"{name}.out").write_text("\n".join(lines) + "\n")
    monkeypatch.setenv("STATE", str(state))
    stub_programs(
        tmp_path,
        monkeypatch,
        getenforce=STUB,
        **{"fips-flag": STUB, "update-crypto-policies": STUB, "fips-mode-setup": STUB, "cat": CAT},
    )
    env = recording_env()
    variables = {"ansible_become": False, "ansible_python_interpreter": sys.executable, **facts, **(extra or {})}
    result = process.run(
        [
            Path(sys.executable).with_name("ansible-playbook"),
            "-i",
            "localhost,",
            "-c",
            "local",
            "--check",
            "--skip-tags",
            "packages,reboot",
            "-e",
            json.dumps(variables),
            MODES / playbook,
        ],
        env=env,
        timeout=300,
    )
    assert "{" in result.stdout, result.stdout[-2000:] + result.stderr[-2000:]
    tasks = json.loads(result.stdout[result.stdout.index("{") :])["tasks"]
    calls = (state / "calls").read_text().splitlines() if (state / "calls").exists() else []
    failed = {name: t.get("msg") for name, t in tasks.items() if t["vagabond_status"] == "failed"}
    return {"rc": result.returncode, "failed": failed, "tasks": tasks, "calls": calls}


def would_run(task: dict) -> bool:
    """In check mode: the task's condition held (a command would have run, a file would change)."""
    return "false_condition" not in task and (bool(task.get("changed")) or "check mode" in str(task.get("msg", "")))


EL9 = {"ansible_os_family": "RedHat", "ansible_distribution": "AlmaLinux", "ansible_distribution_major_version": "9"}
EL7 = {"ansible_os_family": "RedHat", "ansible_distribution": "CentOS", "ansible_distribution_major_version": "7"}


def test_fips_on_el9_enables_reboots_and_checks_the_crypto_policy(tmp_path, monkeypatch):
    out = run(
        tmp_path,
        monkeypatch,
        "fips.yml",
        EL9,
        {
            "fips-flag": RECORDED["fips"]["off-then-on"],
            "update-crypto-policies": RECORDED["update-crypto-policies"]["fips"],
        },
    )
    assert out["rc"] == 0, out["failed"]
    assert would_run(out["tasks"]["Enable FIPS mode (RedHat)"])
    assert not would_run(out["tasks"]["Put fips=1 on the kernel command line (Debian)"])
    assert "update-crypto-policies --show" in out["calls"]


def test_fips_already_on_changes_nothing(tmp_path, monkeypatch):
    out = run(
        tmp_path,
        monkeypatch,
        "fips.yml",
        EL9,
        {"fips-flag": RECORDED["fips"]["on"], "update-crypto-policies": RECORDED["update-crypto-policies"]["fips"]},
    )
    assert out["rc"] == 0
    assert not would_run(out["tasks"]["Enable FIPS mode (RedHat)"])


def test_fips_fails_when_the_crypto_policy_is_not_fips(tmp_path, monkeypatch):
    out = run(
        tmp_path,
        monkeypatch,
        "fips.yml",
        EL9,
        {"fips-flag": RECORDED["fips"]["on"], "update-crypto-policies": RECORDED["update-crypto-policies"]["default"]},
    )
    assert out["rc"] != 0
    assert out["tasks"]["The system-wide crypto policy is FIPS (RedHat)"]["vagabond_status"] == "failed"


def test_fips_on_el7_says_it_is_not_supported(tmp_path, monkeypatch):
    out = run(tmp_path, monkeypatch, "fips.yml", EL7, {"fips-flag": ["0"], "update-crypto-policies": ["FIPS"]})
    assert out["rc"] != 0
    assert "not supported by vagabond" in out["tasks"]["FIPS needs fips-mode-setup, from RHEL 8 on"]["msg"]


def test_selinux_on_centos7_from_disabled_points_yum_at_the_vault_and_relabels(tmp_path, monkeypatch):
    out = run(tmp_path, monkeypatch, "selinux.yml", EL7, {"getenforce": RECORDED["getenforce"]["el7-disabled"]})
    assert out["rc"] == 0, out["failed"]
    vault = out["tasks"][
        "Point yum at CentOS's vault (CentOS 7 is end of life; vagabond_yum_baseurl names another mirror)"
    ]
    assert would_run(vault)
    assert would_run(out["tasks"]["Permissive for the relabel boot"]) and would_run(out["tasks"]["Ask for a relabel"])
    assert not would_run(out["tasks"]["Activate SELinux (Debian)"])


def test_selinux_already_enforcing_changes_nothing_but_the_config_check(tmp_path, monkeypatch):
    out = run(tmp_path, monkeypatch, "selinux.yml", EL9, {"getenforce": RECORDED["getenforce"]["el-enforcing"]})
    assert out["rc"] == 0
    assert not would_run(out["tasks"]["Ask for a relabel"])
    assert not would_run(out["tasks"]["Switch the running mode"])
    assert (
        "Point yum at CentOS's vault (CentOS 7 is end of life; vagabond_yum_baseurl names another mirror)"
        in out["tasks"]
    )
    assert not would_run(
        out["tasks"]["Point yum at CentOS's vault (CentOS 7 is end of life; vagabond_yum_baseurl names another mirror)"]
    )


def test_the_mode_playbooks_pass_syntax_check_and_ansible_lint():
    bin_dir = Path(sys.executable).parent
    for playbook in sorted(MODES.glob("*.yml")):
        process.check([bin_dir / "ansible-playbook", "--syntax-check", "-i", "localhost,", playbook], timeout=120)
    lint = process.run(
        [bin_dir / "ansible-lint", "--offline", "--nocolor", "-q", *sorted(MODES.glob("*.yml"))],
        timeout=600,
        env=dict(os.environ, ANSIBLE_LINT_SKIP_SCHEMA_UPDATE="1"),
    )
    assert lint.returncode == 0, lint.stdout[-3000:] + lint.stderr[-3000:]


@pytest.mark.parametrize(
    ("pkg_mgr", "module"),
    [
        ("apt", "ansible.builtin.apt"),
        ("yum", "ansible.builtin.yum"),
        ("dnf", "ansible.builtin.dnf"),
        ("dnf5", "ansible.builtin.dnf"),
        ("zypper", "ansible.builtin.package"),
    ],
)
def test_the_packages_play_installs_with_the_guests_own_package_manager(tmp_path, pkg_mgr, module):
    """The box's `packages:` play, run by the real ansible-playbook with the package manager a guest
    of each family reports (CentOS 7: yum, EL 9: dnf, Fedora 41: dnf5, openSUSE: zypper): exactly
    one install task's condition holds, and it names the box's packages. The modules themselves are
    swapped for debug (no guest of those families is reachable here); their arguments are shown."""
    from vagabond.vm import playbooks

    play = playbooks.packages_play(["make", "gcc"], {}, "not vagabond_current")
    for task in play["tasks"]:
        used = next(k for k in task if k.startswith("ansible.builtin."))
        task["ansible.builtin.debug"] = {"msg": json.dumps({used: task.pop(used)})}
    (tmp_path / "packages.yml").write_text(json.dumps([play]))
    variables = {
        "ansible_become": False,
        "ansible_python_interpreter": sys.executable,
        "ansible_pkg_mgr": pkg_mgr,
        "vagabond_current": False,
    }
    result = process.run(
        [
            Path(sys.executable).with_name("ansible-playbook"),
            *("-i", "localhost,", "-c", "local", "-e", json.dumps(variables)),
            tmp_path / "packages.yml",
        ],
        env=recording_env(),
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    tasks = json.loads(result.stdout[result.stdout.index("{") :])["tasks"]
    # (A message that templates to JSON comes back as a mapping.)
    ran = {
        n: t["msg"] if isinstance(t["msg"], dict) else json.loads(t["msg"])
        for n, t in tasks.items()
        if n.startswith("Install") and t["vagabond_status"] == "ok"
    }
    (installed,) = ran.values()
    assert installed == {module: installed[module]} and installed[module]["name"] == ["make", "gcc"]
    assert installed[module]["state"] == "present"
    if module == "ansible.builtin.apt":  # a fresh index when no sources were given: a base box keeps none
        assert installed[module]["update_cache"] is True and installed[module]["cache_valid_time"] == "86400"
