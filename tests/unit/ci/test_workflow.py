"""`vagabond ci github`: the generated workflow, pinned by a golden file; values reach it intact;
least privilege, cache keys, triggers and publishing as the issue asks; and every shell step, run
by bash against recording stand-ins, calls this vagabond's CLI with options it really has."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import typer.main
from ruamel.yaml import YAML
from typer.testing import CliRunner

from tests import workflow_project
from tests.conftest import REPO, stub_programs, write_box
from vagabond import __version__
from vagabond.ci import workflow
from vagabond.cli.app import app
from vagabond.host import install

GOLDEN = REPO / "tests" / "golden" / "github-workflow.yml"
SPEC = "vagabond-vm @ git+https://github.com/example/vagabond.git@0123456789abcdef0123456789abcdef01234567"


def generate(project, *args: str):
    workflow_project.make(project)
    return CliRunner().invoke(app, ["ci", "github", "--vagabond-spec", SPEC, *args])


def load(result) -> dict:
    assert result.exit_code == 0, result.output
    return YAML(typ="safe").load(result.stdout)


def test_workflow_matches_golden(project):
    result = generate(project, "-o", ".github/workflows/vagabond.yml")
    assert result.exit_code == 0, result.output
    text = (project / ".github" / "workflows" / "vagabond.yml").read_text()
    text = text.replace(__version__, "VERSION")  # the golden file outlives version bumps
    if os.environ.get("UPDATE_GOLDEN"):
        GOLDEN.write_text(text)
    assert text == GOLDEN.read_text(), "re-run with UPDATE_GOLDEN=1 if the change to github-workflow.yml is intended"


def steps_named(job: dict) -> dict[str, dict]:
    return {s.get("name", s.get("uses", "")): s for s in job["steps"]}


def test_workflow_structure(project):
    doc = load(generate(project))
    test = doc["jobs"]["test"]
    assert [m["box"] for m in test["strategy"]["matrix"]["include"]] == ["centos7-selinux", "debian12-selinux"]
    assert [m["test_dir"] for m in test["strategy"]["matrix"]["include"]] == ["/src", "/home/vagrant/project"]
    assert [m["base"] for m in test["strategy"]["matrix"]["include"]] == ["image", "mmdebstrap"]
    runs = [s.get("run", "") for s in test["steps"]]
    assert any(
        '"$RUNNER_TEMP/vagabond/bin/vagabond" ${VAGABOND_BOXES:+--boxes-dir "$VAGABOND_BOXES"} prepare --boxes "$BOX" '
        '--user "$(id -un)"' in r
        for r in runs
    ), "sudo drops VAGABOND_BOXES: the option carries it"
    assert any(r.startswith('vagabond test "$BOX" --junit vagabond-results/junit.xml') for r in runs)
    named = steps_named(test)
    assert named["Destroy the VM (when the test step did not get to)"]["if"] == "always()"
    assert named["Upload the test results"]["if"] == "always()"
    assert (
        named["Upload the VM's logs"]["if"] == "failure()"
        and named["Upload the VM's logs"]["with"]["path"] == "vagabond-logs"
    )
    # Only boxes with a prebuilt: section get the nightly job.
    assert [m["box"] for m in doc["jobs"]["prebuilt"]["strategy"]["matrix"]["include"]] == ["debian12-selinux"]
    assert doc["on"]["schedule"] == [{"cron": "17 3 * * *"}]


def test_install_route_and_pins_come_from_one_place(project):
    doc = load(generate(project))
    assert doc["env"]["VAGRANT_FROM"] == "hashicorp"
    assert doc["env"]["VAGRANT_APT_FINGERPRINT"] == install.HASHICORP_FINGERPRINT
    assert doc["env"]["VAGRANT_VERSION"] == install.VAGRANT_VERSION
    assert doc["env"]["VAGRANT_LIBVIRT_VERSION"] == install.VAGRANT_LIBVIRT_VERSION
    assert doc["env"]["VAGABOND_SPEC"] == SPEC
    named = steps_named(doc["jobs"]["test"])
    script = named["Install libvirt, qemu, Vagrant and vagabond"]["run"]
    assert " ".join(install.APT_HOST) in script
    plugin = named["Install the vagrant-libvirt plugin (its known-bad gems pinned)"]["run"]
    assert " ".join(install.APT_PLUGIN_BUILD) in plugin and doc["env"]["VAGRANT_PLUGIN_PINS"] == ""
    # No Ubuntu package named vagrant or vagrant-libvirt outside the Debian route.
    hashicorp = script.split("hashicorp)")[1]
    assert "vagrant-libvirt" not in re.sub(
        r"plugin (list|install) vagrant-libvirt|\"vagrant-libvirt \(", "", hashicorp.split(";;")[0]
    )
    assert doc["env"] == load(generate(project, "--vagrant-from", "distribution"))["env"] | {
        "VAGRANT_FROM": "hashicorp"
    }


ORIGIN_SHA = "89abcdef" * 5


def test_shipped_boxes_with_no_options(tmp_path, monkeypatch):
    """A new user's first command, with a vagabond installed from its GitHub repository: every
    shipped box gets a job, through vagabond's action at the same commit, the project synced where
    none is named."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(
        install,
        "origin",
        lambda: install.Origin(
            f"vagabond-vm @ git+https://github.com/example/vagabond.git@{ORIGIN_SHA}", f"example/vagabond@{ORIGIN_SHA}"
        ),
    )
    result = CliRunner().invoke(app, ["ci", "github"])
    doc = load(result)
    shipped = sorted(p.stem for p in (REPO / "boxes").glob("*.yaml"))
    matrix = doc["jobs"]["test"]["strategy"]["matrix"]["include"]
    assert [m["box"] for m in matrix] == shipped
    assert all(m["sync"] == "/src" and m["test_dir"] == "/src" for m in matrix)
    assert "no synced_folders, so the job syncs the project to /src" in result.stderr
    uses = [s["uses"] for s in doc["jobs"]["test"]["steps"] if "uses" in s]
    assert f"example/vagabond@{ORIGIN_SHA}" in uses and f"example/vagabond/cleanup@{ORIGIN_SHA}" in uses
    assert result.stdout.splitlines()[1] == "#   vagabond ci github --boxes " + ",".join(shipped), (
        "the header regenerates it as typed"
    )


