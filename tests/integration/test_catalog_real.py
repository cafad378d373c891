"""Publishing to real catalogs: a directory served by nginx and an S3 server (moto's), both on
127.0.0.1, read by the real `vagrant box add`."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests import helpers
from tests.conftest import require_tool
from tests.helpers import free_port, wait_for
from vagabond import files, process
from vagabond.bases import archive, vagrantbox
from vagabond.catalog import catalogs, documents, stores
from vagabond.definition.schema import VagrantBase
from vagabond.errors import CommandFailed, PublishError

pytestmark = pytest.mark.real

VAGABOND = [sys.executable, "-m", "vagabond"]


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    """A cache and a record of the test's own: nothing it does reaches the run's (tests/lanes.py)."""
    monkeypatch.setenv("VAGABOND_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("VAGABOND_STATE", str(tmp_path / "state"))


@pytest.fixture(scope="module")
def tiny_box(tmp_path_factory) -> Path:
    """A real (tiny) vagrant-libvirt box: a 16 MiB qcow2, metadata.json and a Vagrantfile."""
    require_tool("qemu-img")
    return helpers.tiny_box(tmp_path_factory.mktemp("tinybox"))


def make_version(tiny_box: Path, tmp: Path, version: str) -> Path:
    box = tmp / f"tiny-{version}.box"
    shutil.copy(tiny_box, box)
    (tmp / f"tiny-{version}.box.json").write_text(
        json.dumps(
            {
                "name": "vagabond-test/tiny",
                "version": version,
                "provider": "libvirt",
                "architecture": "amd64",
                "sha256": files.sha256_file(box),
                "description": "tiny test box",
                "definition_digest": "d" * 64,
            }
        )
    )
    return box


@pytest.fixture(scope="module")
def nginx(tmp_path_factory):
    require_tool("nginx")
    root = tmp_path_factory.mktemp("www")
    with helpers.nginx(root, free_port()) as http:
        yield root, http


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    server = shutil.which("moto_server") or str(Path(sys.executable).with_name("moto_server"))
    if not Path(server).exists():
        pytest.skip("REAL TOOL MISSING: moto_server (pip install 'moto[server]')")
    port = free_port()
    proc = subprocess.Popen(
        [server, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    endpoint = f"http://127.0.0.1:{port}"
    wait_for(endpoint)
    env = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test-secret",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    import boto3

    boto3.client("s3").create_bucket(Bucket="boxes")
    yield endpoint
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture
def vagrant_home(tmp_path):
    require_tool("vagrant")
    return dict(os.environ, VAGRANT_HOME=str(tmp_path / "vagrant.d"), VAGRANT_CHECKPOINT_DISABLE="1")


def box_add(url: str, env) -> process.Result:
    return process.run(["vagrant", "box", "add", "--provider", "libvirt", url], env=env, timeout=300)


def test_directory_catalog_served_by_nginx(tiny_box, tmp_path, nginx, vagrant_home):
    root, http = nginx
    cat_dir = root / "tiny"
    box = make_version(tiny_box, tmp_path, "1.0.0")
    result = json.loads(
        process.check(
            [*VAGABOND, "publish", box, "--catalog", f"file://{cat_dir}", "--base-url", f"{http}/tiny", "--json"]
        ).stdout
    )
    assert result["url"] == f"{http}/tiny/1.0.0/vagabond-test-tiny-1.0.0-libvirt.box"
    with urllib.request.urlopen(f"{http}/tiny/metadata.json") as resp:
        assert resp.headers["Content-Type"] == "application/json"
        doc = json.load(resp)
    assert doc["name"] == "vagabond-test/tiny"
    (v,) = doc["versions"]
    assert v["version"] == "1.0.0" and v["vagabond"] == {"definition_digest": "d" * 64}
    assert v["providers"] == [
        {
            "name": "libvirt",
            "url": result["url"],
            "checksum_type": "sha256",
            "checksum": files.sha256_file(box),
            "architecture": "amd64",
            "default_architecture": True,
        }
    ]
    added = box_add(f"{http}/tiny/metadata.json", vagrant_home)
    assert added.ok, added.stderr
    listed = process.check(["vagrant", "box", "list"], env=vagrant_home).stdout
    assert "vagabond-test/tiny (libvirt, 1.0.0" in listed


def test_tampered_box_is_refused_and_nothing_installed(tiny_box, tmp_path, nginx, vagrant_home):
    root, http = nginx
    cat_dir = root / "tampered"
    box = make_version(tiny_box, tmp_path, "2.0.0")
    catalogs.publish(box, str(cat_dir), base_url=f"{http}/tampered")
    published = cat_dir / "2.0.0" / "vagabond-test-tiny-2.0.0-libvirt.box"
    with published.open("r+b") as fh:  # flip bytes inside the published file
        fh.seek(10_000)
        fh.write(b"tampered")
    added = box_add(f"{http}/tampered/metadata.json", vagrant_home)
    assert not added.ok
    assert "checksum" in (added.stderr + added.stdout).lower()
    assert "vagabond-test/tiny" not in process.check(["vagrant", "box", "list"], env=vagrant_home).stdout


def test_a_base_that_vagrant_downloads_is_added_on_the_host_before_up(
    tiny_box, tmp_path, nginx, vagrant_home, monkeypatch
):
    """`vagrant up` runs in the VMs' namespace, which may have no route out: a kind: vagrant base
    is added by vagabond first, on the host's network, with the real `vagrant box add`."""
    root, http = nginx
    for name in ("VAGRANT_HOME", "VAGRANT_CHECKPOINT_DISABLE"):
        monkeypatch.setenv(name, vagrant_home[name])
    monkeypatch.setenv("VAGABOND_STATE", str(tmp_path / "state"))
    shutil.copy(tiny_box, root / "base.box")
    listed = lambda: process.check(["vagrant", "box", "list"], env=vagrant_home).stdout  # noqa: E731
    wrong = VagrantBase(box="org/base", url=f"{http}/base.box", checksum="sha256:" + "0" * 64)
    with pytest.raises(CommandFailed, match="vagrant box add"):
        vagrantbox.download(wrong)
    assert "org/base" not in listed(), "a box that fails its checksum is not kept"
    right = VagrantBase(box="org/base", url=f"{http}/base.box", checksum=f"sha256:{files.sha256_file(tiny_box)}")
    assert vagrantbox.download(right) is True
    assert "org/base (libvirt, 0" in listed()
    assert vagrantbox.download(right) is False, "a box in the store is used as it is"
    # From a catalog, with a version constraint: the newest version that fits.
    for version in ("3.1.0", "4.0.0"):
        catalogs.publish(make_version(tiny_box, tmp_path, version), str(root / "basecat"), base_url=f"{http}/basecat")
    fitting = VagrantBase(box="vagabond-test/tiny", url=f"{http}/basecat/metadata.json", version="~> 3.0")
    assert vagrantbox.download(fitting) is True
    assert "vagabond-test/tiny (libvirt, 3.1.0" in listed() and "4.0.0" not in listed()


