"""The generated workflow's own shell steps, in order, in a fresh Debian 12 root file system made by
mmdebstrap: the runner image, as far as the steps rely on it (sudo, curl, gpg, python3, git).

Nothing here reaches the internet. The steps run in a private network, mount and PID namespace,
chrooted, as an unprivileged `runner` user with passwordless sudo, with the groups it had when the
job started (as on GitHub, where the runner's session predates `prepare --user`). The steps that
would download are pointed at local stand-ins that behave the same:
- HashiCorp's apt repository: a local apt repository holding Debian's vagrant, its Release file
  signed with a key made for the test; the workflow checks that key's fingerprint;
- `vagrant plugin install vagrant-libvirt`: Debian's vagrant-libvirt package (rubygems.org is out
  of reach), through a `vagrant` wrapper that records the plugin version the workflow asked for;
- Debian's and Ubuntu's archive: a local repository of exactly the packages mmdebstrap resolved
  for the names the workflow installs (a misspelt package fails that resolution);
- PyPI: a directory holding the vagabond wheel built from this checkout and its dependencies.
Steps that boot a VM (base build, test) are not run here: the e2e tier boots VMs with the same
commands. Every other run: step runs, and afterwards the runner user must reach libvirt and see
the plugin without sudo.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from tests import workflow_project
from tests.conftest import require_tool
from vagabond import install, paths

pytestmark = pytest.mark.real

# What the steps take for granted on a GitHub runner image.
RUNNER_IMAGE = ["sudo", "curl", "ca-certificates", "gnupg", "python3", "git", "procps", "iproute2", "dbus"]
# Steps that need a VM (or loop devices and the internet); the e2e tier runs the same commands.
NOT_RUN = {"Build the base box (root for loop devices; a cloud image is imported without)",
           "Test in the VM (up, idempotence, the test command, destroy)"}  # fmt: skip
BOX = "debian12-selinux"


def sh(argv: list[str], **kw) -> subprocess.CompletedProcess:
    result = subprocess.run(argv, capture_output=True, text=True, **kw)
    assert result.returncode == 0, f"{argv[:3]}: {result.stdout[-2000:]}{result.stderr[-3000:]}"
    return result


def apt_repository(debs: list[Path], root: Path, dist: str | None) -> None:
    """A flat repository (dist None) or a dists/DIST/main one, with Packages and Release files."""
    pool = root / "pool"
    pool.mkdir(parents=True)
    entries = []
    for deb in debs:
        shutil.copy2(deb, pool / deb.name)
        control = sh(["dpkg-deb", "-f", str(deb)]).stdout.strip()
        data = (pool / deb.name).read_bytes()
        entries.append(f"{control}\nFilename: pool/{deb.name}\nSize: {len(data)}\nSHA256: {hashlib.sha256(data).hexdigest()}\n")
    index = root if dist is None else root / "dists" / dist
    listing = index / ("" if dist is None else "main/binary-amd64")
    listing.mkdir(parents=True, exist_ok=True)
    packages = "\n".join(entries).encode()
    (listing / "Packages").write_bytes(packages)
    (listing / "Packages.gz").write_bytes(gzip.compress(packages))
    prefix = "" if dist is None else "main/binary-amd64/"
    files = "".join(f" {hashlib.sha256(b).hexdigest()} {len(b)} {prefix}{name}\n"
                    for name, b in (("Packages", packages), ("Packages.gz", gzip.compress(packages))))  # fmt: skip
    fields = {"Origin": "stand-in", "Label": "stand-in", "Date": "Fri, 27 Nov 2026 00:00:00 UTC", "Architectures": "amd64"}
    if dist is not None:
        fields |= {"Suite": dist, "Codename": dist, "Components": "main"}
    release = "".join(f"{k}: {v}\n" for k, v in fields.items()) + "SHA256:\n" + files
    (index / "Release").write_text(release)


@pytest.fixture(scope="module")
def packages_and_rootfs(tmp_path_factory):
    """The runner root file system (directory) and the .debs the steps may install, from Debian's
    archive in the root network namespace (a package registry), before anything goes offline."""
    require_tool("mmdebstrap", "unshare", "chroot", "dpkg-deb", "gpg")
    step_packages = sorted({*install.APT_HOST, *install.APT_VAGRANT, *install.APT_PLUGIN_BUILD})
    key = hashlib.sha256(json.dumps([RUNNER_IMAGE, step_packages]).encode()).hexdigest()[:12]
    debs = paths.cache_dir() / "test-runner" / f"debs-{key}"
    rootfs = tmp_path_factory.mktemp("runner") / "root.tar"
    hooks = []
    if not debs.is_dir():
        partial = debs.with_name(debs.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        hooks = [
            f'--customize-hook=chroot "$1" apt-get install --download-only -y -q --no-install-recommends {" ".join(step_packages)}',
            f"--customize-hook=sync-out /var/cache/apt/archives {partial}",
        ]
    sh(["mmdebstrap", "--variant=minbase", "--mode=root", "--format=tar", f"--include={','.join(RUNNER_IMAGE)}",
        *hooks, "bookworm", str(rootfs)], timeout=1800)  # fmt: skip
    if hooks:
        partial.rename(debs)
    return sorted(debs.glob("*.deb")), rootfs


@pytest.fixture(scope="module")
def wheels(tmp_path_factory):
    """This checkout's wheel and its dependencies, and the build backend a source install needs:
    the stand-in for PyPI."""
    out = tmp_path_factory.mktemp("wheels")
    sh([sys.executable, "-m", "build", "--wheel", "--outdir", str(out), str(paths.data_dir())], timeout=600)
    (wheel,) = out.glob("vagabond_vm-*.whl")
    sh([sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check", "--dest", str(out), str(wheel),
        "hatchling>=1.18"], timeout=900)  # fmt: skip
    return out, wheel.name


SHIM = """#!/bin/sh
# Stand-in for `vagrant plugin install vagrant-libvirt`: Debian's vagrant-libvirt package.
if [ "$1 $2 $3" = "plugin install vagrant-libvirt" ]; then
  [ "$4" = --plugin-version ] && [ -n "$5" ] || { echo "stand-in: --plugin-version VERSION expected" >&2; exit 2; }
  echo "$5" > /var/tmp/plugin-version-asked
  exec sudo apt-get install -y -q --no-install-recommends vagrant-libvirt
