"""Commands that write continuous integration: `ci github`, `ci action`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from vagabond import errors, ui
from vagabond.ci import workflow
from vagabond.cli.common import (
    _selected_boxes,
    _state,
    app,
)

ci_app = typer.Typer(
    help="Continuous integration: generate the workflow that runs your boxes in CI.", no_args_is_help=True
)
app.add_typer(ci_app, name="ci")


@ci_app.command("github")
def ci_github(
    ctx: typer.Context,
    boxes_opt: Annotated[
        Optional[list[str]], typer.Option("--boxes", help="Boxes to test, comma-separated or repeated (default: all).")
    ] = None,
    output: Annotated[
        Optional[Path],
        typer.Option(
            "-o", "--out", "--output", help="Write here, e.g. .github/workflows/vagabond.yml (default: stdout)."
        ),
    ] = None,
    test_command: Annotated[
        Optional[str],
        typer.Option(
            "--test-command",
            help="Shell command that runs the tests, in the box's first synced folder (default: 'make test' when "
            "the project's Makefile has a test target; else none, and each job runs the box's verify commands).",
            show_default=False,
        ),
    ] = None,
    runs_on: Annotated[
        str, typer.Option("--runs-on", help="GitHub runner label (ubuntu-24.04, ubuntu-26.04, or a self-hosted one).")
    ] = workflow.DEFAULTS.runs_on,
    vagabond_spec: Annotated[
        Optional[str],
        typer.Option(
            "--vagabond-spec",
            help="What the runner pip-installs: a pinned git URL, a wheel URL, "
            "or vagabond-vm==VERSION (default: this vagabond, as it was installed).",
        ),
    ] = None,
    vagrant_from: Annotated[
        str,
        typer.Option(
            "--vagrant-from",
            help="hashicorp (Ubuntu: HashiCorp's apt repository + the plugin) or "
            "distribution (Debian runners: Debian's vagrant and vagrant-libvirt).",
        ),
    ] = workflow.DEFAULTS.vagrant_from,
    branch: Annotated[
        str, typer.Option("--branch", help="The branch whose pushes run the tests (pull requests always do).")
    ] = workflow.DEFAULTS.branch,
    paths_ignore: Annotated[
        Optional[str],
        typer.Option(
            "--paths-ignore",
            help="Comma-separated globs whose changes run nothing ('' for none; "
            f"default: {','.join(workflow.PATHS_IGNORE)}).",
        ),
    ] = None,
    cron: Annotated[
        str, typer.Option("--cron", help="When the nightly prebuilt-box job runs (UTC).")
    ] = workflow.DEFAULTS.cron,
    keep: Annotated[
        int, typer.Option("--keep", min=1, help="Prebuilt versions kept in the catalog.")
    ] = workflow.DEFAULTS.keep,
    environment: Annotated[
        str, typer.Option("--environment", help="GitHub environment holding the publish step's secrets.")
    ] = workflow.DEFAULTS.environment,
    aws_role: Annotated[
        Optional[str],
        typer.Option("--aws-role", help="IAM role ARN the publish step assumes by OIDC (no stored keys)."),
    ] = None,
    s3_acl: Annotated[
        Optional[str],
        typer.Option("--s3-acl", help="Canned ACL for published S3 objects (buckets made since 2023 refuse ACLs)."),
    ] = None,
    timeout: Annotated[
        int, typer.Option("--timeout", min=10, help="Job timeout in minutes.")
    ] = workflow.DEFAULTS.timeout,
    use_action: Annotated[
        Optional[str],
        typer.Option(
            "--use-action",
            metavar="OWNER/REPO@REF",
            help="Test jobs use vagabond's action (uses: OWNER/REPO@REF) instead of inline steps "
            "(default: the action at this vagabond's commit, when its GitHub repository is known).",
        ),
    ] = None,
    inline: Annotated[
        bool,
        typer.Option(
            "--inline", help="Inline install steps in the test jobs, even where vagabond's action could be used."
        ),
    ] = False,
    warm_cache: Annotated[
        bool,
        typer.Option(
            "--warm-cache",
            help="Test jobs restore the provisioned VM from a warm image in the Actions cache, which a cold run "
            "on the default branch saves (the action's warm-cache; an image is the whole VM, and pull "
            "requests' runs read the cache). Needs the action.",
        ),
    ] = False,
    warm_catalog: Annotated[
        bool,
        typer.Option(
            "--warm-catalog",
            help="The nightly job also bakes the provisioned VM's warm image (build --warm), which publish puts "
            "in the catalog beside the box: test jobs on the same kind of runner restore it instead of booting "
            "(under KVM, only on a runner with the same CPU model).",
        ),
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Overwrite an existing file that vagabond did not generate.")
    ] = False,
) -> None:
    """Write a GitHub Actions workflow: a runner per box boots it, runs the tests, keeps logs on failure.

    Pull requests, pushes to --branch and tags: install Vagrant (HashiCorp's apt repository, key
    checked), vagrant-libvirt (a cached plugin), libvirt, qemu and this vagabond; 'sudo vagabond
    prepare' (KVM access, swap, libvirt, the runner user let in); restore cached boxes; 'vagabond up',
    the test command through 'vagabond run' as the runner user, logs uploaded on failure, 'vagabond
    destroy' always. Boxes with a prebuilt: section also get a nightly job, from the default branch
    only, that builds their dependency box and publishes it: by default to this repository's
    packages on GitHub's registry (oci://ghcr.io/OWNER/REPO/BOX) with the job's own token, no
    secret to create; the repository variable VAGABOND_CATALOG names another catalog (its
    credentials in the publish environment).

    Example: vagabond ci github --boxes centos7-selinux,alma9-fips --test-command 'make check'
    -o .github/workflows/vagabond.yml
    """
    from vagabond.definition import project
    from vagabond.host import install

    chosen = _selected_boxes(boxes_opt)
    if test_command is not None and not test_command.strip():
        raise errors.UsageError(
            "--test-command is empty", hint="give the command that runs the tests, or leave the option out"
        )
    settings = workflow.settings_from(ctx.params | {"test_command": test_command or None})
    if _state["boxes_dir"] is not None:
        workflow.check_line("--boxes-dir", str(_state["boxes_dir"]))
        root, given = project.project_root(), Path(_state["boxes_dir"]).resolve()
        if not given.is_relative_to(root):
            raise errors.UsageError(
                f"--boxes-dir {_state['boxes_dir']}: outside the repository ({root}), where the runner cannot see it"
            )
        settings.boxes_dir = given.relative_to(root).as_posix()
    if inline and use_action:
        raise errors.UsageError("--inline and --use-action contradict each other", hint="give one of them")
    if warm_cache and inline:
        raise errors.UsageError("--warm-cache is the action's: not with --inline", hint="leave out --inline")
    workflow.check_settings(settings, output)  # bad input is said before anything is looked up
    settings.command = workflow.command_line(
        [b.name for b in chosen], settings, output
    )  # as typed: it regenerates this file
    if not vagabond_spec and not (use_action and not workflow.nightly_boxes(chosen)):
        source = install.origin()  # what the runner installs: a source that exists, or a one-line refusal
        settings.vagabond_spec = source.spec
        if not use_action and not inline and source.action:
            settings.use_action = source.action
        if source.note:
            ui.info(f"note: {source.note}")
    if test_command is None:  # after the header's command line: regenerating detects again
        settings.test_command = workflow.detected_test_command(project.project_root())
        if not settings.test_command:
            ui.info(
                "note: no Makefile with a test target here: each job runs the box's verify commands "
                "(vagabond test); give --test-command 'CMD' to run your tests in the VM"
            )
    if warm_catalog and not workflow.nightly_boxes(chosen):
        raise errors.UsageError(
            "--warm-catalog is the nightly job's, and no box here has a prebuilt: section",
            hint="add a prebuilt: section to the box file",
        )
    if warm_cache and not settings.use_action:
        raise errors.UsageError("--warm-cache is the action's, and these jobs do not use it", hint="give --use-action")
    text = workflow.render(chosen, settings)
    if output is None:
        sys.stdout.write(text)
        return
    workflow.write(output, text, force=force)
    ui.info(f"wrote {output} ({len(chosen)} box{'es' if len(chosen) != 1 else ''})")


@ci_app.command("action")
def ci_action(
    out: Annotated[Path, typer.Option("-o", "--out", help="vagabond's repository (where action.yml goes).")] = Path(
        "."
    ),
    check: Annotated[
        bool, typer.Option("--check", help="Only say whether the files are current (exit 1 if not).")
    ] = False,
) -> None:
    """Write vagabond's own GitHub Action (action.yml) and its cleanup companion (cleanup/action.yml).

    For maintainers of vagabond: the action runs the same install steps as 'vagabond ci github'
    writes, from one template; run this after changing them.
    """
    from vagabond import files
    from vagabond.ci import workflow

    stale = []
    for rel, text in workflow.render_action().items():
        target = out / rel
        if target.is_file() and target.read_text() == text:
            continue
        stale.append(rel)
        if not check:
            files.write_text(target, text)
    if check and stale:
        raise errors.UsageError(
            f"out of date: {', '.join(stale)}", hint="run 'vagabond ci action' in vagabond's repository"
        )
    ui.info(("wrote " if stale else "up to date: ") + ", ".join(stale or workflow.ACTION_FILES))
