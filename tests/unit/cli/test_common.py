"""The CLI at the process seam: stub programs on PATH, real argument parsing, the one error funnel."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from tests.conftest import write_box
from vagabond import github, paths
from vagabond.bases import made
from vagabond.cli.app import app
from vagabond.cli.common import _reflow
from vagabond.host import detect
from vagabond.host.detect import HostFacts

runner = CliRunner()
SHIPPED = str(paths.shipped_boxes_dir())

PVM_HOST = HostFacts("ok", cpu_flags=frozenset({"fpu", "hypervisor"}), modules=frozenset({"kvm", "kvm_pvm"}))

STUBS = {
    "vagrant": """#!/bin/sh
echo "$@" >> "$STUB_LOG"
case "$1" in
  --version) echo "Vagrant 2.3.4" ;;
  plugin) echo "1,,plugin-name,vagrant-libvirt"
          echo "1,vagrant-libvirt,plugin-version,0.11.2%!(VAGRANT_COMMA) system" ;;
esac
""",
    "virsh": """#!/bin/sh
echo "virsh $@" >> "$STUB_LOG"
case "$3" in
  uri) echo qemu:///system ;;
  pool-info) printf 'Name: default\\nState:          running\\n' ;;
  domcapabilities) echo '<domain>kvm</domain>' ;;