fi
exec /usr/bin/vagrant "$@"
"""

# Runs inside the chroot, as root: each step as `runner` with the job's starting groups, with
# GITHUB_ENV, GITHUB_PATH and GITHUB_OUTPUT applied between steps as the runner does.
DRIVER = r'''
import json, os, pwd, subprocess, sys
plan = json.load(open("/var/tmp/plan.json"))
user = pwd.getpwnam("runner")
groups = os.getgrouplist("runner", user.pw_gid)  # fixed now, as the runner's session is
env = dict(plan["env"])
path = env["PATH"]
results = []

def as_runner():
    os.setgroups(groups); os.setgid(user.pw_gid); os.setuid(user.pw_uid)

for i, step in enumerate(plan["steps"]):
    files = {k: f"/home/runner/work/_temp/_runner_file_commands/{k.lower()}_{i}" for k in ("GITHUB_ENV", "GITHUB_PATH", "GITHUB_OUTPUT")}
    for f in files.values():
        open(f, "w").close(); os.chown(f, user.pw_uid, user.pw_gid)
    step_env = {**env, **step["env"], **plan["overrides"], **files, "PATH": path}
    r = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", step["run"]], env=step_env,
                       cwd=plan["workspace"], preexec_fn=as_runner, capture_output=True, text=True)
    results.append({"name": step["name"], "rc": r.returncode, "stdout": r.stdout[-4000:], "stderr": r.stderr[-6000:],
                    "outputs": open(files["GITHUB_OUTPUT"]).read()})
    if r.returncode:
        break
    for line in open(files["GITHUB_ENV"]).read().splitlines():
        k, _, v = line.partition("="); env[k] = v
    for line in open(files["GITHUB_PATH"]).read().splitlines():
        path = f"{line}:{path}"
checks = {}
if all(r["rc"] == 0 for r in results):
    for name, argv in plan["checks"].items():
        r = subprocess.run(argv, env={**env, "PATH": path}, preexec_fn=as_runner, capture_output=True, text=True,
                           cwd=plan["workspace"])
        checks[name] = {"rc": r.returncode, "stdout": r.stdout[-6000:], "stderr": r.stderr[-3000:]}
json.dump({"steps": results, "checks": checks, "groups": groups}, open("/var/tmp/results.json", "w"))
'''

# Inside fresh namespaces: loopback only, private mounts, daemons die with the namespace.
ENTER = """set -e
ip link set lo up
mount --make-rprivate /
mount -t proc proc "$ROOT/proc"
mount -t sysfs -o ro sysfs "$ROOT/sys"
mount -t tmpfs -o mode=755 tmpfs "$ROOT/dev"
for n in null:1:3 zero:1:5 full:1:7 random:1:8 urandom:1:9 tty:5:0 kvm:10:232; do
  IFS=: read name major minor <<EOF