def test_a_vagabond_from_a_local_clone_is_refused_in_one_line(tmp_path, monkeypatch):
    """No install source that does not exist: vagabond-vm==VERSION is not on PyPI (and whoever
    registers the name would run code as root in the workflow)."""
    monkeypatch.chdir(tmp_path)
    subprocess.run(["git", "init", "-q", str(tmp_path / "clone")], check=True)
    monkeypatch.setattr(install, "source_checkout", lambda: tmp_path / "clone")
    monkeypatch.setattr(
        install.metadata, "distribution", lambda name: (_ for _ in ()).throw(install.metadata.PackageNotFoundError)
    )
    result = CliRunner().invoke(app, ["ci", "github"])
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and "--vagabond-spec" in result.stderr and "--use-action" in result.stderr
    inline = CliRunner().invoke(app, ["ci", "github", "--inline", "--use-action", f"example/vagabond@{ORIGIN_SHA}"])
    assert inline.exit_code == 2 and "contradict" in inline.stderr


def test_box_with_synced_folder_is_not_synced_again(project):
    doc = load(generate(project))
    assert [m["sync"] for m in doc["jobs"]["test"]["strategy"]["matrix"]["include"]] == ["", ""]


def test_least_privilege(project):
    """sudo only where root is needed; the tests run as the runner user; files handed back."""
    doc = load(generate(project))
    for job in doc["jobs"].values():
        for step in job["steps"]:
            run = step.get("run", "")
            if "sudo" in run:
                assert step["name"] in {
                    "Free disk space for boxes and VM disks (GitHub's hosted runners only)",
                    "Install libvirt, qemu, Vagrant and vagabond",
                    "Install the vagrant-libvirt plugin (its known-bad gems pinned)",
                    "Prepare the host (KVM, swap, libvirt, this user's access)",
                    "Build the base box (as root, for loop devices)",
                    "Build the prebuilt dependency box (as root, for the loop devices of the offline compaction)",
                }, step["name"]
            if "sudo -E" in run:
                raise AssertionError(f"{step['name']}: sudo-rs (Ubuntu 26.04) has no -E; values go through sudo env")
            if "Build" in step.get("name", "") and "sudo" in run:
                assert "trap 'sudo chown -R" in run, f"{step['name']}: what root made must go back to the runner user"
    named = steps_named(doc["jobs"]["test"])
    assert (
        named["Free disk space for boxes and VM disks (GitHub's hosted runners only)"]["if"]
        == "runner.environment == 'github-hosted'"
    )
    base = named["Build the base box (as root, for loop devices)"]["run"]
    assert base.startswith("trap 'sudo chown -R"), (
        "what root made goes back to the runner user even when the build fails"
    )
    assert doc["permissions"] == {"contents": "read"}


def test_secrets_only_in_the_publish_step_of_the_default_branch(project):
    """The job that runs the project's playbooks holds no credential: it hands the box to a job of
    its own, which runs none of the project's code."""
    doc = load(generate(project))
    nightly, publishing = doc["jobs"]["prebuilt"], doc["jobs"]["publish"]
    assert "environment" not in nightly and publishing["environment"] == "vagabond-publish"
    assert publishing["needs"] == "prebuilt"
    assert "github.ref_name == github.event.repository.default_branch" in nightly["if"]
    assert not any("checkout" in s.get("uses", "") for s in publishing["steps"]), "the publish job runs no project code"
    for name, job in doc["jobs"].items():
        assert "secrets." not in json.dumps(job.get("env", {}))
        for step in job["steps"]:
            if "secrets." in json.dumps(step):
                assert (name, step["name"]) == ("publish", "Publish it")
    publish = steps_named(publishing)["Publish it"]
    assert publish["env"]["S3_ACL"] == "" and '${S3_ACL:+--s3-acl "$S3_ACL"}' in publish["run"]