esac
""",
    "qemu-system-x86_64": "#!/bin/sh\necho 'QEMU emulator version 7.2.22'\n",
    "qemu-img": "#!/bin/sh\necho 'qemu-img version 7.2.22'\n",
    "ansible-playbook": "#!/bin/sh\necho 'ansible-playbook [core 2.16.19]'\n",
    "mmdebstrap": "#!/bin/sh\necho 'mmdebstrap 1.3.5'\n",
}


@pytest.fixture
def stubs(tmp_path, monkeypatch):
    bin_dir = tmp_path / "stub-bin"
    bin_dir.mkdir()
    for name, text in STUBS.items():
        path = bin_dir / name
        path.write_text(text)
        path.chmod(path.stat().st_mode | stat.S_IEXEC)
    log = tmp_path / "stub.log"
    log.write_text("")
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.setenv("STUB_LOG", str(log))
    monkeypatch.setattr(detect, "probe_host", lambda **kw: PVM_HOST)
    return bin_dir, log


def test_help_teaches():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("list", "render", "doctor"):
        assert command in result.output
    result = runner.invoke(app, ["render", "--help"])
    assert "Example: vagabond render centos7-selinux" in result.output


def test_help_paragraphs_wrap_at_the_terminal_not_at_the_source(monkeypatch):
    """A docstring's line breaks would break a narrow terminal's lines twice: each paragraph is
    wrapped by rich alone, list items keep their own line."""
    monkeypatch.setenv("COLUMNS", "300")
    out = runner.invoke(app, ["render", "--help"]).output
    assert (
        "With -o DIR: DIR/Vagrantfile and DIR/vagabond-provision/ (the one playbook that both `vagrant provision` "
        "and `vagabond provision` run"
    ) in out
    assert _reflow("Title.\n\nOne\nparagraph, -e\n-e joined.\n\nList:\n- one\n  more\n- two") == (
        "Title.\n\nOne paragraph, -e -e joined.\n\nList:\n- one\n  more\n- two"
    )


def test_list_json_shipped(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("VAGABOND_BOXES", raising=False)
    result = runner.invoke(app, ["list", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    names = {r["name"] for r in rows}
    assert {"centos7-selinux", "alma9-fips", "debian12", "debian12-selinux"} <= names
    assert all(r["description"] for r in rows)
    assert next(r for r in rows if r["name"] == "centos7-selinux")["modes"] == {"selinux": "enforcing"}


def test_list_reports_broken_box_files(project):
    write_box(project, "bad", "description: x\nbase: {box: a/b}\nresources: {memory: lots}\n")
    result = runner.invoke(app, ["list"])
    assert result.exit_code == 3
    assert (
        result.stderr == "error: boxes/bad.yaml:3: resources.memory: 'lots' is not a size: write a number of MiB, "
        "or one with a unit (512M, 2G)\n"
    )
    # The broken file is listed as such, and the other boxes are still there.
    assert "bad" in result.stdout and "BROKEN" in result.stdout and "debian12-selinux" in result.stdout


def test_render_unknown_box_is_one_line_without_traceback(project):
    result = runner.invoke(app, ["--boxes-dir", str(project / "boxes"), "render", "nope", "--driver", "qemu"])
    assert result.exit_code == 4
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert result.stderr == (
        "error: no box named 'nope' in boxes or the shipped boxes "
        "(available: alma10, alma9-fips, centos7-selinux, debian12, debian12-fips, debian12-selinux, debian13, "
        "ubuntu2404)\n"
    )


def test_render_writes_the_vagrantfile_and_its_provisioning_and_says_what_changed(project, stubs):
    out = project / "vm"
    result = runner.invoke(
        app, ["--boxes-dir", SHIPPED, "render", "debian12-selinux", "-o", str(out), "--driver", "kvm"]
    )
    assert result.exit_code == 0, result.output
    text = (out / "Vagrantfile").read_text()
    assert "[ENV['VAGABOND_DRIVER'], 'set by VAGABOND_DRIVER']" in text
    assert "['kvm', 'pinned when this file was rendered (vagabond render --driver)']" in text
    assert (out / "vagabond-provision" / "site.yml").is_file()
    assert "wrote Vagrantfile, vagabond-provision/" in result.stderr
    again = runner.invoke(
        app, ["--boxes-dir", SHIPPED, "render", "debian12-selinux", "-o", str(out), "--driver", "kvm"]
    )
    assert "are up to date" in again.stderr


def test_render_to_stdout_lets_the_file_decide_the_driver(project, stubs):
    result = runner.invoke(app, ["--boxes-dir", SHIPPED, "render", "debian12"])
    assert result.exit_code == 0
    assert "vagabond_probe_driver(ENV.fetch('VAGABOND_PROBE_ROOT', '/'))" in result.stdout
    assert "pinned when this file was rendered" not in result.stdout


def test_doctor_json_all_present(project, stubs):
    result = runner.invoke(app, ["doctor", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["driver"] == "qemu" and "kvm_pvm" in report["driver_reason"]
    assert report["ok"] is True
    checks = {c["name"]: c for c in report["checks"]}
    assert checks["vagrant-libvirt"]["detail"] == "plugin 0.11.2 (system)"
    assert checks["storage pool"]["ok"]
    log = stubs[1].read_text().splitlines()
    assert "plugin list --machine-readable" in log
    assert "virsh -c qemu:///system pool-info default" in log


def test_doctor_missing_vagrant_fails_with_fix(project, stubs):
    (stubs[0] / "vagrant").unlink()
    result = runner.invoke(app, ["doctor", "--json"])
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    vagrant = next(c for c in report["checks"] if c["name"] == "vagrant")
    assert not vagrant["ok"] and "apt-get install vagrant" in vagrant["fix"]


def test_doctor_text_shows_fix(project, stubs):
    (stubs[0] / "virsh").write_text("#!/bin/sh\necho 'error: failed to connect to the hypervisor' >&2\nexit 1\n")
    result = runner.invoke(app, ["doctor"])
    assert result.exit_code == 1
    assert "MISSING libvirt" in result.stdout
    assert "fix: start the daemons" in result.stdout


def test_python_dash_m_works(tmp_path):
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "vagabond", "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("vagabond ")


def test_github_actions_groups_annotations_and_step_summary(project, monkeypatch, tmp_path):
    """Under GitHub Actions: long steps are log groups, the error is an annotation, and the step
    summary lists what ran with its duration, whether the command succeeded or not."""
    from vagabond import ui

    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    monkeypatch.setattr(github, "steps", [])
    monkeypatch.setattr("sys.argv", ["vagabond", "up", "nosuchbox"])
    result = CliRunner().invoke(app, ["up", "nosuchbox"])
    assert result.exit_code == 4
    assert "::error title=vagabond up nosuchbox::no box named 'nosuchbox' in boxes" in result.output
    text = summary.read_text()
    assert text.startswith("### ❌ `vagabond up nosuchbox` (")
    assert "> no box named 'nosuchbox' in boxes" in text

    with ui.step("a long step"):
        pass
    github.write_step_summary("build x", True, 3.0)
    tail = summary.read_text().split("### ✅ `vagabond build x` (3s)")[1]
    assert "| a long step | 0.0s | ok |" in tail


def test_github_group_lines_wrap_outer_steps_only(monkeypatch, capsys):
    from vagabond import ui

    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setattr(github, "steps", [])
    with ui.step("outer 100%"):
        with ui.step("inner"):
            pass
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "::group::outer 100%25"
    assert err[-1] == "::endgroup::"
    assert sum(line.startswith("::group::") for line in err) == 1


def test_step_summary_reports_the_exit_code_a_command_chose(project, monkeypatch, tmp_path):
    from vagabond.host import doctor

    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    monkeypatch.setattr(github, "steps", [])
    monkeypatch.setattr("sys.argv", ["vagabond", "doctor", "--json"])
    monkeypatch.setattr(detect, "probe_and_decide", lambda *a, **kw: detect.Decision("qemu", "test"))
    monkeypatch.setattr(doctor, "run_doctor", lambda boxes, decision: [])
    for ok, mark in ((False, "❌"), (True, "✅")):
        monkeypatch.setattr(doctor, "report", lambda checks, decision, ok=ok: {"ok": ok})
        assert CliRunner().invoke(app, ["doctor", "--json"]).exit_code == (0 if ok else 1)
        assert summary.read_text().split("### ")[-1].startswith(f"{mark} `vagabond doctor` (")


def test_every_error_class_has_its_own_exit_code_listed_in_help():
    import inspect

    from vagabond import errors

    classes = [c for _, c in inspect.getmembers(errors, inspect.isclass) if issubclass(c, errors.VagabondError)]
    fixed = {
        c: c.exit_code
        for c in classes
        if c not in (errors.VagabondError, errors.CommandFailed, errors.StepFailed, errors.RenderError)
    }
    assert len(set(fixed.values())) == len(fixed), "two error classes share an exit code"
    listed = {code for code, _ in errors.EXIT_CODES}
    assert set(fixed.values()) <= listed and errors.RUN_OWN_FAILURE in listed
    help_text = runner.invoke(app, ["--help"]).output
    for code, meaning in errors.EXIT_CODES:
        assert f"{code:>3}  {meaning.split()[0]}" in help_text


def test_run_keeps_its_commands_exit_code_apart_from_its_own_failure(project):
    result = runner.invoke(app, ["run", "nosuchbox", "--", "true"])
    assert result.exit_code == 255 and result.stderr.startswith("error: no box named 'nosuchbox'")


def test_run_on_a_vm_that_is_not_up_exits_6_as_the_exit_code_page_says(project):
    """A script's `vagabond run BOX -- true || vagabond up BOX` tells "not up" from a failed command."""
    from vagabond import errors

    result = runner.invoke(app, ["run", "debian12", "--", "true"])
    assert result.exit_code == errors.NotRunning.exit_code == 6, result.output
    assert "is not up here" in result.stderr and "vagabond up debian12" in result.stderr
    assert (6, "the box's VM is not up here") in errors.EXIT_CODES


