"""Shared fixtures: the three tiers (unit, process seam, real) all start from here."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests import lanes
from vagabond import redaction

REPO = Path(__file__).resolve().parent.parent

# Vagrant phones home for version checks unless told not to; tests never talk to the internet.
os.environ["VAGRANT_CHECKPOINT_DISABLE"] = "1"

# Read before any fixture changes the environment: is this a CI run, and which network namespace
# holds the VMs (scripts/sandbox.sh) for the tests that boot them.
UNDER_CI = os.environ.get("CI", "").lower() in ("true", "1")
NETNS = os.environ.get("VAGABOND_NETNS") or "vagabond"
MISSING = "REAL TOOL MISSING"


@pytest.fixture(autouse=True)
def not_under_ci(monkeypatch):
    """Tests run alike on a laptop and in CI: what vagabond does differently under CI (logs on
    failure, GitHub log groups) is switched on by the tests that check it. Programs start where
    the test runs unless a test puts them in the VMs' namespace (VAGABOND_NETNS) itself."""
    for name in ("CI", "GITHUB_ACTIONS", "GITHUB_STEP_SUMMARY", "VAGABOND_LOGS_ON_FAILURE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("VAGABOND_NETNS", "")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Under CI a missing real tool is a failure, not a skip: the install step must provide every
    tool, and a real tier that skipped everything would pass without testing anything."""
    outcome = yield
    report = outcome.get_result()
    if UNDER_CI and report.skipped and MISSING in str(report.longrepr):
        report.outcome = "failed"
        report.longrepr = f"{report.longrepr}\n(under CI a real tool that is missing fails the test)"


@pytest.hookimpl(optionalhook=True)  # (a pytest-xdist hook: without it, no lanes)
def pytest_xdist_make_scheduler(config, log):
    """pytest-xdist's scheduler by scope, each lane one scope (tests/lanes.py): a lane's tests go to
    one worker, in file order; a test of no lane is a scope of its own, for whichever worker is free.
    The biggest scope goes out first."""
    from xdist.scheduler import LoadScopeScheduling

    class LaneScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return lanes.lane(nodeid.split("::", 1)[0]) or nodeid

    return LaneScheduling(config, log)


@pytest.fixture(autouse=True)
def _forget_secrets():
    """Secrets registered by one test (from its AWS_* variables) must not mask another test's output."""
    yield
    redaction.forget_all()


@pytest.fixture
def project(tmp_path, monkeypatch):
    """An empty project directory as cwd, with boxes/ and playbooks/ ready for box files."""
    (tmp_path / "boxes").mkdir()
    (tmp_path / "playbooks").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("VAGABOND_BOXES", raising=False)
    monkeypatch.delenv("VAGABOND_DRIVER", raising=False)
    return tmp_path


def write_box(project: Path, name: str, text: str) -> Path:
    path = project / "boxes" / f"{name}.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def stub_programs(tmp_path: Path, monkeypatch, **scripts: str) -> Path:
    """Executables named after the keywords, first on PATH (the process seam: what vagabond runs
    is a script the test wrote)."""
    bin_dir = tmp_path / "stub-bin"
    bin_dir.mkdir(exist_ok=True)
    for name, text in scripts.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    return bin_dir


def require_tool(*names: str) -> None:
    """Skip, loudly, when a real tool is truly absent (the real tier is meant to run in CI)."""
    missing = [n for n in names if not shutil.which(n)]
    if missing:
        pytest.skip(f"{MISSING}: {', '.join(missing)} not installed (run scripts/install.sh)")


from tests.fake_process import processes  # noqa: E402, F401 - the shared process stand-in, a fixture for every tier
