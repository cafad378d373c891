"""The suite's two lanes: scripts/test.sh runs the whole suite on two pytest-xdist workers, one per
core of a CI machine, where a VM under software emulation keeps one core busy.

- `host`: what uses this host's libvirt (the sandbox's), its Vagrant home, vagabond's record, the
  shared cache or the end-to-end tier's fixed ports: the e2e tier and the real tier's Vagrant,
  libvirt and catalog tests, on one worker, one at a time, in file order, as when it runs alone.
- `twin`: the twins of GitHub's runner, each a host of its own (a root file system, network, mount
  and PID namespaces, its own libvirtd and VM, its own Vagrant home): none of it is the host lane's.
- no lane: the unit tier and the real tests below, which use nothing the lanes share (files under
  their own temporary directory, namespaces and ports of their own), on whichever worker is free.

A real test module is in the host lane unless it is named here: a new one shares nothing by
mistake. tests/unit/rules/test_lanes.py holds the modules named here to what they say.
"""

from __future__ import annotations

HOST = "host"
TWIN = "twin"

TWIN_MODULES = frozenset({"tests/integration/test_workflow_steps_real.py"})

# Real test modules that share nothing with either lane, and why.
UNSHARED = {
    "tests/integration/test_catalog_real.py": "catalogs on free ports; a Vagrant home, cache, record of its own",
    "tests/integration/test_oci_real.py": "registries on ports it picks free, a Vagrant home and cache of its own",
    "tests/integration/test_detect_real.py": "reads the host's CPU flags and /dev/kvm, changes nothing",
    "tests/integration/test_docs_site_real.py": "builds the site in its own directory, serves it in its own namespace",
    "tests/integration/test_galaxy_real.py": "ansible-galaxy against a local directory of its own",
    "tests/integration/test_images_real.py": "loop devices of its own disk images, under its own directory",
    "tests/integration/test_mode_playbooks_real.py": "ansible-playbook in check mode against stub programs",
    "tests/integration/test_wheel.py": "builds and installs the wheel in directories of its own",
    "tests/integration/test_workflow_lint.py": "linters over generated files of its own",
}


def lane(path: str) -> str | None:
    """The lane of the test module at `path` (relative to the repository, with slashes)."""
    if path in TWIN_MODULES:
        return TWIN
    if path.startswith("tests/unit/") or path in UNSHARED:
        return None
    return HOST