def test_oidc_instead_of_stored_keys(project):
    role = "arn:aws:iam::123456789012:role/vagabond-publish"
    doc = load(generate(project, "--aws-role", role, "--s3-acl", "bucket-owner-full-control", "--environment", "boxes"))
    publishing = doc["jobs"]["publish"]
    assert publishing["permissions"] == {"contents": "read", "packages": "write", "id-token": "write"}
    assert publishing["environment"] == "boxes"
    assert "permissions" not in doc["jobs"]["prebuilt"], "the build job cannot mint the role session"
    creds = next(s for s in publishing["steps"] if "configure-aws-credentials" in s.get("uses", ""))
    assert creds["with"]["role-to-assume"] == role
    assert "secrets.AWS" not in json.dumps(doc), "no stored AWS keys"
    assert steps_named(publishing)["Publish it"]["env"]["S3_ACL"] == "bucket-owner-full-control"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--aws-role", "arn:aws:iam::1:role/x"], "not an IAM role ARN"),
        (["--s3-acl", "public-read; rm -rf /"], "not a canned ACL"),
        (["--environment", "a b"], "not a GitHub environment name"),
        (["--vagrant-from", "snap"], "not a route"),
        (["--test-command", " "], "--test-command is empty"),
    ],
)
def test_bad_settings_are_refused(project, args, message):
    result = generate(project, *args)
    assert result.exit_code == 2 and message in result.stderr


def test_triggers_and_paths(project):
    doc = load(generate(project, "--branch", "trunk"))
    assert doc["on"]["push"]["branches"] == ["trunk"] and doc["on"]["push"]["tags"] == ["v*"]
    assert doc["on"]["pull_request"]["paths-ignore"] == ["**.md", "docs/**", "LICENSE*", ".github/ISSUE_TEMPLATE/**"]
    assert load(generate(project, "--paths-ignore", "site/**, *.txt"))["on"]["push"]["paths-ignore"] == [
        "site/**",
        "*.txt",
    ]
    assert "paths-ignore" not in (load(generate(project, "--paths-ignore", ""))["on"]["pull_request"] or {})


def test_cache_keys_follow_what_they_cache(project):
    doc = load(generate(project))
    named = steps_named(doc["jobs"]["test"])
    assert named["Restore the base box"]["with"]["key"] == "${{ steps.boxes.outputs.base }}"
    assert "vagabond base key" in named["Which base box, which prebuilt box"]["run"]
    prebuilt = named["Restore the prebuilt box"]
    assert prebuilt["with"]["key"].endswith("${{ steps.boxes.outputs.version }}")
    assert (
        prebuilt["with"]["path"] == "${{ steps.boxes.outputs.store }}"
        and prebuilt["if"] == "steps.boxes.outputs.version != ''"
    )
    assert named["Restore the vagrant-libvirt plugin"]["with"]["key"] == "${{ steps.install.outputs.plugin-key }}"
    key = re.search(r'echo "plugin-key=(.*)" >>', named["Install libvirt, qemu, Vagrant and vagabond"]["run"])[1]
    for part in (
        "$OS",
        "$(uname -m)",
        "$VAGRANT_VERSION",
        "$VAGRANT_LIBVIRT_VERSION",
        "libvirt-daemon-system",
        "VAGRANT_PLUGIN_PINS",
    ):
        assert part in key, f"the plugin's cache key misses {part}"
    assert named["Restore the base box"]["with"]["path"] == "${{ steps.boxes.outputs.base-path }}", (
        "the made base alone"
    )
    for job in doc["jobs"].values():
        for step in job["steps"]:
            uses = step.get("uses", "")
            assert not uses.startswith("actions/cache@"), "restore and save apart"
            if uses.startswith("actions/cache/save@"):
                assert step["if"].endswith(workflow.SAVE_CACHE_IF), "caches are saved from the default branch only"
                assert "always()" not in step["if"], "only what was made whole is saved"
            if uses.startswith("actions/cache/"):
                assert "restore-keys" not in step["with"], "a partial hit would carry stale entries along"
    saves = [s["name"] for s in doc["jobs"]["test"]["steps"] if s.get("uses", "").startswith("actions/cache/save@")]
    assert saves == ["Save the vagrant-libvirt plugin", "Save the base box", "Save the prebuilt box"]


def test_the_nightly_job_runs_on_schedule_and_does_not_cancel(project):
    doc = load(generate(project))
    assert doc["jobs"]["prebuilt"]["if"].startswith("github.event_name == 'schedule' ||")
    assert "'nightly'" in doc["concurrency"]["group"]


def test_boxes_dir_reaches_the_runner(project):
    (project / "ci" / "boxes").mkdir(parents=True)
    write_box(project, "x", "description: x\nbase: {box: a/b}\n")
    (project / "boxes" / "x.yaml").rename(project / "ci" / "boxes" / "x.yaml")
    result = CliRunner().invoke(
        app, ["--boxes-dir", "ci/boxes", "ci", "github", "--boxes", "x", "--vagabond-spec", SPEC]
    )
    doc = load(result)
    assert doc["env"]["VAGABOND_BOXES"] == "ci/boxes"
    assert "vagabond --boxes-dir ci/boxes ci github --boxes x" in result.stdout
    outside = CliRunner().invoke(app, ["--boxes-dir", "/tmp", "ci", "github", "--boxes", "debian12"])
    assert outside.exit_code == 2 and "outside the repository" in outside.stderr


def test_no_nightly_job_without_prebuilt_boxes(project):
    doc = load(generate(project, "--boxes", "centos7-selinux"))
    assert set(doc["jobs"]) == {"test"} and "schedule" not in doc["on"]


