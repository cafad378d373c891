"""An installed wheel, in a fresh venv outside the repository, still finds its template and boxes."""

from __future__ import annotations

import json
import os
import sys
import venv
from pathlib import Path

import pytest

from tests.conftest import REPO
from vagabond import process

pytestmark = pytest.mark.real


def test_wheel_in_fresh_venv(tmp_path_factory):
    dist = tmp_path_factory.mktemp("dist")
    process.run([sys.executable, "-m", "build", "--wheel", "--outdir", dist, REPO], timeout=600)
    (wheel,) = dist.glob("vagabond-*.whl")
    env_dir = tmp_path_factory.mktemp("venv")
    assert REPO not in env_dir.parents
    venv.create(env_dir, with_pip=True)
    py = env_dir / "bin" / "python"
    process.run([py, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", wheel], timeout=900)

    work = tmp_path_factory.mktemp("elsewhere")  # no boxes/ here: the shipped boxes must be found
    env = {k: v for k, v in os.environ.items() if k not in ("VAGABOND_BOXES", "PYTHONPATH", "VIRTUAL_ENV")}
    exe = str(env_dir / "bin" / "vagabond")
    listed = json.loads(process.run([exe, "list", "--json"], cwd=work, env=env).stdout)
    assert {"centos7-selinux", "alma9-fips", "debian12", "debian12-selinux"} <= {b["name"] for b in listed}
    assert all(Path(b["path"]).is_relative_to(env_dir) for b in listed), "boxes came from the checkout, not the wheel"

    process.run([exe, "render", "centos7-selinux", "--driver", "qemu", "-o", work / "Vagrantfile"], cwd=work, env=env)
    text = (work / "Vagrantfile").read_text()
    assert "config.vm.box = 'centos/7'" in text and "libvirt.driver = vagabond_driver" in text
    # The playbooks travel with the wheel too.
    site = process.run([py, "-c", "import vagabond.paths as p; print(p.shipped_playbooks_dir())"], cwd=work).stdout
    assert (Path(site.strip()) / "modes" / "selinux.yml").is_file()