def test_pull_says_why_it_added_nothing(project):
    result = runner.invoke(app, ["pull", "debian12"])
    assert result.exit_code == 8, result.output
    assert result.stderr.startswith("error: no prebuilt box of debian12 was added to Vagrant's box store: ")
    assert "declares no prebuilt box (add a prebuilt: section)" in result.stderr and "above" not in result.stderr


def test_s3_without_boto3_names_the_extra(tmp_path, monkeypatch):
    import sys

    from tests.unit.catalog.test_transaction import make_box

    monkeypatch.setitem(sys.modules, "boto3", None)  # as if the s3 extra were not installed
    result = runner.invoke(app, ["publish", str(make_box(tmp_path, "1.0.0")), "--catalog", "s3://bucket/prefix"])
    assert result.exit_code == 2, result.output
    assert result.stderr.strip().endswith("s3:// catalogs need boto3 (pip install 'vagabond-vm[s3]')")


def test_debug_after_the_subcommand_and_from_the_environment(project):
    for argv, env in ((["list", "--debug"], {}), (["list"], {"VAGABOND_DEBUG": "1"}), (["--debug", "list"], {})):
        result = runner.invoke(app, argv, env=env)
        assert result.exit_code == 0, result.output
    # Debug on shows the traceback behind an error; off, the one line alone.
    for argv, env, debug in (
        (["status", "nosuch", "--debug"], {}, True),
        (["status", "nosuch"], {"VAGABOND_DEBUG": "1"}, True),
        (["--debug", "status", "nosuch"], {}, True),
        (["status", "nosuch"], {}, False),
    ):
        result = runner.invoke(app, argv, env=env)
        assert result.exit_code == 4 and "error: no box named 'nosuch'" in result.stderr, result.output
        assert ("Traceback (most recent call last)" in result.stderr) is debug, (argv, env)
    # After "--" it belongs to the command in the VM, not to vagabond.
    result = runner.invoke(app, ["run", "debian12", "--", "echo", "--debug"])
    assert "No such option" not in result.output


