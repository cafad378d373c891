"""`vagabond test`: phases in order, each timed, the first failure decides the exit code, the VM
destroyed whatever happens (unless --keep), JUnit XML with one case per phase and verify command;
changed tasks named from ansible-playbook's own output."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
from typer.testing import CliRunner

from tests.conftest import write_box
from vagabond import process
from vagabond.cli.app import app
from vagabond.errors import CommandFailed, Interrupted, ModeCheckFailed, NotIdempotent
from vagabond.host import libvirt
from vagabond.vm import lifecycle, provision, remote, testrun

OUTPUT = """
PLAY [all] *********************************************************************

TASK [Gathering Facts] *********************************************************
ok: [default]

TASK [selinux : Install the policy] ********************************************
changed: [default]
changed: [other] => (item=a)

TASK [Write /etc/motd] *********************************************************
\x1b[0;33mchanged: [default]\x1b[0m

RUNNING HANDLER [restart x] ****************************************************
changed: [default -> localhost]

TASK [Read it back] ************************************************************
ok: [default]

PLAY RECAP *********************************************************************
default                    : ok=5    changed=3    unreachable=0    failed=0    skipped=0    rescued=0    ignored=0
other                      : ok=2    changed=1    unreachable=0    failed=0    skipped=0    rescued=0    ignored=0
"""


def test_changed_tasks_are_named_per_host():
    recaps = {r.host: r for r in provision.parse_recap(OUTPUT)}
    assert recaps["default"].changed_tasks == ("selinux : Install the policy", "Write /etc/motd", "restart x")
    assert recaps["other"].changed_tasks == ("selinux : Install the policy",)
    assert provision.parse_recap(OUTPUT.replace("changed: [default", "ok: [default"))[0].changed_tasks == ()


@pytest.fixture
def seams(project, monkeypatch):
    """The phases' real work replaced by records: what ran, in which order."""
    write_box(
        project, "b", "description: x\nbase: {box: a/b}\nplaybooks: [p.yml]\nverify: [getenforce, 'test -e /etc/x']\n"
    )
    (project / "p.yml").write_text("- hosts: all\n  tasks: []\n")
    calls, outcomes = [], {}

    def act(name, *args):
        calls.append(name)
        outcome = outcomes.get(name)
        if isinstance(outcome, BaseException):
            raise outcome

    monkeypatch.setattr(libvirt, "domains", lambda prefix="": {})
    monkeypatch.setattr(lifecycle, "up", lambda box, wd, opts: act("up"))
    monkeypatch.setattr(lifecycle, "check_idempotence", lambda box, wd, extra: act("idempotence"))
    monkeypatch.setattr(lifecycle, "destroy", lambda box, wd: act("destroy") or [])

    def guest(wd, machine, argv, env=None, stream=True, timeout=None):
        name = " ".join(argv)
        calls.append(name)
        stream(f"output of {name}\n")
        if outcomes.get(name) == "hang":
            raise CommandFailed(["ssh", *argv], None, timeout=timeout)
        return process.Result(list(argv), outcomes.get(name, 0), "", "", 0.1)

    monkeypatch.setattr(remote, "run", guest)
    return calls, outcomes


def test_all_phases_pass(seams, project):
    calls, _ = seams
    result = CliRunner().invoke(app, ["test", "b", "--junit", "out/junit.xml", "--", "uname", "-r"])
    assert result.exit_code == 0, result.output
    assert calls == ["up", "idempotence", "sh -c getenforce", "sh -c test -e /etc/x", "uname -r", "destroy"]
    cases = ET.parse(project / "out" / "junit.xml").getroot().find("testsuite")
    assert [c.get("name") for c in cases] == [
        "up",
        "idempotence",
        "verify: getenforce",
        "verify: test -e /etc/x",
        "verify: uname -r",
        "destroy",
    ]
    assert cases.get("failures") == "0" and cases.get("tests") == "6"


@pytest.mark.parametrize(
    ("failing", "code", "ran"),
    [
        ("up", 10, ["up", "destroy"]),
        ("idempotence", 11, ["up", "idempotence", "sh -c getenforce", "sh -c test -e /etc/x", "destroy"]),
        ("sh -c getenforce", 12, ["up", "idempotence", "sh -c getenforce", "sh -c test -e /etc/x", "destroy"]),
        ("destroy", 13, ["up", "idempotence", "sh -c getenforce", "sh -c test -e /etc/x", "destroy"]),
    ],
)
def test_the_first_failed_phase_decides(seams, project, failing, code, ran):
    calls, outcomes = seams
    outcomes[failing] = {
        "up": ModeCheckFailed("selinux is permissive"),
        "idempotence": NotIdempotent("changed 1 task: default: x"),
        "destroy": ModeCheckFailed("cannot"),
        "sh -c getenforce": 1,
    }[failing]
    result = CliRunner().invoke(app, ["test", "b", "--junit", "j.xml"])
    assert result.exit_code == code, result.output
    assert calls == ran
    suite = ET.parse(project / "j.xml").getroot().find("testsuite")
    failed = [c for c in suite if c.find("failure") is not None]
    assert len(failed) == 1 and suite.get("failures") == "1"
    if failing == "sh -c getenforce":
        assert "output of sh -c getenforce" in failed[0].find("failure").text
        assert "phase verify: getenforce failed: sh -c getenforce exited 1" in result.stderr


def test_keep_leaves_the_vm_and_skips_destroy(seams, project):
    calls, _ = seams
    result = CliRunner().invoke(app, ["test", "b", "--keep", "--no-idempotence", "--json"])
    assert result.exit_code == 0 and calls == ["up", "sh -c getenforce", "sh -c test -e /etc/x"]
    assert "--keep" in result.stderr


def test_an_interrupted_test_still_destroys_and_reports(seams, project):
    calls, outcomes = seams
    outcomes["idempotence"] = Interrupted("interrupted by SIGTERM")
    result = CliRunner().invoke(app, ["test", "b", "--junit", "j.xml"])
    assert result.exit_code == 130 and calls == ["up", "idempotence", "destroy"]
    cases = ET.parse(project / "j.xml").getroot().find("testsuite")
    assert [(c.get("name"), c.find("failure") is not None) for c in cases] == [
        ("up", False),
        ("idempotence", True),
        ("destroy", False),
    ]


def test_a_verify_command_that_hangs_is_stopped(seams, project):
    calls, outcomes = seams
    outcomes["sh -c getenforce"] = "hang"
    result = CliRunner().invoke(app, ["test", "b", "--verify-timeout", "5"])
    assert result.exit_code == 12 and calls[-1] == "destroy"
    assert "sh -c getenforce timed out after 5s" in result.stderr


def test_a_vm_already_in_the_workdir_is_not_taken(seams, project, monkeypatch):
    calls, _ = seams
    monkeypatch.setattr(libvirt, "domains", lambda prefix="": {f"{prefix}default": "running"})
    result = CliRunner().invoke(app, ["test", "b"])
    assert result.exit_code == 2 and calls == [], "nothing may run, and above all no destroy"
    assert "already has a VM in" in result.stderr and "--workdir" in result.stderr


def test_junit_holds_any_output(tmp_path):
    result = testrun.Result(
        "b",
        [testrun.Phase("verify: printf '\x1b[31m'", "verify", "failed", 1.5, "x exited 1", "bell\x07 nul\x00 ü ✓\n")],
    )
    testrun.write_junit(result, tmp_path / "j.xml")
    failure = ET.parse(tmp_path / "j.xml").getroot().find("testsuite/testcase/failure")
    assert failure.text == "bell nul ü ✓\n" and failure.get("type") == "verify"
    assert ET.parse(tmp_path / "j.xml").getroot().find("testsuite/testcase").get("name") == "verify: printf '[31m'"


def test_export_writes_the_warm_image_of_a_green_cold_run_only_and_a_failed_one_fails_nothing(
    seams, project, monkeypatch
):
    """--warm-from reaches up; --export saves and exports the VM before the destroy phase, after a
    green run that booted cold; a restored run exports nothing; an export that fails is a warning."""
    from vagabond.errors import WarmError
    from vagabond.vm import warm, warmarchive

    calls, outcomes = seams
    seen = {}
    monkeypatch.setattr(
        lifecycle, "up", lambda box, wd, opts: seen.update(warm_from=opts.warm_from) or calls.append("up")
    )
    monkeypatch.setattr(warm, "save", lambda box, wd: calls.append("save"))
    monkeypatch.setattr(warmarchive, "export", lambda box, wd, target, **k: calls.append(f"export {target.name}"))
    result = CliRunner().invoke(
        app, ["test", "b", "--no-idempotence", "--warm-from", "cache/w.tar", "--export", "cache/w.tar"]
    )
    assert result.exit_code == 0, result.output
    assert seen["warm_from"] == project / "cache" / "w.tar"
    assert calls[-3:] == ["save", "export w.tar", "destroy"], "exported before the VM goes"
    calls.clear()
    monkeypatch.setattr(warmarchive, "export", lambda *a, **k: (_ for _ in ()).throw(WarmError("disk full")))
    result = CliRunner().invoke(app, ["test", "b", "--no-idempotence", "--export", "w.tar"])
    assert result.exit_code == 0 and "no warm image exported: disk full" in " ".join(result.stderr.split())
    calls.clear()
    monkeypatch.setattr(lifecycle, "up", lambda box, wd, opts: wd.write_state(warm={"restored_at": 1.0}))
    result = CliRunner().invoke(app, ["test", "b", "--no-idempotence", "--export", "w.tar"])
    assert result.exit_code == 0 and "save" not in calls and "nothing to export" in result.stderr
