"""`vagabond run`: the fast path's parser, and the real entry point execing a stub ssh."""

from __future__ import annotations

import json
import os
import shlex
import stat
import subprocess
import sys

import pytest

from vagabond.cli import quickrun

STUB_SSH = """#!/bin/sh
printf '%s\\n' "$@" > "$SSH_ARGS_LOG"
exit 42
"""


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["b", "--", "ls", "-l"], {"box": "b", "workdir": None, "machine": None, "command": ["ls", "-l"]}),
        (
            ["--workdir", "/w", "b", "-m", "db", "--", "x"],
            {"box": "b", "workdir": "/w", "machine": "db", "command": ["x"]},
        ),
        (
            ["b", "--machine=web", "--", "--", "-x"],
            {"box": "b", "workdir": None, "machine": "web", "command": ["--", "-x"]},
        ),
    ],
)
def test_parse(argv, expected):
    assert quickrun.parse(argv) == expected


@pytest.mark.parametrize(
    "argv", [["--help"], ["b"], ["b", "--"], ["b", "--bogus", "--", "x"], ["b", "c", "--", "x"], ["b", "--workdir"]]
)
def test_parse_leaves_the_rest_to_the_full_cli(argv):
    assert quickrun.parse(argv) is None


@pytest.fixture
def up_box(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    ssh = bin_dir / "ssh"
    ssh.write_text(STUB_SSH)
    ssh.chmod(ssh.stat().st_mode | stat.S_IEXEC)
    wd = tmp_path / ".vagabond" / "debian12"
    wd.mkdir(parents=True)
    (wd / "ssh_config").write_text("Host default\n  HostName 192.0.2.1\n")
    (wd / "state.json").write_text(json.dumps({"primary": "default", "env": {"APP": "x y"}}))
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", SSH_ARGS_LOG=str(tmp_path / "args"))
    return tmp_path, env


@pytest.mark.parametrize("fast", [True, False], ids=["fast-path", "full-cli"])
def test_run_execs_ssh_and_returns_its_exit_code(up_box, fast):
    cwd, env = up_box
    # "--debug" before "run" sends the call through typer: both paths must behave the same.
    prefix = [] if fast else ["--debug"]
    result = subprocess.run(
        [sys.executable, "-m", "vagabond", *prefix, "run", "debian12", "--", "echo", "a b", "$X"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 42, result.stderr
    args = (cwd / "args").read_text().splitlines()
    assert args[:4] == ["-F", str(cwd / ".vagabond" / "debian12" / "ssh_config"), "-q", "-T"]
    assert args[4:6] == ["default", "--"]
    assert shlex.split(args[6]) == ["env", "APP=x y", "--", "echo", "a b", "$X"]


def test_run_before_up_is_a_clear_error(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "vagabond", "run", "debian12", "--", "true"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=dict(os.environ, VAGABOND_BOXES=""),
    )
    assert result.returncode == 6, "not up: the exit-code page's 6, which a script tells from the command's failure"
    workdir = tmp_path / ".vagabond" / "debian12"
    assert result.stderr == f"error: box 'debian12' is not up here ({workdir}) (run 'vagabond up debian12' first)\n"