def test_published_versions_are_immutable(tiny_box, tmp_path):
    cat = tmp_path / "cat"
    box = make_version(tiny_box, tmp_path, "1.0.0")
    catalogs.publish(box, str(cat))
    with pytest.raises(PublishError, match=r"^vagabond-test/tiny 1.0.0 is already in .*published boxes are immutable"):
        catalogs.publish(box, str(cat))
    catalogs.publish(box, str(cat), force=True)
    assert [v["version"] for v in json.loads((cat / "metadata.json").read_text())["versions"]] == ["1.0.0"]


def test_keep_prunes_files_and_entries(tiny_box, tmp_path):
    cat = tmp_path / "cat"
    for version in ("1.0.0", "1.1.0", "1.10.0", "1.2.0"):
        catalogs.publish(make_version(tiny_box, tmp_path, version), str(cat), keep=2)
    doc = json.loads((cat / "metadata.json").read_text())
    assert [v["version"] for v in doc["versions"]] == ["1.2.0", "1.10.0"]
    assert sorted(p.name for p in cat.iterdir() if p.is_dir()) == ["1.10.0", "1.2.0"]


def test_changed_box_file_is_refused_before_upload(tiny_box, tmp_path):
    box = make_version(tiny_box, tmp_path, "3.0.0")
    with box.open("ab") as fh:
        fh.write(b"x")
    with pytest.raises(PublishError, match="does not match the sha256"):
        catalogs.publish(box, str(tmp_path / "cat"))
    assert not (tmp_path / "cat").exists()


