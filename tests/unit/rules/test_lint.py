"""Formatting and lint are a tool's job: `ruff format` and `ruff check`, with the project's own
configuration (pyproject.toml's [tool.ruff]: the rule set chosen there, 120 columns), over the
package, the tests and the benchmarks. Each is first shown to catch what it is there to catch."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tokenize
from pathlib import Path

import pytest

from tests.conftest import MISSING, REPO

TREES = ["vagabond", "tests", "bench"]


def ruff() -> str:
    local = Path(sys.executable).with_name("ruff")
    if not local.exists() and not shutil.which("ruff"):
        pytest.skip(f"{MISSING}: ruff (pip install -e '.[test]')")
    return str(local) if local.exists() else "ruff"


def test_ruff_check_finds_nothing():
    result = subprocess.run(
        [ruff(), "check", "--output-format", "concise", *TREES], cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format_would_change_nothing():
    result = subprocess.run([ruff(), "format", "--check", *TREES], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_both_catch_what_they_are_for(tmp_path):
    (tmp_path / "pyproject.toml").write_text((REPO / "pyproject.toml").read_text())
    bad = tmp_path / "bad.py"
    bad.write_text("import os\nx=[ 1,2 ]\nprint(undefined_name)\n")
    check = subprocess.run(
        [ruff(), "check", "--output-format", "concise", str(bad)], cwd=tmp_path, capture_output=True, text=True
    )
    assert "F401" in check.stdout and "F821" in check.stdout
    assert subprocess.run([ruff(), "format", "--check", str(bad)], cwd=tmp_path, capture_output=True).returncode == 1


def test_fmt_skip_only_with_a_reason():
    """`# fmt: skip` is for a table that reads better as written, and the line above says so."""
    bare = []
    for tree in TREES:
        for path in (REPO / tree).rglob("*.py"):
            lines = path.read_text().splitlines()
            with path.open() as fh:
                comments = [t for t in tokenize.generate_tokens(fh.readline) if t.type == tokenize.COMMENT]
            for token in comments:
                number = token.start[0]
                if "fmt: skip" in token.string and (number < 2 or not lines[number - 2].strip().startswith("#")):
                    bare.append(f"{path.relative_to(REPO)}:{number}")
    assert bare == [], "say why on the line above: # a table reads better as written"
