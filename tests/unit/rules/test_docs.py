"""The documentation: its reference pages current with the code, every box-file key and environment
variable described, the site building without a warning, and its console examples still true."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import typing

import pytest
from pydantic import BaseModel

from tests.conftest import REPO
from vagabond import environment
from vagabond.definition import schema

DOCS = REPO / "docs"


def test_the_reference_pages_are_current():
    result = subprocess.run([sys.executable, REPO / "scripts" / "docs.py", "--check"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def _models(model: type[BaseModel], seen: set) -> None:
    if model in seen:
        return
    seen.add(model)
    for field in model.model_fields.values():
        stack = [field.annotation]
        while stack:
            kind = stack.pop()
            if isinstance(kind, typing.ForwardRef):
                kind = getattr(schema, kind.__forward_arg__)
            stack += typing.get_args(kind)
            if isinstance(kind, type) and issubclass(kind, BaseModel):
                _models(kind, seen)


def test_every_box_file_key_says_what_it_is():
    models: set = set()
    _models(schema.BoxSpec, models)
    assert len(models) >= 10, "the walk found the nested models"
    undescribed = [f"{m.__name__}.{name}" for m in models for name, f in m.model_fields.items() if not f.description]
    assert not undescribed, f"keys without a description (the reference shows it): {undescribed}"


def test_every_environment_variable_vagabond_reads_is_listed_and_nothing_else():
    read = set()
    for path in (REPO / "vagabond").rglob("*.py"):
        if path.is_relative_to(REPO / "vagabond" / "ci"):
            continue  # the workflow's and the action's own variables, which vagabond writes, not reads
        text = path.read_text(encoding="utf-8")
        read |= set(re.findall(r"\"(VAGABOND_[A-Z_]+)\"", text))
        read |= {f"VAGABOND_TIMEOUT_{n}" for n in re.findall(r"_setting\([^,]+, \"([A-Z_]+)\",", text)}
    read |= set(re.findall(r"ENV\['(VAGABOND_[A-Z_]+)'\]", (REPO / "Vagrantfile.j2").read_text()))
    read.discard("VAGABOND_PROBE_ROOT")  # the Vagrantfile's, for tests only
    assert read == set(environment.VARIABLES), (
        f"read but not listed: {sorted(read - set(environment.VARIABLES))}; "
        f"listed but not read: {sorted(set(environment.VARIABLES) - read)}"
    )


def test_the_site_builds_without_a_warning(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "site" / "reference" / "commands" / "index.html").is_file()
    assert (tmp_path / "site" / "benchmarks" / "index.html").is_file()
    for page in (tmp_path / "site").rglob("*.html"):
        assert "fonts.googleapis" not in page.read_text(encoding="utf-8"), f"{page} loads Google's fonts"
    # A code block's long line (a trailing comment) wraps in the page instead of running off its edge.
    commands = (tmp_path / "site" / "reference" / "commands" / "index.html").read_text(encoding="utf-8")
    assert "stylesheets/extra.css" in commands
    # The changelog page is CHANGELOG.md itself, drawn in at build time (one file for both).
    changelog = (tmp_path / "site" / "changelog" / "index.html").read_text(encoding="utf-8")
    first_entry = (REPO / "CHANGELOG.md").read_text().split("\n### ", 1)[1].split("\n- ", 1)[1].split()[0:3]
    assert " ".join(first_entry).replace("`", "") in " ".join(re.sub(r"<[^>]+>", "", changelog).split())
    assert "white-space: pre-wrap" in (tmp_path / "site" / "stylesheets" / "extra.css").read_text()


CONSOLE = re.compile(r"```console\n(.*?)```", re.S)
STAMP = re.compile(r"^\d\d:\d\d:\d\d ", re.M)


def console_examples() -> list[tuple[str, list[tuple[str, str]]]]:
    """Per page, its console blocks as (command, expected output) pairs, in order."""
    pages = []
    for page in sorted(DOCS.rglob("*.md")):
        pairs = []
        for block in CONSOLE.findall(page.read_text(encoding="utf-8")):
            for chunk in re.split(r"^\$ ", block, flags=re.M)[1:]:
                command, _, output = chunk.partition("\n")
                pairs.append((command, output))
        if pairs:
            pages.append((str(page.relative_to(DOCS)), pairs))
    return pages


@pytest.mark.parametrize(("page", "examples"), console_examples(), ids=[p for p, _ in console_examples()])
def test_the_console_examples_run_and_say_what_the_page_says(page, examples, tmp_path):
    """Each page's examples, in order, in a new project directory: the output (stdout and stderr,
    without the time stamps) is what the page shows."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VAGABOND_", "CI", "GITHUB_"))}
    env["PATH"] = f"{os.path.dirname(sys.executable)}:{env['PATH']}"
    env["COLUMNS"] = "200"
    for command, expected in examples:
        result = subprocess.run(
            ["sh", "-c", command], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        got = STAMP.sub("", result.stdout)
        assert result.returncode == 0, f"{page}: {command}: {got}"
        assert got == expected, f"{page}: {command}"
    assert examples


def test_the_readme_is_short_and_leads_to_the_docs():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 170
    assert "scripts/install.sh" in text and "scripts/test.sh" in text, "the two set-up commands"
    linked = set(re.findall(r"\(docs/([\w/-]+\.md)\)", text))
    assert linked and all((DOCS / page).is_file() for page in linked)


# The README's measured figures, in the order it gives them: (bench, chart title's start, series).
README_FIGURES = [
    ("boot", "Ready", "vagabond up + run (base box)"),
    ("boot", "Ready", "guest alone: domain start to sshd"),
    ("boot", "Ready", "vagabond up + run (prebuilt box, from the catalog)"),
    ("boot", "One command", "vagabond run BOX -- true"),
    ("boot", "One command", "vagrant ssh -c true"),
    ("warm", "No VM to getenforce", "vagabond up (warm image)"),
    ("warm", "No VM to getenforce", "vagabond up --cold"),
    ("help", "vagabond --help", "vagabond"),
]


def test_the_readme_carries_the_figures_as_measured():
    """Each bold figure of the README's "Measured" section is the median the benchmark's JSON holds."""
    import json
    import statistics

    section = (REPO / "README.md").read_text(encoding="utf-8").split("\n## Measured\n", 1)[1].split("\n## ", 1)[0]
    given = re.findall(r"\*\*([\d.]+) s\*\*", section)
    measured = []
    for bench, title, label in README_FIGURES:
        doc = json.loads((DOCS / "benchmarks" / f"{bench}.json").read_text())
        chart = next(c for c in doc["charts"] if c["title"].startswith(title))
        measured.append(f"{statistics.median(chart['series'][label]):.3g}")
    assert given == measured, "README.md's figures are not what docs/benchmarks/*.json measured"


def test_every_shell_block_in_the_docs_is_valid_shell():
    """A reader pastes these: each sh/bash block parses (bash -n), and no line is a lost
    continuation (a line that starts with an option belongs to the command above it)."""
    blocks = []
    for page in [REPO / "README.md", *sorted(DOCS.rglob("*.md"))]:
        for match in re.finditer(r"^```(?:sh|bash|shell)\n(.*?)^```", page.read_text(), re.MULTILINE | re.DOTALL):
            blocks.append((page.relative_to(REPO), match.group(1)))
    assert len(blocks) > 20, "the docs' shell blocks were not found"
    bad = []
    for page, body in blocks:
        parsed = subprocess.run(["bash", "-n"], input=body, capture_output=True, text=True)
        joined = body.replace("\\\n", " ").splitlines()
        if parsed.returncode or any(line.lstrip().startswith("-") for line in joined):
            bad.append(f"{page}: {body.strip()[:120]!r} {parsed.stderr.strip()[:200]}")
    assert bad == []


def test_every_box_file_the_docs_show_is_valid(tmp_path):
    """A ```yaml block that starts with `# boxes/NAME.yaml` is a box file a reader copies: the
    schema takes it (its playbooks stand in as empty files)."""
    from ruamel.yaml import YAML

    from vagabond.definition import boxfile

    shown = []
    for page in [REPO / "README.md", *sorted(DOCS.rglob("*.md"))]:
        for name, body in re.findall(r"^```yaml\n# boxes/([\w.-]+)\.yaml\n(.*?)^```", page.read_text(), re.M | re.S):
            shown.append((page.relative_to(REPO), name, body))
    assert shown, "no box file shown in the docs"
    for page, name, body in shown:
        project = tmp_path / name
        (project / "boxes").mkdir(parents=True)
        (project / "boxes" / f"{name}.yaml").write_text(body)
        for entry in YAML(typ="safe").load(body).get("playbooks") or []:
            path = project / (entry if isinstance(entry, str) else entry["path"])
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("- hosts: all\n  tasks: []\n")
        assert boxfile.find_box(name, project / "boxes").name == name, page


def _shown_commands() -> list[tuple[str, list[str]]]:
    """Every vagabond command the docs show in a shell or console block (README included), as
    (page, argv after 'vagabond'): a `sudo ... vagabond` prefix and trailing comments dropped."""
    import shlex

    found = []
    for page in [REPO / "README.md", *sorted(DOCS.rglob("*.md"))]:
        text = page.read_text(encoding="utf-8")
        for body in re.findall(r"^```(?:sh|bash|shell|console)\n(.*?)^```", text, re.M | re.S):
            for line in body.replace("\\\n", " ").splitlines():
                line = line.strip().removeprefix("$ ")
                try:
                    words = shlex.split(line, comments=True)
                except ValueError:
                    continue
                for i, word in enumerate(words):
                    if word.endswith("vagabond") or word == "$(command -v vagabond)":
                        rest = words[i + 1 :]
                        ends = [n for n, w in enumerate(rest) if w in ("&&", "||", ";", "|", ">", "2>&1")]
                        found.append((str(page.relative_to(REPO)), rest[: ends[0]] if ends else rest))
                        break
                    if word not in ("sudo", "-E") and not word.startswith("VAGABOND_") and "=" not in word:
                        break
    return found


def test_every_vagabond_command_the_docs_show_parses():
    """Each one names a command that exists, with options it has and the arguments it takes: the
    real CLI parses it (nothing runs). A renamed option or a command that went fails here."""
    import typer
    from typer import _click as click  # typer's own click (vendored since typer 0.25)

    from vagabond.cli.app import app

    shown = _shown_commands()
    assert len(shown) > 40
    root = typer.main.get_command(app)
    bad, parsed = [], 0
    for page, argv in shown:
        if not argv or argv[0].startswith("<") or "CMD" in argv or "COMMAND" in argv or "--help" in argv:
            continue
        try:
            ctx = root.make_context("vagabond", list(argv))
            command, args = root, [*ctx._protected_args, *ctx.args]
            while hasattr(command, "resolve_command") and args:  # a group: its command, then that one's options
                name, command, args = command.resolve_command(ctx, args)
                if command is None:
                    raise click.UsageError(f"no such command {name!r}")
                ctx = command.make_context(name, args, parent=ctx)
                args = [*ctx._protected_args, *ctx.args] if hasattr(command, "resolve_command") else []
            parsed += command is not root
        except click.ClickException as exc:
            bad.append(f"{page}: vagabond {' '.join(argv)}: {exc.format_message()}")
    assert bad == []
    assert parsed > 40, "the parser saw (almost) nothing"


def test_the_getting_started_commands_that_need_no_vm_run_as_the_page_says(tmp_path):
    """The laptop page's project commands, in its order, in a new directory: init, list, render
    (the VM commands after them run in the end-to-end tier: tests/e2e/test_lifecycle.py, test_plain.py)."""
    page = "docs/getting-started/laptop.md"
    runnable = [argv for where, argv in _shown_commands() if where == page and argv[0] in ("init", "list", "render")]
    assert [a[0] for a in runnable] == ["init", "list", "render"], runnable
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VAGABOND_", "CI", "GITHUB_"))}
    env["VAGABOND_CACHE"], env["VAGABOND_STATE"] = str(tmp_path / "cache"), str(tmp_path / "state")
    project = tmp_path / "project"
    project.mkdir()
    for argv in runnable:
        result = subprocess.run(
            [sys.executable, "-m", "vagabond", *argv], cwd=project, env=env, capture_output=True, text=True
        )
        assert result.returncode == 0, f"vagabond {' '.join(argv)}: {result.stderr[-1500:]}"
    assert (project / "boxes" / "debian12-selinux.yaml").is_file()
    assert (project / "Vagrantfile").is_file() and (project / "vagabond-provision" / "site.yml").is_file()
    assert subprocess.run(["ruby", "-c", "Vagrantfile"], cwd=project, capture_output=True).returncode == 0
