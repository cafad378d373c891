"""`vagabond ci github`: a GitHub Actions workflow that gets the project's boxes into CI as they are.

The workflow is rendered from templates/github-workflow.yml.j2 with its own delimiters (<< >>,
<% %>), since `${{ }}` belongs to GitHub. Every value from the user or a box file reaches the
YAML through `tojson` (a JSON string is a YAML string) or through an environment variable a step
reads; none is spliced into a shell script.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from pathlib import Path

import jinja2

from vagabond import __version__
from vagabond.boxes import Box
from vagabond.errors import UsageError

TEMPLATE = Path(__file__).with_name("templates") / "github-workflow.yml.j2"

# Ubuntu's packages: the same stack vagabond is built on (Vagrant and vagrant-libvirt from the distribution).
APT_PACKAGES = [
    "vagrant", "vagrant-libvirt", "libvirt-daemon-system", "libvirt-clients", "qemu-system-x86", "qemu-utils",
    "dnsmasq-base", "iptables", "mmdebstrap", "cloud-image-utils", "openssh-client", "rsync", "python3-venv",
]  # fmt: skip


# Actions pinned to the commit of a release (a tag can be moved; a commit cannot).
ACTIONS = {
    "checkout": "actions/checkout@11bd71901bbe5b1630ceea73d27597364c9af683  # v4.2.2",
    "cache": "actions/cache@5a3ec84eff668545956fd18022155c47e93e2684  # v4.2.3",
    "upload_artifact": "actions/upload-artifact@ea165f8d65b6e75b540449e92b4886f43607fa02  # v4.6.2",
}


@dataclass
class Settings:
    runs_on: str = "ubuntu-24.04"
    test_command: str = "make test"
    vagabond_spec: str = f"vagabond=={__version__}"
    cron: str = "17 3 * * *"
    keep: int = 5
    timeout: int = 120
    command: str = "vagabond ci github"


@dataclass
class _Job:
    name: str
    file: str  # the box file, relative to the repository root (its hash keys the cache)
    test_dir: str


def _install_step(spec: str) -> str:
    packages = " ".join(APT_PACKAGES)
    return "\n".join([
        "      - name: Install Vagrant, vagrant-libvirt, libvirt, qemu and vagabond",
        "        env:",
        f"          VAGABOND_SPEC: {json.dumps(spec)}",
        "        run: |",
        "          apt-get update -q",
        f"          apt-get install -y -q --no-install-recommends {packages}",
        "          python3 -m venv /opt/vagabond",
        '          /opt/vagabond/bin/pip install --quiet "$VAGABOND_SPEC"',
        "          ln -sf /opt/vagabond/bin/vagabond /usr/local/bin/vagabond",
    ])  # fmt: skip


def render(boxes: list[Box], settings: Settings) -> str:
    if not boxes:
        raise UsageError("no boxes to put in the workflow", hint="add boxes/<name>.yaml or pass --boxes")
    jobs = []
    for box in boxes:
        if not box.spec.synced_folders:
            raise UsageError(
                f"box {box.name!r} has no synced_folders: the VM would not see the code to test",
                hint=f"add e.g. 'synced_folders: [{{src: ., dest: /src}}]' to {box.path.name}",
            )
        jobs.append(_Job(box.name, f"{box.path.parent.name}/{box.path.name}", box.spec.synced_folders[0].dest))
    env = jinja2.Environment(
        variable_start_string="<<", variable_end_string=">>", block_start_string="<%", block_end_string="%>",
        trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True, undefined=jinja2.StrictUndefined,
        autoescape=False,
    )  # fmt: skip
    template = env.from_string(TEMPLATE.read_text())
    text = template.render(
        version=__version__,
        actions=ACTIONS,
        command=settings.command,
        boxes=jobs,
        nightly=[j for j, b in zip(jobs, boxes) if b.spec.prebuilt is not None],
        runs_on=settings.runs_on,
        test_command=settings.test_command,
        install=_install_step(settings.vagabond_spec),
        cron=settings.cron,
        keep=int(settings.keep),
        timeout=int(settings.timeout),
    )
    return text.rstrip("\n") + "\n"


def command_line(boxes: list[str], settings: Settings, output: Path | None) -> str:
    """The command that regenerates this workflow, written into its header."""
    argv = ["vagabond", "ci", "github", "--boxes", ",".join(boxes)]
    defaults = Settings()
    for flag, attr in (("--runs-on", "runs_on"), ("--test-command", "test_command"), ("--vagabond-spec", "vagabond_spec"),
                       ("--cron", "cron"), ("--keep", "keep"), ("--timeout", "timeout")):  # fmt: skip
        if getattr(settings, attr) != getattr(defaults, attr):
            argv += [flag, str(getattr(settings, attr))]
    if output:
        argv += ["-o", str(output)]
    return " ".join(shlex.quote(a) for a in argv).replace("\n", " ")