@pytest.mark.parametrize("makefile", [None, "all:\n\techo\ntest := x\n"])
@pytest.mark.parametrize("action", [False, True])
def test_without_a_test_target_each_job_runs_the_boxes_verify_commands(project, makefile, action):
    """`vagabond init` makes no Makefile: the workflow must not run a `make test` that is not there."""
    workflow_project.make(project, makefile=False)
    if makefile:
        (project / "Makefile").write_text(makefile)
    more = ["--use-action", "example/vagabond@v1"] if action else ["--inline"]
    result = CliRunner().invoke(app, ["ci", "github", "--vagabond-spec", SPEC, *more])
    doc = load(result)
    job = doc["jobs"]["test"]
    assert "TEST_COMMAND" not in job["env"] and "TEST_COMMAND" not in result.stdout
    assert "no Makefile with a test target here" in result.stderr and "--test-command" in result.stderr
    if action:
        (step,) = [s for s in job["steps"] if "vagabond@" in s.get("uses", "")]
        assert step["with"]["test"] == "true", "the action runs the whole vagabond test sequence"
    else:
        (step,) = [s for s in job["steps"] if s.get("id") == "test"]
        assert step["run"].startswith('vagabond test "$BOX" --junit') and " -- " not in step["run"]


def test_a_makefile_test_target_is_the_default_test_command(project):
    workflow_project.make(project)
    result = generate(project)
    assert load(result)["jobs"]["test"]["env"]["TEST_COMMAND"] == "make test"
    assert "no Makefile" not in result.stderr


@pytest.mark.parametrize("command", ["make test", "pytest -k 'not slow' && echo \"done\"", "a: b # c {x} && '#' --"])
def test_test_command_arrives_intact(project, command):
    doc = load(generate(project, "--test-command", command))
    assert doc["jobs"]["test"]["env"]["TEST_COMMAND"] == command


def test_box_without_synced_folder_gets_the_project_synced(project):
    write_box(project, "bare", "description: x\nbase: {box: a/b}\n")
    result = CliRunner().invoke(app, ["ci", "github", "--boxes", "bare", "--vagabond-spec", SPEC])
    [job] = load(result)["jobs"]["test"]["strategy"]["matrix"]["include"]
    assert job["sync"] == "/src" and job["test_dir"] == "/src"
    assert "bare: no synced_folders, so the job syncs the project to /src" in result.stderr


def test_foreign_workflow_file_is_not_overwritten(project):
    target = project / ".github" / "workflows" / "ci.yml"
    target.parent.mkdir(parents=True)
    target.write_text("name: hand-written\n")
    result = generate(project, "-o", str(target))
    assert result.exit_code == 2 and "was not generated by vagabond" in result.output
    assert target.read_text() == "name: hand-written\n"
    assert generate(project, "-o", str(target), "--force").exit_code == 0
    assert generate(project, "-o", str(target)).exit_code == 0, "a generated file may be regenerated"


@pytest.mark.parametrize("bad", ["make\rtest", "make\ntest", "a\x85b", "a\u2028b", "a\x00b", "a\tb"])
@pytest.mark.parametrize(
    "option", ["--test-command", "--runs-on", "--vagabond-spec", "--cron", "--branch", "--paths-ignore"]
)
def test_control_characters_never_reach_the_workflow(project, option, bad):
    result = CliRunner().invoke(app, ["ci", "github", "--boxes", "debian12", option, bad])
    assert result.exit_code == 2
    assert f"error: {option} " in result.stderr and "is not allowed in a workflow" in result.stderr


@pytest.mark.parametrize(
    "where",
    [["-o", "x.yml\ndefaults:\n  run:\n    shell: bash -c 'curl x|sh' {0}\n"], ["--boxes-dir", "boxes\nname: evil"]],
)
def test_the_header_comment_takes_no_line_break_either(project, where):
    """A newline in -o added a top-level `defaults: run: shell:` to the workflow through its header."""
    (project / "boxes" / "debian12.yaml").write_text((REPO / "boxes" / "debian12.yaml").read_text())
    option, value = where
    if option == "--boxes-dir":  # a directory of that name, so the name alone is the problem
        (project / value).mkdir()
        (project / value / "debian12.yaml").write_text((REPO / "boxes" / "debian12.yaml").read_text())
    argv = (
        [option, value, "ci", "github", "--vagabond-spec", SPEC]
        if option == "--boxes-dir"
        else ["ci", "github", "--vagabond-spec", SPEC, option, value]
    )
    result = CliRunner().invoke(app, argv)
    assert result.exit_code == 2 and f"error: {option} " in result.stderr and "control character '\\n'" in result.stderr
    assert result.stdout == "" and not list(project.glob("x.yml*"))


# --- the steps, run ------------------------------------------------------------------------------

