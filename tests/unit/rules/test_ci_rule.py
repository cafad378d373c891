"""Under CI a real test that skips because a tool is missing fails instead (tests/conftest.py)."""

from __future__ import annotations

import pytest

from tests.conftest import REPO

pytest_plugins = ["pytester"]

MISSING_TOOL_TEST = """
from tests.conftest import require_tool

def test_needs_a_tool():
    require_tool("no-such-tool-anywhere")
"""


@pytest.fixture
def suite(pytester):
    pytester.makepyfile(test_tool=MISSING_TOOL_TEST)
    pytester.syspathinsert(REPO)
    (pytester.path / "conftest.py").write_text((REPO / "tests" / "conftest.py").read_text())
    return pytester


def test_a_missing_tool_is_a_loud_skip_on_a_laptop(suite, monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    result = suite.runpytest_subprocess("-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*REAL TOOL MISSING: no-such-tool-anywhere not installed*"])


def test_a_missing_tool_fails_under_ci(suite, monkeypatch):
    monkeypatch.setenv("CI", "true")
    result = suite.runpytest_subprocess("-rf")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*under CI a real tool that is missing fails the test*"])
