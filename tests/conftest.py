"""Shared fixtures: the three tiers (unit, process seam, real) all start from here."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# Vagrant phones home for version checks unless told not to; tests never talk to the internet.
os.environ["VAGRANT_CHECKPOINT_DISABLE"] = "1"


@pytest.fixture(autouse=True)
def not_under_ci(monkeypatch):
    """Tests run alike on a laptop and in CI: what vagabond does differently under CI (logs on
    failure, GitHub log groups) is switched on by the tests that check it."""
    for name in ("CI", "GITHUB_ACTIONS", "GITHUB_STEP_SUMMARY", "VAGABOND_LOGS_ON_FAILURE"):
        monkeypatch.delenv(name, raising=False)


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


def require_tool(*names: str) -> None:
    """Skip, loudly, when a real tool is truly absent (the real tier is meant to run in CI)."""
    missing = [n for n in names if not shutil.which(n)]
    if missing:
        pytest.skip(f"REAL TOOL MISSING: {', '.join(missing)} not installed (run scripts/install.sh)")