RECORD = 'printf "%s\\0" "$(basename "$0")" "$@" >> "$STUB_LOG"; printf "\\n" >> "$STUB_LOG"\n'
# A stub fed by a pipe reads it to the end, as the real program would: `echo ... | sudo tee` must not
# end in SIGPIPE under pipefail because a stub exited before echo wrote.
DRAIN = "if [ -p /dev/stdin ]; then cat > /dev/null; fi\n"
STUBS = dict.fromkeys(
    ("sudo", "apt-get", "curl", "tee", "vagrant", "chown", "rm", "vagabond", "pip", "install", "ln"),
    "#!/bin/sh\n" + DRAIN + RECORD,
)
# gpg --show-keys prints the key's fingerprint the way GitHub's runner would see HashiCorp's key.
# gpg exports the key that has the runner's fingerprint, as HashiCorp's key file would have it.
STUBS["gpg"] = (
    "#!/bin/sh\n"
    + DRAIN
    + RECORD
    + 'case "$*" in *--export*) for last; do :; done; [ "$last" = "$STUB_FINGERPRINT" ] && echo key;; esac\nexit 0\n'
)
# HashiCorp's suite holds the pinned Vagrant, as `apt-cache madison` shows it.
STUBS["apt-cache"] = (
    "#!/bin/sh\n"
    + RECORD
    + f'[ "$1" = madison ] && echo " vagrant | {install.VAGRANT_VERSION} | https://apt.releases.hashicorp.com '
    'noble/main amd64 Packages"\nexit 0\n'
)
STUBS["python3"] = (
    "#!/bin/sh\n"
    + RECORD
    + 'if [ "$1" = -m ]; then mkdir -p "$3/bin"; for t in vagabond pip; do cp "$(dirname "$0")/$t" "$3/bin/$t"; done; '
    'else exec /usr/bin/python3 "$@"; fi\n'
)
STUBS["vagabond"] = (
    "#!/bin/sh\n"
    + DRAIN
    + RECORD
    # The registry credentials a call was given (the publish step chooses them by catalog).
    + 'printf "%s|%s\\n" "${VAGABOND_REGISTRY_USERNAME:-}" "${VAGABOND_REGISTRY_PASSWORD:-}" >> "$STUB_LOG.creds"\n'
    + (
        'case "$*" in *"list "*--github-output*) printf "kind=mmdebstrap\\nsynced=0\\n";; *"base key"*) '
        'printf "base=vagabond-base-x-0123\\nbase-path=/c\\n";; '
        '*--github-output*) printf "name=\\nversion=\\nstore=\\n";; esac\n'
    )
)


def parse_cli(argv: list[str]):
    """Parse argv with this vagabond's own CLI, down to the subcommand, without running it."""
    command = typer.main.get_command(app)
    ctx = command.make_context("vagabond", list(argv))
    while hasattr(command, "resolve_command"):
        name, command, rest = command.resolve_command(ctx, [*ctx._protected_args, *ctx.args])
        ctx = command.make_context(name, rest, parent=ctx)
    return ctx


def test_parse_cli_rejects_a_typo():
    assert parse_cli(["up", "debian12", "--sync", "/src"]).params["sync"] == "/src"
    from typer._click.exceptions import NoSuchOption

    with pytest.raises(NoSuchOption, match="No such option: --snyc"):
        parse_cli(["up", "debian12", "--snyc", "/src"])


def calls(log: str) -> list[list[str]]:
    return [entry.split("\0") for entry in log.split("\0\n") if entry]


