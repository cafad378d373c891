"""-e as vagabond hands it on: ansible-playbook runs in the work directory, so a variables file is
found from where the user typed the command, and a file that is not there stops the run at once."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from vagabond.cli.app import app
from vagabond.errors import UsageError
from vagabond.vm import provision, warmimage


def test_a_relative_variables_file_is_found_from_where_vagabond_was_started(tmp_path):
    (tmp_path / "vars").mkdir()
    (tmp_path / "vars" / "mirror.yml").write_text("x: 1\n")
    given = ["@vars/mirror.yml", "a=1", '{"b": 2}', f"@{tmp_path}/vars/mirror.yml"]
    assert provision.extra_vars(given, cwd=tmp_path) == (
        f"@{tmp_path}/vars/mirror.yml",
        "a=1",
        '{"b": 2}',
        f"@{tmp_path}/vars/mirror.yml",
    )


@pytest.mark.parametrize("name", ["missing.yml", "vars"])
def test_a_variables_file_that_is_not_one_is_refused_before_anything_starts(tmp_path, name):
    (tmp_path / "vars").mkdir()
    with pytest.raises(UsageError, match=rf"-e @{name}: {tmp_path}/{name} is not a file vagabond can read"):
        provision.extra_vars([f"@{name}"], cwd=tmp_path)


def test_up_with_a_missing_variables_file_fails_as_a_usage_error(project, processes):
    result = CliRunner().invoke(app, ["up", "debian12", "-e", "@nowhere.yml"])
    assert result.exit_code == 2, result.output
    assert "-e @nowhere.yml:" in result.output and "is not a file vagabond can read" in result.output
    assert processes.calls == [], "nothing ran"


def test_a_warm_image_key_follows_the_content_of_a_variables_file(tmp_path):
    vars_file = tmp_path / "vars.yml"
    vars_file.write_text("mirror: one\n")
    first = warmimage.extra_vars_digest([f"@{vars_file}"])
    assert warmimage.extra_vars_digest([f"@{vars_file}"]) == first
    vars_file.write_text("mirror: two\n")
    assert warmimage.extra_vars_digest([f"@{vars_file}"]) != first, "changed since: another provisioning"
    assert warmimage.extra_vars_digest(["x=1"]) == warmimage.extra_vars_digest(("x=1",))