$n
EOF
  mknod -m 666 "$ROOT/dev/$name" c "$major" "$minor"
done
mkdir "$ROOT/dev/pts" "$ROOT/dev/shm"
mount -t devpts -o newinstance,ptmxmode=666 devpts "$ROOT/dev/pts"
ln -s pts/ptmx "$ROOT/dev/ptmx"
mount -t tmpfs tmpfs "$ROOT/run"
mount -t tmpfs tmpfs "$ROOT/tmp"
# The runner's service manager: a system bus (polkitd, installed by the steps, is started by it on
# demand and lets the libvirt group manage libvirt, as on a runner).
exec chroot "$ROOT" sh -ec 'mkdir -p /run/dbus; dbus-uuidgen --ensure=/etc/machine-id; dbus-daemon --system --fork
                            exec python3 /var/tmp/driver.py'
"""


@pytest.fixture
def runner_root(packages_and_rootfs, wheels, tmp_path):
    """A fresh root file system with the stand-ins in place and a `runner` user; returns what the
    steps need to know about it."""
    debs, rootfs_tar = packages_and_rootfs
    wheel_dir, wheel = wheels
    root = tmp_path / "root"
    root.mkdir()
    sh(["tar", "-xf", str(rootfs_tar), "-C", str(root)])
    srv = root / "srv"

    # HashiCorp's repository, stood in for: Debian's vagrant, signed by a key of the test's own.
    vagrant_deb = next(d for d in debs if d.name.startswith("vagrant_"))
    apt_repository([vagrant_deb], srv / "hashicorp", "bookworm")
    gnupg = tmp_path / "gnupg"
    gnupg.mkdir(mode=0o700)
    gpg = ["gpg", "--homedir", str(gnupg), "--batch", "--pinentry-mode", "loopback", "--passphrase", ""]
    sh([*gpg, "--quick-gen-key", "stand-in for HashiCorp <apt@example.invalid>", "ed25519", "sign", "never"])
    colons = sh([*gpg, "--with-colons", "--list-keys"]).stdout
    fingerprint = next(line.split(":")[9] for line in colons.splitlines() if line.startswith("fpr:"))
    (srv / "hashicorp" / "gpg").write_text(sh([*gpg, "--armor", "--export", fingerprint]).stdout)
    release = srv / "hashicorp" / "dists" / "bookworm" / "Release"
    sh([*gpg, "--yes", "--clearsign", "--output", str(release.with_name("InRelease")), str(release)])
    # Debian's archive, stood in for: everything else the steps may install (vagrant only from "HashiCorp").
    apt_repository([d for d in debs if d != vagrant_deb], srv / "debian", None)
    for listing in [root / "etc/apt/sources.list", *(root / "etc/apt/sources.list.d").glob("*")]:
        listing.unlink(missing_ok=True)
    (root / "etc/apt/sources.list").write_text("deb [trusted=yes] file:/srv/debian ./\n")
    shutil.copytree(wheel_dir, srv / "wheels")
    sh(["chmod", "-R", "a+rX", str(srv)])

    # The runner user and its workspace: the checkout of a project with boxes of every kind.
    sh(["chroot", str(root), "useradd", "--create-home", "--shell", "/bin/bash", "runner"])
    (root / "etc/sudoers.d/runner").write_text("runner ALL=(ALL) NOPASSWD:ALL\nDefaults:runner !requiretty\n")
    (root / "etc/hosts").write_text("127.0.0.1 localhost runner-host\n")
    (root / "etc/hostname").write_text("runner-host\n")
    workspace = root / "home/runner/work/project/project"
    workflow_project.make(workspace)
    (root / "home/runner/work/_temp/_runner_file_commands").mkdir(parents=True)
    # The action's own checkout, as the runner fetches it for `uses:` (the tracked files of this one).
    action = root / "home/runner/work/_actions/vagabond"
    for rel in sh(["git", "-C", str(paths.data_dir()), "ls-files", "-z"]).stdout.split("\0"):
        if rel and (paths.data_dir() / rel).is_file():
            (action / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(paths.data_dir() / rel, action / rel)
    (root / "usr/local/bin/vagrant").write_text(SHIM)
    (root / "usr/local/bin/vagrant").chmod(0o755)
    sh(["chroot", str(root), "chown", "-R", "runner:runner", "/home/runner"])
    env = {
        "HOME": "/home/runner", "USER": "runner", "LANG": "C.UTF-8", "CI": "true", "GITHUB_ACTIONS": "true",
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "RUNNER_TEMP": "/home/runner/work/_temp",
        # PyPI, stood in for by the wheel directory.
        "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": "/srv/wheels", "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    }  # fmt: skip
    # The stand-ins' coordinates: what a user would change if HashiCorp moved.
    overrides = {"VAGRANT_APT_URL": "file:///srv/hashicorp", "VAGRANT_APT_FINGERPRINT": fingerprint,
                 "VAGRANT_VERSION": sh(["dpkg-deb", "-f", str(vagrant_deb), "Version"]).stdout.strip()}  # fmt: skip
    yield {"root": root, "workspace": workspace, "env": env, "overrides": overrides, "wheel": wheel}
    subprocess.run(["gpgconf", "--homedir", str(gnupg), "--kill", "gpg-agent"], capture_output=True)  # the test's key is done


CHECKS = {
    "plugins": ["vagrant", "plugin", "list"],
    "libvirt": ["virsh", "--connect", "qemu:///system", "pool-info", "default"],
    "doctor": ["vagabond", "doctor", "--json"],
    "groups": ["id", "-nG", "runner"],
}


def run_steps(ctx: dict, steps: list[dict], env: dict) -> dict:
    """The steps in order, in fresh namespaces, as `runner`; then the checks as `runner`."""
    root = ctx["root"]
    plan = {"env": ctx["env"] | env, "overrides": ctx["overrides"], "workspace": "/home/runner/work/project/project",
            "steps": steps, "checks": CHECKS}  # fmt: skip
    (root / "var/tmp/plan.json").write_text(json.dumps(plan))
    (root / "var/tmp/driver.py").write_text(textwrap.dedent(DRIVER))
    run = subprocess.run(["unshare", "--net", "--mount", "--pid", "--fork", "--kill-child", "bash", "-c", ENTER],
                         env={**os.environ, "ROOT": str(root)}, capture_output=True, text=True, timeout=2400)  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    results = json.loads((root / "var/tmp/results.json").read_text())
    for step in results["steps"]:
        assert step["rc"] == 0, f"step {step['name']!r} failed:\n{step['stdout']}\n{step['stderr']}"
    assert [s["name"] for s in results["steps"]] == [s["name"] for s in steps]
    return results


def assert_ready(ctx: dict, results: dict) -> None:
    """Vagrant from the "HashiCorp" repository, the pinned plugin version asked for, and the runner
    user, without sudo and without the new groups in its session, reaching libvirt; doctor green."""
    root = ctx["root"]
    policy = sh(["chroot", str(root), "apt-cache", "policy", "vagrant"]).stdout
    assert "file:/srv/hashicorp bookworm/main" in policy and f"*** {ctx['overrides']['VAGRANT_VERSION']}" in policy
    assert (root / "var/tmp/plugin-version-asked").read_text().strip() == install.VAGRANT_LIBVIRT_VERSION
    checks = results["checks"]
    assert "vagrant-libvirt" in checks["plugins"]["stdout"], checks["plugins"]
    assert checks["libvirt"]["rc"] == 0 and "running" in checks["libvirt"]["stdout"], checks["libvirt"]
    assert "libvirt" in checks["groups"]["stdout"].split(), "later sessions get the group"
    assert checks["doctor"]["stdout"], checks["doctor"]
    doctor = {c["name"]: c for c in json.loads(checks["doctor"]["stdout"])["checks"]}
    for name in ("vagrant", "vagrant-libvirt", "libvirt", "storage pool", "qemu", "qemu-img", "ansible-playbook"):
        assert doctor[name]["ok"], doctor[name]
    # What root made in the workspace went back to the runner user.
    owners = {p.stat().st_uid for p in ctx["workspace"].rglob("*")}
    assert owners == {(root / "home/runner").stat().st_uid}, "files in the workspace owned by someone else"


def test_workflow_steps_in_a_fresh_debian_12(runner_root):
    ctx = runner_root
    out = subprocess.run([sys.executable, "-m", "vagabond", "ci", "github", "--vagabond-spec", f"/srv/wheels/{ctx['wheel']}"],
                         cwd=ctx["workspace"], capture_output=True, text=True, check=True)  # fmt: skip
    doc = YAML(typ="safe").load(out.stdout)
    job = doc["jobs"]["test"]
    matrix = next(m for m in job["strategy"]["matrix"]["include"] if m["box"] == BOX)
    env = {}
    for key, value in {**doc["env"], **job["env"]}.items():
        value = str(value)
        for name in ("box", "test_dir", "sync"):
            value = value.replace(f"${{{{ matrix.{name} }}}}", str(matrix[name]))
        env[key] = value
    steps = [s for s in job["steps"] if "run" in s and s["name"] not in NOT_RUN]
    assert {s["name"] for s in job["steps"] if "run" in s} - {s["name"] for s in steps} == NOT_RUN
    results = run_steps(ctx, [{"name": s["name"], "run": s["run"], "env": {k: str(v) for k, v in s.get("env", {}).items()}}
                              for s in steps], env)  # fmt: skip
    assert_ready(ctx, results)


ACTION_NOT_RUN = {"Build the base box (root for loop devices; a cloud image is imported without)", "Bring the VM up"}


def test_action_steps_in_a_fresh_debian_12(runner_root):
    """The action's own steps, its inputs as a user's workflow gives them, vagabond installed from
    the action's checkout (the version pinned in `uses:`)."""
    ctx = runner_root
    action = YAML(typ="safe").load((paths.data_dir() / "action.yml").read_text())
    inputs = {name: spec.get("default", "") for name, spec in action["inputs"].items()} | {"box": BOX}
    steps = []
    for step in action["runs"]["steps"]:
        if "run" not in step or step["name"] in ACTION_NOT_RUN:
            continue
        env = {}
        for key, value in step.get("env", {}).items():
            value = str(value).replace("${{ github.action_path }}", "/home/runner/work/_actions/vagabond")
            for name, given in inputs.items():
                value = value.replace(f"${{{{ inputs.{name} }}}}", given)
            env[key] = value
        assert "${{" not in step["run"], f"{step['name']}: expressions reach a shell only through env"
        steps.append({"name": step["name"], "run": step["run"], "env": env})
    ran = {s["name"] for s in steps}
    assert {s["name"] for s in action["runs"]["steps"] if "run" in s} - ran == ACTION_NOT_RUN
    results = run_steps(ctx, steps, {})
    assert_ready(ctx, results)
    boxes = next(s for s in results["steps"] if s["name"] == "Which base box, which prebuilt box")
    assert re.search(r"^base=vagabond-base-vagabond-debian12-[0-9a-f]{12}$", boxes["outputs"], re.M), boxes["outputs"]
    assert "kind=mmdebstrap\nsynced=1\n" in boxes["outputs"] and "version=\n" in boxes["outputs"]
