"""Commands that make and publish boxes: build, import, repackage, publish, prebuilt, base key/build."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from vagabond import errors, paths, ui
from vagabond.cli.common import (
    BoxArg,
    DriverOption,
    ExtraVarsOption,
    ImageOption,
    JsonOption,
    LogsOnFailureOption,
    WorkdirOption,
    _box_and_workdir,
    _box_dirs,
    app,
)
from vagabond.errors import PublishError

if TYPE_CHECKING:
    from vagabond.definition import schema


@app.command("build")
def build_(
    box: BoxArg,
    out: Annotated[Path, typer.Option("-o", "--out", help="Directory for the .box and its .box.json.")] = Path("dist"),
    version: Annotated[Optional[str], typer.Option("--version", help="Box version (default: UTC timestamp).")] = None,
    workdir: WorkdirOption = None,
    driver: DriverOption = None,
    extra_vars: ExtraVarsOption = None,
    logs_on_failure: LogsOnFailureOption = None,
    image: ImageOption = None,
    warm: Annotated[
        bool,
        typer.Option(
            "--warm",
            help="Also export the provisioned VM's warm image beside the box (BOX.warm.tar, named in "
            "its .box.json), which publish puts in the catalog: `up` in a work directory at the same "
            "path (a CI job of the same repository) restores it instead of booting.",
        ),
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Build the box's prebuilt dependency box: base box + playbooks, verified, cleaned, packaged.

    Steps: up from the base box, run the mode and dependency playbooks, check the modes, clean the
    guest (machine-id, SSH host keys, leases, logs, caches; free blocks trimmed), halt, flatten the
    disk into a compressed qcow2, write the .box and a .box.json (sha256, size, base box, and a
    digest of the box definition and playbooks that `vagabond up` compares), destroy the VM.

    Example (nightly): vagabond build centos7-selinux --out dist && vagabond publish dist/*.box --catalog s3://boxes/centos7
    """
    from vagabond import build
    from vagabond.vm import lifecycle, provision

    definition, wd = _box_and_workdir(box, workdir)
    opts = lifecycle.UpOptions(
        driver=driver.value if driver else None,
        extra_vars=provision.extra_vars(extra_vars or ()),
        logs_dir=paths.logs_on_failure_dir(logs_on_failure),
        image=str(image) if image else None,
    )
    info = build.build(definition, wd, opts, out=out, version=version, warm_image=warm)
    print(json.dumps(info, indent=2) if as_json else info["path"])


@app.command("import")
def import_(
    name: Annotated[
        str,
        typer.Argument(
            help="A box file whose base is a cloud image (e.g. centos7-selinux), or, with "
            "--image, the Vagrant box name to create (e.g. local/centos7)."
        ),
    ],
    image: Annotated[
        Optional[str], typer.Option("--image", help="The cloud image (qcow2 with cloud-init): a path or URL.")
    ] = None,
    checksum: Annotated[Optional[str], typer.Option("--checksum", help="sha256:HEX the image must have.")] = None,
    checksums_url: Annotated[
        Optional[str],
        typer.Option("--checksums-url", help="The distribution's checksum file that names the image's sha256."),
    ] = None,
    out: Annotated[
        Optional[Path], typer.Option("-o", "--out", help="Directory for the box (default: the cache).")
    ] = None,
    add: Annotated[bool, typer.Option("--add/--no-add", help="Also add it to Vagrant's box store.")] = True,
    driver: DriverOption = None,
    disk: Annotated[
        Optional[int],
        typer.Option(
            "--disk",
            min=1,
            metavar="GIB",
            help="Grow a smaller image to this many GiB first; cloud-init's growpart extends the root partition.",
        ),
    ] = None,
) -> None:
    """Turn a distribution's generic cloud image into a vagrant-libvirt box (CentOS, Alma, Rocky ...).

    A NoCloud seed (cloud-localds) creates the 'vagrant' user with Vagrant's insecure key and
    passwordless sudo; one boot without any network applies it; the guest then runs
    'cloud-init clean', drops its machine-id and SSH host keys, and powers off; the disk becomes the box.
    Box files can name such a base directly: base: {kind: image, image: URL, checksum: sha256:..., box: NAME};
    `vagabond import BOX` then imports it (cached, as `vagabond up BOX` does).

    Examples: vagabond import centos7-selinux; vagabond import local/rocky9
    --image Rocky-9-GenericCloud.qcow2 --checksum sha256:...
    """
    from vagabond.bases import cloudimage, made

    if image is None:
        result = cloudimage.imported(
            _image_box(name, checksum=checksum, checksums_url=checksums_url, out=out, driver=driver, disk=disk)
        )
    else:
        result = cloudimage.import_image(
            name,
            image,
            checksum=checksum,
            checksums_url=checksums_url,
            out=out,
            driver=driver.value if driver else None,
            disk_gib=disk,
        )
    if add:
        made.add_to_store(result)
    print(result.box_file)