@pytest.mark.parametrize("route", ["hashicorp", "distribution"])
def test_every_step_runs_and_calls_real_options(project, tmp_path, monkeypatch, route):
    """Each `run:` step, in order, under bash -eo pipefail as GitHub runs it, with the matrix's first
    box, the programs it calls recorded: every vagabond call parses with this CLI, the install
    route installs what it should, and a key with the wrong fingerprint stops the job."""
    doc = load(generate(project, "--vagrant-from", route))
    stub_programs(tmp_path, monkeypatch, **STUBS)
    home, temp = tmp_path / "home", tmp_path / "runner-temp"
    home.mkdir()
    temp.mkdir()
    log = tmp_path / "calls"

    def run_job(job: dict, fingerprint: str, variables: dict | None = None) -> subprocess.CompletedProcess:
        log.write_text("")
        files = {k: tmp_path / k.lower() for k in ("GITHUB_ENV", "GITHUB_PATH", "GITHUB_OUTPUT")}
        for f in files.values():
            f.write_text("")
        matrix = job["strategy"]["matrix"]["include"][0]
        env = {
            **os.environ,
            "HOME": str(home),
            "RUNNER_TEMP": str(temp),
            "STUB_LOG": str(log),
            "STUB_FINGERPRINT": fingerprint,
            **{k: str(v) for k, v in files.items()},
        }
        for key, value in {**doc["env"], **job["env"]}.items():
            value = str(value)
            value = re.sub(r"\$\{\{ matrix\.(\w+) \}\}", lambda m: str(matrix[m[1]]), value)
            env[key] = re.sub(r"\$\{\{ (vars|secrets)\.(\w+) \}\}", lambda m: (variables or {}).get(m[2], ""), value)
        env |= {"GITHUB_REPOSITORY": "Example-Org/Project", "GITHUB_ACTOR": "someone"}
        outputs: dict[str, dict[str, str]] = {}
        for step in job["steps"]:
            if "setup-python" in step.get("uses", ""):  # its stand-in: a Python in range, by path
                outputs[step["id"]] = {"python-path": shutil.which("python3", path=env["PATH"])}
            if "run" not in step:
                continue
            assert "${{" not in step["run"], f"{step['name']}: expressions reach a shell only through env"
            step_env = {
                k: re.sub(
                    r"\$\{\{ steps\.([\w-]+)\.outputs\.([\w-]+) \}\}",
                    lambda m: outputs.get(m[1], {}).get(m[2], ""),
                    str(v),
                )
                for k, v in step.get("env", {}).items()
            }
            step_env = {
                k: re.sub(
                    r"\$\{\{ (vars|secrets)\.(\w+) \}\}",
                    lambda m: (variables or {}).get(m[2], ""),
                    v.replace("${{ github.token }}", "ghs_the_jobs_own_token"),
                )
                for k, v in step_env.items()
            }
            files["GITHUB_OUTPUT"].write_text("")
            result = subprocess.run(
                ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", step["run"]],
                env={**env, **step_env},
                cwd=project,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
            )
            if result.returncode != 0:
                return result
            if "id" in step:
                outputs[step["id"]] = dict(
                    line.partition("=")[::2] for line in files["GITHUB_OUTPUT"].read_text().splitlines()
                )
            for line in files["GITHUB_ENV"].read_text().splitlines():
                key, _, value = line.partition("=")
                env[key] = value
            for line in files["GITHUB_PATH"].read_text().splitlines():
                env["PATH"] = f"{line}:{env['PATH']}"
            files["GITHUB_ENV"].write_text("")
            files["GITHUB_PATH"].write_text("")
        return result

    def vagabond_calls(recorded: list[list[str]]) -> list[str]:
        called = []
        for argv in recorded:
            if argv[0] == "sudo":  # sudo's own options, then the program (maybe through env NAME=VALUE)
                argv = argv[1:]
                while argv and argv[0].startswith("-"):
                    argv = argv[1:]
                if argv and argv[0] == "env":
                    argv = argv[1:]
                    while argv and "=" in argv[0]:
                        argv = argv[1:]
            if os.path.basename(argv[0]) == "vagabond":
                parse_cli(argv[1:])  # an option this vagabond lacks fails here
                called.append(argv[1])
        return called

    test_job = doc["jobs"]["test"]
    result = run_job(test_job, install.HASHICORP_FINGERPRINT)
    assert result.returncode == 0, result.stderr
    recorded = calls(log.read_text())
    # (The stand-in runs every step, whatever its if: says: the base is built and imported here.)
    assert vagabond_calls(recorded) == ["prepare", "list", "base", "prebuilt", "base", "import", "test", "destroy"]
    installed = [a for a in recorded if a[:3] == ["sudo", "env", "DEBIAN_FRONTEND=noninteractive"] and "install" in a]
    assert not any(a[:2] == ["sudo", "-E"] for a in recorded)
    if route == "hashicorp":
        assert any(f"vagrant={install.VAGRANT_VERSION}" in a for a in installed)
        pins = [a for a in recorded if a[:3] == ["vagrant", "plugin", "install"]]
        assert pins == [
            ["vagrant", "plugin", "install", "vagrant-libvirt", "--plugin-version", install.VAGRANT_LIBVIRT_VERSION],
        ]
        assert not any("vagrant-libvirt" in a for a in installed), "Ubuntu has no vagrant-libvirt package"
        bad = run_job(test_job, "0" * 40)
        assert bad.returncode == 1 and f"holds no key with fingerprint {install.HASHICORP_FINGERPRINT}" in bad.stdout
        assert not any("vagrant=" in " ".join(a) for a in calls(log.read_text())), (
            "nothing installed from an unchecked key"
        )
    else:
        assert any("vagrant-libvirt" in a and "vagrant" in a for a in installed)
        assert not any(a[0] in ("gpg",) for a in recorded) and not any("hashicorp" in " ".join(a) for a in recorded)
    nightly = run_job(doc["jobs"]["prebuilt"], install.HASHICORP_FINGERPRINT)
    assert nightly.returncode == 0, nightly.stderr
    assert vagabond_calls(calls(log.read_text())) == ["prepare", "list", "base", "prebuilt", "base", "import", "build"]
    creds = Path(f"{log}.creds")

    def publish_with(variables: dict) -> tuple[list[str], str]:
        creds.write_text("")
        publish = run_job(doc["jobs"]["publish"], install.HASHICORP_FINGERPRINT, variables)
        assert publish.returncode == 0, publish.stderr
        (argv,) = [a for a in calls(log.read_text()) if os.path.basename(a[0]) == "vagabond"]
        parse_cli(argv[1:])
        return argv, creds.read_text().strip()

    box = doc["jobs"]["publish"]["strategy"]["matrix"]["include"][0]["box"]
    # By default: this repository's packages on GitHub's registry (lowercase), with the job's token.
    argv, given = publish_with({})
    assert argv[argv.index("--catalog") + 1] == f"oci://ghcr.io/example-org/project/{box}"
    assert given == "someone|ghs_the_jobs_own_token"
    # Another registry gets its own secret, never the job's token.
    argv, given = publish_with({"VAGABOND_CATALOG": "oci://quay.io/org", "VAGABOND_REGISTRY_PASSWORD": "quay-robot"})
    assert argv[argv.index("--catalog") + 1] == f"oci://quay.io/org/{box}" and given == "|quay-robot"
    argv, given = publish_with({"VAGABOND_CATALOG": str(tmp_path / "catalog")})
    assert argv[argv.index("--catalog") + 1] == f"{tmp_path}/catalog/{box}" and given == "|"


def test_use_action_replaces_the_inline_steps(project):
    ref = "example/vagabond@" + "ab" * 20
    doc = load(generate(project, "--use-action", ref))
    steps = doc["jobs"]["test"]["steps"]
    assert [s.get("uses", s.get("name")) for s in steps] == [
        steps[0]["uses"],
        ref,
        "Run the tests in the VM",
        "example/vagabond/cleanup@" + "ab" * 20,
    ]
    assert steps[1]["with"] == {
        "box": "${{ matrix.box }}",
        "sync": "${{ matrix.sync }}",
        "vagrant-from": "${{ env.VAGRANT_FROM }}",
    }
    assert steps[3]["if"] == "always()" and steps[3]["with"]["upload-logs"] == "${{ job.status != 'success' }}"
    assert "prebuilt" in doc["jobs"], "the nightly job keeps its own steps"
    bad = generate(project, "--use-action", "vagabond@v1")
    assert bad.exit_code == 2 and "not OWNER/REPO@REF" in bad.stderr


