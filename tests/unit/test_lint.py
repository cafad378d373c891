"""pyflakes' checks through ruff: an undefined name or a missing import is a crash waiting on a
path no other test happens to take."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import MISSING, REPO


def test_no_undefined_names_or_unused_imports():
    ruff = Path(sys.executable).with_name("ruff")
    if not ruff.exists() and not shutil.which("ruff"):
        pytest.skip(f"{MISSING}: ruff (pip install -e '.[test]')")
    result = subprocess.run([str(ruff) if ruff.exists() else "ruff", "check", "--select", "F", "--output-format", "concise",
                             "vagabond", "tests", "bench"], cwd=REPO, capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