def _image_box(name: str, **with_image_only: object) -> schema.Box:
    """The box file `vagabond import NAME` (no --image) imports the base of."""
    from vagabond.definition import boxfile

    given = [f"--{key.replace('_', '-')}" for key, value in with_image_only.items() if value is not None]
    if given:
        raise errors.UsageError(
            f"{', '.join(given)} {'goes' if len(given) == 1 else 'go'} with --image: a box file names its "
            "image, checksum and disk itself"
        )
    if "/" in name:
        raise errors.UsageError(
            f"{name!r} is a Vagrant box name: give the image to make it from with --image PATH|URL",
            hint="or name a box file whose base is a cloud image: vagabond import centos7-selinux",
        )
    definition = boxfile.find_box(name, _box_dirs())
    if definition.spec.base.kind != "image":
        raise errors.UsageError(
            f"box {name!r} has a base of kind {definition.spec.base.kind!r}, not a cloud image",
            hint=f"vagabond import takes a box whose base is of kind image; 'vagabond base build {name}' "
            "makes this one",
        )
    return definition


@app.command("repackage")
def repackage_(
    name: Annotated[str, typer.Argument(help="An installed box, e.g. vagabond/debian12 (see 'vagrant box list').")],
    version: Annotated[
        Optional[str], typer.Option("--version", help="Installed version (default: the newest).")
    ] = None,
    out: Annotated[Path, typer.Option("-o", "--out", help="Directory for the .box and its .box.json.")] = Path("."),
    as_json: JsonOption = False,
) -> None:
    """Re-export an installed box with `vagrant box repackage`, plus a JSON description for publish.

    Note: this re-tars the box as Vagrant stores it; it never includes a VM's state.
    """
    from vagabond import build

    info = build.repackage(name, version, out)
    print(json.dumps(info, indent=2) if as_json else info["path"])