def test_the_action_files_are_current(tmp_path):
    assert CliRunner().invoke(app, ["ci", "action", "--check", "-o", str(REPO)]).exit_code == 0
    stale = CliRunner().invoke(app, ["ci", "action", "--check", "-o", str(tmp_path)])
    assert stale.exit_code == 2 and "out of date: action.yml, cleanup/action.yml" in stale.stderr
    assert CliRunner().invoke(app, ["ci", "action", "-o", str(tmp_path)]).exit_code == 0
    assert (tmp_path / "action.yml").read_text() == (REPO / "action.yml").read_text()


@pytest.mark.parametrize(
    ("version", "accepted"), [((3, 9), False), ((3, 10), True), ((3, 12), True), ((3, 13), False), ((3, 14), False)]
)
def test_a_runner_python_that_ansible_core_cannot_run_on_stops_the_job_early(project, version, accepted):
    """The install step's own check, with the runner's Python version put in its place."""
    doc = load(generate(project))
    (install_step,) = [s for s in doc["jobs"]["test"]["steps"] if '"$PYTHON" -m venv' in s.get("run", "")]
    (check,) = re.findall(r""""\$PYTHON" -c '(import sys; sys\.exit\(.*?\))'""", install_step["run"])
    assert "sys.version_info[:2]" in check
    result = subprocess.run([sys.executable, "-c", check.replace("sys.version_info[:2]", repr(version))])
    assert (result.returncode == 0) is accepted
    # The Python is setup-python's, never the image's python3 (ubuntu-26.04: 3.14).
    assert (
        install_step["env"]["PYTHON"] == "${{ steps.python.outputs.python-path }}"
        and "python3 " not in install_step["run"]
    )
    (setup,) = [s for s in doc["jobs"]["test"]["steps"] if "setup-python" in s.get("uses", "")]
    assert setup["with"] == {"python-version": "3.12", "update-environment": False}
    assert install.CONTROLLER_PYTHON == ((3, 10), (3, 12)), (
        "ansible-core's controller support matrix for the pinned 2.16"
    )


def test_ci_githubs_options_are_the_settings_fields_declared_once():
    """Each option of `ci github` that shapes the workflow is a Settings field of the same name,
    its default the field's; settings_from makes Settings from them without typer."""
    from dataclasses import fields

    group = typer.main.get_command(app)
    command = group.commands["ci"].commands["github"]
    options = {p.name: p for p in command.params}
    settable = {f.name for f in fields(workflow.Settings)} - {"boxes_dir", "command"}  # worked out, not typed
    assert settable <= set(options), f"fields no option sets: {sorted(settable - set(options))}"
    for name in settable:
        default = options[name].default
        assert default in (None, False) or default == getattr(workflow.DEFAULTS, name), name
    made = workflow.settings_from({"runs_on": "self-hosted", "paths_ignore": "a/**, ,b", "aws_role": None, "force": 1})
    assert made.runs_on == "self-hosted" and made.paths_ignore == ["a/**", "b"]
    assert made.aws_role == "" and made.keep == workflow.DEFAULTS.keep
    assert workflow.settings_from({"paths_ignore": ""}).paths_ignore == []


@pytest.mark.parametrize(
    ("makefile", "detected"),
    [
        ("test:\n\techo\n", "make test"),
        ("test::\n\techo\n", "make test"),
        ("check test: all\n\techo\n", "make test"),
        ("test := x\n", ""),
        ("test ::= x\n", ""),
        ("test ?= x\n", ""),
        ("tests:\n\techo\n", ""),
        ("# test:\n", ""),
    ],
)
def test_a_test_target_is_what_make_would_run(tmp_path, makefile, detected):
    (tmp_path / "Makefile").write_text(makefile)
    assert workflow.detected_test_command(tmp_path) == detected


def test_a_makefile_link_inside_the_project_is_read_one_outside_is_not(tmp_path):
    (tmp_path / "build").mkdir()
    (tmp_path / "build" / "Makefile").write_text("test:\n\techo\n")
    (tmp_path / "Makefile").symlink_to("build/Makefile")
    assert workflow.detected_test_command(tmp_path) == "make test"
    outside = tmp_path.parent / f"{tmp_path.name}-outside.mk"
    outside.write_text("test:\n\techo\n")
    (tmp_path / "GNUmakefile").symlink_to(outside)
    assert workflow.detected_test_command(tmp_path) == "", "GNUmakefile, read first, leads out of the project"