def _concurrent(target: str, tiny_box: Path, tmp_path: Path, env: dict) -> None:
    boxes = [make_version(tiny_box, tmp_path, f"5.0.{i}") for i in range(4)]
    procs = [
        subprocess.Popen(
            [*VAGABOND, "publish", str(b), "--catalog", target],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for b in boxes
    ]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err


def test_concurrent_publishes_to_a_directory_lose_nothing(tiny_box, tmp_path):
    cat = tmp_path / "cat"
    _concurrent(str(cat), tiny_box, tmp_path, dict(os.environ))
    doc = json.loads((cat / "metadata.json").read_text())
    assert [v["version"] for v in doc["versions"]] == ["5.0.0", "5.0.1", "5.0.2", "5.0.3"]


def test_s3_catalog(tiny_box, tmp_path, s3, vagrant_home):
    box = make_version(tiny_box, tmp_path, "1.0.0")
    result = catalogs.publish(box, "s3://boxes/ci/tiny", acl="public-read")
    assert result["metadata_url"] == f"{s3}/boxes/ci/tiny/metadata.json"
    with urllib.request.urlopen(result["metadata_url"]) as resp:
        assert resp.headers["Content-Type"] == "application/json"
        assert (
            json.load(resp)["versions"][0]["providers"][0]["url"]
            == f"{s3}/boxes/ci/tiny/1.0.0/vagabond-test-tiny-1.0.0-libvirt.box"
        )
    added = box_add(result["metadata_url"], vagrant_home)
    assert added.ok, added.stderr
    with pytest.raises(PublishError, match="immutable"):
        catalogs.publish(box, "s3://boxes/ci/tiny")


def test_concurrent_publishes_to_s3_lose_nothing(tiny_box, tmp_path, s3):
    _concurrent("s3://boxes/concurrent", tiny_box, tmp_path, dict(os.environ))  # conditional writes + retry
    import boto3

    body = boto3.client("s3").get_object(Bucket="boxes", Key="concurrent/metadata.json")["Body"].read()
    assert [v["version"] for v in json.loads(body)["versions"]] == ["5.0.0", "5.0.1", "5.0.2", "5.0.3"]


CANARIES = {
    "AWS_ACCESS_KEY_ID": "CANARYKEYID7Q2W",
    "AWS_SECRET_ACCESS_KEY": "CANARYSECRET8E3R",
    "AWS_SESSION_TOKEN": "CANARYTOKEN9T4Y",
}


def _cmdlines() -> str:
    seen = []
    for proc in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError):
            seen.append((proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
    return "\n".join(seen)


@pytest.mark.parametrize("outcome", ["success", "failure"])
def test_credentials_never_reach_output_logs_summary_or_argv(tiny_box, tmp_path, s3, outcome):
    """A canary in each AWS variable, a --debug publish under GitHub Actions (step summary), success
    and failure alike: no canary in stdout, stderr, the summary, or any process's argv meanwhile."""
    box = make_version(tiny_box, tmp_path, "9.0.0" if outcome == "success" else "9.0.1")
    summary = tmp_path / "summary.md"
    env = dict(os.environ, **CANARIES, GITHUB_ACTIONS="true", GITHUB_STEP_SUMMARY=str(summary))
    target = "s3://boxes/secret" if outcome == "success" else "s3://no-such-bucket/secret"
    proc = subprocess.Popen(
        [*VAGABOND, "--debug", "publish", str(box), "--catalog", target],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    argv_seen = []
    while proc.poll() is None:
        argv_seen.append(_cmdlines())
        time.sleep(0.05)
    out, err = proc.communicate()
    assert (proc.returncode == 0) == (outcome == "success"), err
    assert "vagabond.catalog.s3: s3: GET http://127.0.0.1:" in err, (
        "--debug is on: every request to the bucket is traced"
    )
    for name, canary in CANARIES.items():
        for where, text in (
            ("stdout", out),
            ("stderr", err),
            ("step summary", summary.read_text()),
            ("argv", "\n".join(argv_seen)),
        ):
            assert canary not in text, f"{name} leaked into {where}"


def test_repackage_then_publish(tiny_box, tmp_path, vagrant_home, nginx):
    root, http = nginx
    box = make_version(tiny_box, tmp_path, "7.0.0")
    catalogs.publish(box, str(root / "repack"), base_url=f"{http}/repack")
    assert box_add(f"{http}/repack/metadata.json", vagrant_home).ok
    out = tmp_path / "out"
    env = dict(vagrant_home)
    info = json.loads(
        process.check([*VAGABOND, "repackage", "vagabond-test/tiny", "--out", out, "--json"], env=env).stdout
    )
    assert info["version"] == "7.0.0" and info["provider"] == "libvirt"
    repacked = Path(info["path"])
    assert repacked.name == "vagabond-test-tiny-7.0.0-libvirt.box"
    assert info["sha256"] == files.sha256_file(repacked) and info["size"] == repacked.stat().st_size
    # The description travels: publish reads name and version from it.
    result = catalogs.publish(repacked, str(tmp_path / "cat2"))
    assert (result["name"], result["version"]) == ("vagabond-test/tiny", "7.0.0")
    missing = process.run([*VAGABOND, "repackage", "nope/none", "--out", out], env=env)
    assert missing.returncode == 2 and "no libvirt box named 'nope/none'" in missing.stderr


def _same_version_race(target: str, tiny_box: Path, tmp_path: Path) -> tuple[list[int], list[Path]]:
    racers = []
    for i in range(2):
        d = tmp_path / f"racer{i}"
        d.mkdir()
        box = make_version(tiny_box, d, "6.0.0")
        with open(box, "ab") as fh:  # two different files claiming the same version
            fh.write(f"racer {i}".encode())
        info = json.loads(box.with_name(box.name + ".json").read_text())
        info["sha256"] = files.sha256_file(box)
        box.with_name(box.name + ".json").write_text(json.dumps(info))
        racers.append(box)
    procs = [
        subprocess.Popen(
            [*VAGABOND, "publish", str(b), "--catalog", target],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for b in racers
    ]
    codes = []
    for p in procs:
        _, err = p.communicate(timeout=300)
        codes.append(p.returncode)
        assert p.returncode == 0 or "published boxes are immutable" in err, err
    return codes, racers


def test_same_version_published_twice_at_once_keeps_one_consistent_box(tiny_box, tmp_path):
    cat = tmp_path / "race"
    codes, _ = _same_version_race(str(cat), tiny_box, tmp_path)
    assert sorted(codes) == [0, PublishError.exit_code], "exactly one publish of a version may win"
    doc = json.loads((cat / "metadata.json").read_text())
    provider = doc["versions"][0]["providers"][0]
    stored = cat / "6.0.0" / "vagabond-test-tiny-6.0.0-libvirt.box"
    assert provider["checksum"] == files.sha256_file(stored), "the catalog must describe the file it serves"


def test_box_objects_are_never_overwritten_without_force(tiny_box, tmp_path, s3):
    for store in (stores.DirStore(tmp_path / "dir", None), stores.open_store("s3://boxes/noclobber")):
        store.put_file("1.0.0/a.box", tiny_box)
        with pytest.raises(documents.Conflict):
            store.put_file("1.0.0/a.box", tiny_box)
        store.put_file("1.0.0/a.box", tiny_box, replace=True)
        assert store.read_back("1.0.0/a.box")[1] == files.sha256_file(tiny_box)


def test_a_publish_cancelled_during_the_upload_leaves_no_file_behind(tmp_path):
    """A real SIGTERM while the box is being copied into the catalog: no box, no temporary file."""
    work = tmp_path / "big"
    work.mkdir()
    with open(work / "box.img", "wb") as fh:
        fh.truncate(1024**3)  # 1 GiB: the copy takes long enough to be caught in the middle
    box = archive.write_box(work / "box.img", work / "big.box", virtual_size_gib=1)
    (work / "box.img").unlink()
    cat = tmp_path / "cat"
    catalogs.publish(make_version(box, tmp_path, "1.0.0"), str(cat))  # an earlier version stays as it is
    before = sorted(p.relative_to(cat) for p in cat.rglob("*"))
    proc = subprocess.Popen(
        [*VAGABOND, "publish", str(make_version(box, tmp_path, "2.0.0")), "--catalog", str(cat)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not list(cat.rglob(".*.tmp")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert sorted(p.relative_to(cat) for p in cat.rglob("*")) == before, "the cancelled publish left something"
    assert [v["version"] for v in json.loads((cat / "metadata.json").read_text())["versions"]] == ["1.0.0"]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {
                "AWS_ACCESS_KEY_ID": None,
                "AWS_SECRET_ACCESS_KEY": None,
                "AWS_PROFILE": None,
                "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
                "AWS_CONFIG_FILE": "/nonexistent",
            },
            "no S3 credentials (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
        ),
        ({"AWS_ENDPOINT_URL": "http://127.0.0.1:9"}, "cannot reach the S3 endpoint (http://127.0.0.1:9)"),
        ({}, "the bucket does not exist"),
    ],
)
def test_s3_failures_are_one_line_that_says_what_to_do(tiny_box, tmp_path, s3, env, message):
    box = make_version(tiny_box, tmp_path, "3.0.0")
    run_env = dict(os.environ, AWS_MAX_ATTEMPTS="1", AWS_EC2_METADATA_DISABLED="true")
    for k, v in env.items():
        run_env.pop(k, None) if v is None else run_env.__setitem__(k, v)
    target = "s3://no-such-bucket/x" if not env else "s3://boxes/errors"
    out = process.run([*VAGABOND, "publish", str(box), "--catalog", target], env=run_env, timeout=120)
    assert out.returncode == PublishError.exit_code, out.stderr
    assert out.stderr.count("\n") == 1 and message in out.stderr and "Traceback" not in out.stderr, out.stderr