@app.command("publish")
def publish_(
    box_file: Annotated[Path, typer.Argument(help="The .box file (its .box.json description is read when present).")],
    catalog: Annotated[
        str,
        typer.Option(
            "--catalog",
            help="Where the catalog lives: oci://REGISTRY/NAMESPACE/NAME, DIR, file://DIR or s3://BUCKET/PREFIX.",
        ),
    ],
    version: Annotated[
        Optional[str], typer.Option("--version", help="Version to publish (default: from the description).")
    ] = None,
    name: Annotated[
        Optional[str], typer.Option("--name", help="Box name, e.g. myorg/centos7-deps (default: from the description).")
    ] = None,
    keep: Annotated[
        Optional[int], typer.Option("--keep", help="Keep only the newest N versions (files and entries).")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace a version that is already published.")] = False,
    warm: Annotated[
        bool,
        typer.Option(
            "--warm/--no-warm",
            help="Publish the warm image `vagabond build --warm` wrote beside the box too (when its "
            ".box.json names one), for `up` to restore instead of booting.",
        ),
    ] = True,
    base_url: Annotated[
        Optional[str],
        typer.Option("--base-url", help="URL the catalog is served from (default: file:// or the S3 endpoint)."),
    ] = None,
    s3_acl: Annotated[
        Optional[str],
        typer.Option("--s3-acl", help="Canned ACL for S3 objects, e.g. public-read (Vagrant downloads anonymously)."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Publish a box to a catalog: an OCI registry (GitHub's, quay.io, Docker Hub, ...), or a
    self-hosted Vagrant catalog (metadata.json that `vagrant box add URL` reads).

    In a registry each version is an artifact under its version's tag, pushed blobs first and the
    tag last (a failed push leaves no tag); credentials come from VAGABOND_REGISTRY_USERNAME and
    VAGABOND_REGISTRY_PASSWORD or docker/podman login. In a directory or S3 the box is uploaded and
    read back (size and sha256) before metadata.json changes, in one atomic step; S3's endpoint and
    credentials come from the usual AWS_* variables. Published versions are immutable unless --force.

    Example: vagabond publish dist/debian12-selinux.box --catalog oci://ghcr.io/myorg/myrepo/debian12-selinux
    """
    from vagabond.catalog import catalogs
    from vagabond.vm import warmcatalog

    result = catalogs.publish(
        box_file,
        catalog,
        name=name,
        version=version,
        keep=keep,
        force=force,
        base_url=base_url,
        acl=s3_acl,
        warm=warm,
        check_warm=warmcatalog.check_publishable,
    )
    if as_json:
        print(json.dumps(result, indent=2))
    else:
        print(result.get("metadata_url") or result["url"])


@app.command("pull")
def pull_(box: BoxArg, as_json: JsonOption = False) -> None:
    """Add the box's current prebuilt box to Vagrant's box store (download, checked), so that plain
    `vagrant up` of the rendered Vagrantfile boots it: Vagrant cannot read an OCI registry itself.

    Exits 0 when the store holds it afterwards; with no current prebuilt box, says why and exits 8.

    Example: vagabond pull debian12-selinux && vagrant up
    """
    from vagabond.definition import boxfile
    from vagabond.vm import prebuilt

    found, why = prebuilt.in_store(boxfile.find_box(box, _box_dirs()))
    if found is None:
        raise PublishError(f"no prebuilt box of {box} was added to Vagrant's box store: {why}")
    if as_json:
        print(json.dumps({"box": box, "name": found.name, "version": found.version, "catalog": found.url}, indent=2))
    else:
        print(f"{found.name} {found.version}")


@app.command("prebuilt")
def prebuilt_(
    box: BoxArg,
    as_json: JsonOption = False,
    github_output: Annotated[
        bool,
        typer.Option(
            "--github-output",
            help="Print name=, version= and store= (the version's directory in Vagrant's "
            "box store, to cache) lines for $GITHUB_OUTPUT.",
        ),
    ] = False,
) -> None:
    """Which prebuilt box 'up' would boot: the newest version in the box's catalog built from this
    exact definition and its playbooks, and why there is none otherwise (then 'up' uses the base box).

    Exits 0 either way; scripts read --json or --github-output (version is empty when there is none).

    Example: vagabond prebuilt debian12-selinux --json
    """
    from vagabond import github
    from vagabond.definition import boxfile
    from vagabond.vm import prebuilt

    result = prebuilt.current(boxfile.find_box(box, _box_dirs()))
    if github_output:
        sys.stdout.write(github.outputs({key: result[key] for key in ("name", "version", "store")}))
    elif as_json:
        print(json.dumps(result, indent=2))
    else:
        ui.out.print(result["reason"] if result["version"] else f"no prebuilt box: {result['reason']}", markup=False)


base_app = typer.Typer(
    help="Base boxes built locally from the distribution's packages (no box catalog needed).", no_args_is_help=True
)
app.add_typer(base_app, name="base")


@base_app.command("key")
def base_key(
    box: BoxArg,
    github_output: Annotated[
        bool,
        typer.Option(
            "--github-output",
            help="Print base= (the key) and base-path= (the one directory to cache) lines for $GITHUB_OUTPUT.",
        ),
    ] = False,
) -> None:
    """Print the cache key of the box's base: it changes exactly when vagabond would build or
    import the base again (CI caches key on it); empty for a base Vagrant downloads itself.

    With --github-output, also the one directory that holds the made base (nothing else needs caching).

    Example: vagabond base key debian12-selinux
    """
    from vagabond import github
    from vagabond.bases import kinds
    from vagabond.definition import boxfile

    definition = boxfile.find_box(box, _box_dirs())
    if github_output:
        sys.stdout.write(
            github.outputs({"base": kinds.cache_key(definition), "base-path": kinds.cache_path(definition) or ""})
        )
        return
    print(kinds.cache_key(definition))


@base_app.command("build")
def base_build(
    box: Annotated[str, typer.Argument(help="A box whose base is of kind mmdebstrap (e.g. debian12).")],
    force: Annotated[bool, typer.Option("--force", help="Rebuild even when a cached build exists.")] = False,
    add: Annotated[bool, typer.Option("--add/--no-add", help="Also add it to Vagrant's box store.")] = True,
    out: Annotated[
        Optional[Path],
        typer.Option(
            "-o", "--out", metavar="DIR", help="Also copy the .box file into this directory (it stays cached)."
        ),
    ] = None,
) -> None:
    """Build a Debian/Ubuntu base box with mmdebstrap (cached in ~/.cache/vagabond; needs root).

    Through sudo, the box goes to /var/lib/vagabond/cache, which root writes and every user reads:
    the user's own 'vagabond up' finds it there and adds it to their Vagrant box store, so root is
    needed for this step only.

    The box has a 'vagrant' user with Vagrant's insecure key, passwordless sudo, DHCP on the first
    NIC, python3 for Ansible, and no machine-id or SSH host keys (each VM makes its own).

    Example: sudo "$(command -v vagabond)" base build debian12 && vagabond up debian12
    """
    from vagabond.bases import made, mmdebstrap
    from vagabond.definition import boxfile

    definition = boxfile.find_box(box, _box_dirs())
    shared = paths.sudo_invoker() is not None and not os.environ.get("VAGABOND_CACHE")
    if shared and not os.environ.get("XDG_CACHE_HOME"):
        # For this process only: root's own directory, which the invoking user's up reads (no file
        # in their home is touched, nothing handed over).
        os.environ["VAGABOND_CACHE"] = str(paths.SHARED_CACHE)
    else:
        shared = False
    built = mmdebstrap.build(definition, force=force)
    if shared:
        ui.info(
            f"the base box is in {paths.SHARED_CACHE}, which every user reads: 'vagabond up {box}' as you adds it "
            "to your Vagrant store (not added to root's)"
        )
    elif add:
        made.add_to_store(built)
    print(made.copy_box(built, out) if out is not None else built.box_file)