def test_the_actions_warm_cache_is_off_unless_asked_and_saves_only_a_cold_default_branch_push():
    """The warm image's cache entries: off by default (the generated workflow leaves it off: an
    image is the whole VM, and pull requests read the cache); restored by the newest entry of this
    runner image, architecture and box (a box's name has no '.', so no box's prefix is another's);
    exported only after a cold up of a VM given no extra variables, on a push or schedule of the
    default branch, and best effort; saved under the VM's key and the run."""
    action = YAML(typ="safe").load((REPO / "action.yml").read_text())
    assert action["inputs"]["warm-cache"]["default"] == "false"
    steps = {s.get("name"): s for s in action["runs"]["steps"]}
    restore, export, save = (
        steps["Restore the warm image"],
        steps["Export the warm image for the next run"],
        steps["Save the warm image"],
    )
    prefix = "vagabond-warm-${{ steps.paths.outputs.os }}-${{ runner.arch }}-${{ inputs.box }}."
    assert restore["with"]["restore-keys"] == prefix and restore["with"]["key"] == prefix + "${{ github.run_id }}"
    assert save["with"]["key"] == prefix + "${{ steps.up.outputs.warm-key }}-${{ github.run_id }}"
    assert restore["with"]["path"] == save["with"]["path"] == "${{ runner.temp }}/vagabond-warm/${{ inputs.box }}"
    for condition in (
        "inputs.warm-cache == 'true'",
        "inputs.test != 'true'",
        "inputs.extra-vars == ''",
        "steps.up.outputs.restored != 'true'",
        "(github.event_name == 'schedule' || (github.event_name == 'push' && "
        "github.ref_name == github.event.repository.default_branch))",
    ):
        assert condition in export["if"], condition
    assert export["continue-on-error"] is True
    assert save["if"] == "steps.warm-export.outcome == 'success' || steps.up.outputs.exported == 'true'"
    assert '"$RUNNER_TEMP/vagabond-warm/$BOX/warm.tar"' in export["run"]
    up = steps["Bring the VM up (or test in it)"]
    assert 'warm="$RUNNER_TEMP/vagabond-warm/$BOX/warm.tar"' in up["run"]
    assert '--warm-from "$warm"' in up["run"] and "test" not in restore["if"]
    # test: "true": the sequence destroys its VM, so `vagabond test --export` writes the image of a
    # green cold run, under the same rules (the default branch's pushes and schedules, no extra vars).
    assert up["env"]["EVENT"] == "${{ github.event_name }}" and up["env"]["REF_NAME"] == "${{ github.ref_name }}"
    assert up["env"]["DEFAULT_BRANCH"] == "${{ github.event.repository.default_branch }}"
    for condition in (
        '[ "$WARM_CACHE" = true ]',
        '[ -z "$EXTRA_VARS" ]',
        '{ [ "$EVENT" = schedule ] || { [ "$EVENT" = push ] && [ -n "$REF_NAME" ] && '
        '[ "$REF_NAME" = "$DEFAULT_BRANCH" ]; }; }',
    ):
        assert condition in up["run"], condition
    assert 'args+=(--export "$warm")' in up["run"] and 'echo "exported=true" >> "$GITHUB_OUTPUT"' in up["run"]


def test_warm_cache_is_turned_on_in_the_action_jobs_and_said_again_in_the_header(project):
    ref = "example/vagabond@" + "ab" * 20
    text = generate(project, "--use-action", ref, "--test-command", "make check", "--warm-cache").stdout
    steps = YAML(typ="safe").load(text)["jobs"]["test"]["steps"]
    assert steps[1]["uses"] == ref and steps[1]["with"]["warm-cache"] == "true"
    assert "--warm-cache" in text.splitlines()[1], "regenerating keeps it"
    plain = YAML(typ="safe").load(generate(project, "--use-action", ref, "--test-command", "make check").stdout)
    assert "warm-cache" not in plain["jobs"]["test"]["steps"][1]["with"], "off unless asked"


BUILD_STEP = "Build the prebuilt dependency box (as root, for the loop devices of the offline compaction)"


def test_warm_catalog_bakes_a_warm_image_in_the_nightly_build_which_publish_takes_along(project):
    text = generate(project, "--warm-catalog").stdout
    doc = YAML(typ="safe").load(text)
    build = steps_named(doc["jobs"]["prebuilt"])[BUILD_STEP]["run"]
    assert build.rstrip().endswith('build "$BOX" --out dist --logs-on-failure vagabond-logs --warm')
    assert "--warm-catalog" in text.splitlines()[1], "regenerating keeps it"
    publish = [s["run"] for s in doc["jobs"]["publish"]["steps"] if 'vagabond" publish' in s.get("run", "")]
    assert publish and "--no-warm" not in publish[0], "publish takes the warm image the build named"
    plain = load(generate(project))
    assert "--warm" not in steps_named(plain["jobs"]["prebuilt"])[BUILD_STEP]["run"], "off unless asked"


def test_warm_catalog_without_a_nightly_box_is_refused(project):
    workflow_project.make(project)
    result = CliRunner().invoke(
        app, ["ci", "github", "--vagabond-spec", SPEC, "--boxes", "centos7-selinux", "--warm-catalog"]
    )
    assert result.exit_code == 2 and "--warm-catalog is the nightly job's" in " ".join(result.stderr.split())


def test_warm_cache_without_the_action_is_refused_and_without_a_test_command_uses_the_sequence(project):
    inline = generate(project, "--inline", "--test-command", "make check", "--warm-cache")
    assert inline.exit_code == 2 and "--warm-cache is the action's: not with --inline" in inline.stderr
    workflow_project.make(project)
    (project / "Makefile").unlink()  # no test target: each job runs `vagabond test`, which exports its VM
    ref = "example/vagabond@" + "ab" * 20
    result = CliRunner().invoke(app, ["ci", "github", "--vagabond-spec", SPEC, "--use-action", ref, "--warm-cache"])
    steps = load(result)["jobs"]["test"]["steps"]
    assert steps[1]["with"]["test"] == "true" and steps[1]["with"]["warm-cache"] == "true"
