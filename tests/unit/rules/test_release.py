"""A release that can happen: the wheel and the sdist this repository builds pass `twine check
--strict` with the twine the release workflow uploads with (the same pin), the workflow releases
only commits on the default branch, and the license and changelog are there."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
from ruamel.yaml import YAML

from tests.conftest import REPO

RELEASE = REPO / ".github" / "workflows" / "release.yml"


def twine_pin() -> str:
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["test"]
    (pin,) = [e for e in extras if e.startswith("twine")]
    return pin


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    """sdist and wheel, built as the release's build job does (python -m build), from the tracked files."""
    source = tmp_path_factory.mktemp("source")
    tracked = subprocess.run(["git", "-C", REPO, "ls-files", "-z"], capture_output=True, text=True, check=True)
    for rel in tracked.stdout.split("\0"):
        if rel and (REPO / rel).is_file():
            (source / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, source / rel)
    out = tmp_path_factory.mktemp("dist")
    # --no-isolation: hatchling is in the test extra (this tier downloads nothing).
    build = [sys.executable, "-m", "build", "--no-isolation", "--outdir", out, source]
    done = subprocess.run(build, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return out


def test_twine_check_strict_passes_on_the_wheel_and_the_sdist(dist):
    built = sorted(p.name for p in dist.iterdir())
    assert len(built) == 2 and built[0].endswith("-py3-none-any.whl") and built[1].endswith(".tar.gz"), built
    twine = Path(sys.executable).with_name("twine")
    version = subprocess.run([twine, "--version"], capture_output=True, text=True, check=True).stdout
    assert version.startswith(f"twine version {twine_pin().split('==')[1]} "), "the release's own twine"
    done = subprocess.run([twine, "check", "--strict", *dist.iterdir()], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("PASSED") == 2, done.stdout


def test_the_wheel_says_its_license(dist):
    import zipfile

    (wheel,) = dist.glob("*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        meta = zf.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert "License-Expression: Apache-2.0" in meta
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names), "the license file travels with the wheel"


def test_the_release_workflow_uploads_with_the_checked_twine_from_the_default_branch_only():
    text = RELEASE.read_text()
    doc = YAML(typ="safe").load(text)
    assert "gh-action-pypi-publish" not in text.replace("pypa/gh-action-pypi-publish: that action", "")
    pins = set(re.findall(r'"(twine==[^"]+)"', text))
    assert pins == {twine_pin()}, "the release checks and uploads with the twine the unit tier checks with"
    build = doc["jobs"]["build"]["steps"]
    assert build[0]["with"]["fetch-depth"] == 0
    guard = next(s for s in build if s.get("name") == "The tag is on the default branch")
    assert guard["env"]["DEFAULT_BRANCH"] == "${{ github.event.repository.default_branch }}"
    assert 'git merge-base --is-ancestor "$GITHUB_SHA" "refs/remotes/origin/$DEFAULT_BRANCH"' in guard["run"]
    names = [s.get("name") for s in build]
    assert names.index("The tag is on the default branch") < names.index("Build, and check what PyPI will be sent")
    assert 'twine" check --strict dist/*' in next(s for s in build if s.get("name", "").startswith("Build"))["run"]
    upload = next(s for s in doc["jobs"]["pypi"]["steps"] if s.get("name", "").startswith("Upload to PyPI"))
    assert 'twine" upload --non-interactive dist/*' in upload["run"]
    assert "password" not in upload["run"].lower() and "TWINE_PASSWORD" not in str(upload.get("env"))
    assert doc["jobs"]["pypi"]["permissions"] == {"id-token": "write"}


def test_the_tag_guard_refuses_a_commit_off_the_default_branch(tmp_path):
    """The guard's own shell, in a repository whose tag is on a side branch, then on main."""
    guard = next(
        s
        for s in YAML(typ="safe").load(RELEASE.read_text())["jobs"]["build"]["steps"]
        if s.get("name", "").startswith("The tag is on")
    )["run"]
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    subprocess.run([*git, "init", "-q", "-b", "main"], check=True)
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "one"], check=True)
    subprocess.run([*git, "update-ref", "refs/remotes/origin/main", "HEAD"], check=True)
    subprocess.run([*git, "checkout", "-q", "-b", "side"], check=True)
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "two"], check=True)
    side = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    main = subprocess.run([*git, "rev-parse", "main"], capture_output=True, text=True, check=True).stdout.strip()

    def run(sha: str) -> subprocess.CompletedProcess:
        env = {"PATH": "/usr/bin:/bin", "GITHUB_SHA": sha, "DEFAULT_BRANCH": "main", "TAG": "v9.9.9"}
        return subprocess.run(
            ["bash", "-eo", "pipefail", "-c", guard], cwd=tmp_path, env=env, capture_output=True, text=True
        )

    refused = run(side)
    assert refused.returncode == 1
    assert refused.stdout == "::error title=release::v9.9.9 is not on main: releases are made only from its commits\n"
    assert run(main).returncode == 0


def test_license_and_changelog():
    assert (REPO / "LICENSE").read_text().lstrip().startswith("Apache License\n                           Version 2.0")
    assert tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["license"] == "Apache-2.0"
    changelog = (REPO / "CHANGELOG.md").read_text()
    assert changelog.startswith("# Changelog\n") and "\n## Unreleased\n" in changelog