def test_completion_offers_box_names(project):
    write_box(project, "webapp", "description: x\nbase: {box: a/b}\n")
    result = runner.invoke(
        app,
        [],
        prog_name="vagabond",
        env={"_VAGABOND_COMPLETE": "complete_bash", "COMP_WORDS": "vagabond up web", "COMP_CWORD": "2"},
    )
    assert result.stdout.split() == ["webapp"], result.output
    result = runner.invoke(
        app,
        [],
        prog_name="vagabond",
        env={"_VAGABOND_COMPLETE": "complete_bash", "COMP_WORDS": "vagabond test debian12", "COMP_CWORD": "2"},
    )
    assert set(result.stdout.split()) == {"debian12", "debian12-fips", "debian12-selinux"}
    assert "--install-completion" in runner.invoke(app, ["--help"]).stdout


def test_every_command_that_writes_a_file_takes_o(project):
    import typer.main

    command = typer.main.get_command(app)
    writers = {"render": "--out", "logs": "--out", "build": "--out", "import": "--out", "repackage": "--out"}
    for name, long in writers.items():
        options = next(p for p in command.commands[name].params if long in p.opts)
        assert "-o" in options.opts, name
    ci = command.commands["ci"].commands["github"]
    assert {"-o", "--out", "--output"} <= set(next(p for p in ci.params if "-o" in p.opts).opts)
    for group, name in (("ci", "action"), ("base", "build")):
        assert any({"-o", "--out"} <= set(p.opts) for p in command.commands[group].commands[name].params), (
            f"{group} {name}"
        )


def test_base_build_out_copies_the_cached_box_whole(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cached = tmp_path / "cache" / "debian12.box"
    cached.parent.mkdir()
    cached.write_bytes(b"box bytes" * 1000)
    built = made.MadeBase("vagabond/debian12", "20261127.1", cached, tmp_path / "m.json", "00")
    monkeypatch.setattr("vagabond.bases.mmdebstrap.build", lambda box, force: built)
    result = runner.invoke(app, ["base", "build", "debian12", "--no-add", "-o", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    copy = tmp_path / "out" / "vagabond-debian12-20261127.1.box"
    assert result.stdout.strip() == str(copy) and copy.read_bytes() == cached.read_bytes()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [copy.name, f"{copy.name}.json"], (
        "no partial file stays; the description publish reads is beside it"
    )


@pytest.mark.parametrize(
    ("argv", "hoisted"),
    [
        (["list", "--debug"], ["--debug", "list"]),
        (["up", "b", "--debug", "--fresh"], ["--debug", "up", "b", "--fresh"]),
        (["up", "b", "-e", "--debug"], ["up", "b", "-e", "--debug"]),  # the value of -e
        (["ci", "github", "--test-command", "--debug"], ["ci", "github", "--test-command", "--debug"]),
        (["run", "b", "make", "--debug"], ["run", "b", "make", "--debug"]),  # the guest command's
        (["run", "b", "--debug", "--", "make"], ["--debug", "run", "b", "--", "make"]),
        (["run", "b", "--", "echo", "--debug"], ["run", "b", "--", "echo", "--debug"]),
        (["--boxes-dir", "x", "base", "build", "b", "--debug"], ["--debug", "--boxes-dir", "x", "base", "build", "b"]),
    ],
)
def test_debug_is_moved_only_when_it_is_vagabonds(argv, hoisted):
    import typer.main

    from vagabond.cli.common import _hoist_debug

    group = typer.main.get_command(app)
    assert _hoist_debug(group, group.make_context("vagabond", ["list"]), list(argv)) == hoisted


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["import", "local/x"],
            "error: 'local/x' is a Vagrant box name: give the image to make it from with --image PATH|URL",
        ),
        (["import", "debian12"], "error: box 'debian12' has a base of kind 'mmdebstrap', not a cloud image"),
        (["import", "centos7-selinux", "--disk", "9"], "error: --disk goes with --image: a box file names its image"),
    ],
)
def test_import_by_box_file_says_what_it_takes(args, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and message in result.stderr, result.stderr


def test_import_by_box_file_imports_its_base(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    seen = []
    monkeypatch.setattr(
        "vagabond.bases.cloudimage.imported",
        lambda box: seen.append(box) or SimpleNamespace(box_file=tmp_path / "x.box"),
    )
    monkeypatch.setattr("vagabond.bases.made.add_to_store", lambda built: built)
    result = runner.invoke(app, ["import", "alma9-fips"])
    assert result.exit_code == 0, result.output
    assert [b.name for b in seen] == ["alma9-fips"] and result.stdout.strip() == str(tmp_path / "x.box")


# (typer itself imports pydantic to build a subcommand's parameters: not ours to avoid)
HEAVY_FOR_HELP = (
    "jinja2",
    "yaml",
    "vagabond.definition.schema",
    "vagabond.vm.lifecycle",
    "vagabond.build",
    "vagabond.host.vagrant",
)


@pytest.mark.parametrize("argv", [["--help"], ["up", "--help"], ["ci", "github", "--help"], ["publish", "--help"]])
def test_help_imports_no_command_module(argv):
    """`vagabond --help` answers in about 0.2 s (bench/help.py): the commands import the schema,
    jinja2 and the VM code themselves, so help and shell completion never load them."""
    code = (
        "import sys\n"
        "from vagabond.entry import main\n"
        f"sys.argv = ['vagabond', *{argv!r}]\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        f"print(','.join(m for m in {HEAVY_FOR_HELP!r} if m in sys.modules), file=sys.stderr)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "Usage" in result.stdout, result.stderr
    assert result.stderr.strip().splitlines()[-1:] in ([], [""]), f"--help imported {result.stderr.strip()}"


def test_run_with_a_machine_the_box_does_not_have_is_bad_usage_not_a_vm_that_is_down(project):
    """`|| vagabond up` after a typo would boot a VM for nothing: a usage error (255 from run), never 6."""
    from vagabond import paths
    from vagabond.definition import boxfile
    from vagabond.errors import UsageError
    from vagabond.vm import remote
    from vagabond.vm.workdir import Workdir

    wd = Workdir.for_box(boxfile.find_box("debian12", paths.shipped_boxes_dir()))
    with pytest.raises(UsageError, match=r"box 'debian12' has no machine 'dbb'"):
        remote.ssh_argv(wd, "dbb", ["true"])


def test_a_file_the_host_refuses_is_one_line_with_its_path_not_a_traceback(project, monkeypatch):
    from vagabond.vm import status

    def refused(box, wd):
        raise PermissionError(1, "Operation not permitted", "/var/lib/libvirt/images/x.img")

    monkeypatch.setattr(status, "status", refused)
    write_box(project, "b", "description: x\nbase: {box: org/base}\n")
    result = runner.invoke(app, ["--boxes-dir", str(project / "boxes"), "status", "b"])
    assert result.exit_code == 1 and "Traceback" not in result.stderr
    assert result.stderr == (
        "error: /var/lib/libvirt/images/x.img: Operation not permitted (run with --debug for where it happened)\n"
    )
