"""Base boxes of kind mmdebstrap: a Debian or Ubuntu box built from the distribution's packages
(a root file system by mmdebstrap, a bootable disk with GRUB, the guest recipe), cached by what
identifies it."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import stat
import time
from pathlib import Path

from vagabond import files, paths, process, timeouts, ui
from vagabond.bases import archive, diskimage, guest
from vagabond.bases.made import MadeBase
from vagabond.definition.schema import Box, MmdebstrapBase
from vagabond.errors import CommandFailed, UsageError, VagabondError

BASE_PACKAGES = [
    "linux-image-cloud-amd64",  # small kernel with the virtio drivers a VM needs
    "grub-pc",  # BIOS boot; update-grub lets guests change the command line (selinux-activate does)
    "systemd-sysv",
    "dbus",
    "openssh-server",
    "sudo",
    "python3",  # Ansible's modules run on it
    "python3-apt",  # Ansible's apt module needs it and would otherwise fetch it on first use
    "rsync",  # rsync synced folders
    "qemu-guest-agent",  # a VM restored from a warm image gets its new SSH key through it
]
NETWORK_UNIT = """\
[Match]
Name=en* eth*

[Network]
DHCP=ipv4
"""
GRUB_DEFAULTS = f"""\
GRUB_DEFAULT=0
GRUB_TIMEOUT=0
GRUB_DISTRIBUTOR=Debian
GRUB_CMDLINE_LINUX_DEFAULT="{guest.KERNEL_CMDLINE_DEFAULT}"
GRUB_CMDLINE_LINUX="{guest.KERNEL_CMDLINE}"
GRUB_TERMINAL="serial"
GRUB_SERIAL_COMMAND="serial --speed=115200"
GRUB_DISABLE_OS_PROBER=true
"""


def recipe_digest(base: MmdebstrapBase) -> str:
    data = {
        "recipe": guest.RECIPE_VERSION,
        "suite": base.suite,
        "packages": BASE_PACKAGES + base.packages,
        "disk": base.disk,
    }
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12]


def cache_dir_for(base: MmdebstrapBase) -> Path:
    return paths.cache_dir() / "boxes" / base.box.replace("/", "-") / recipe_digest(base)


def cached(base: MmdebstrapBase) -> MadeBase | None:
    """The base built in this user's cache; else one built as root through sudo (the shared cache,
    when root owns it and nobody else can write it)."""
    return MadeBase.load(cache_dir_for(base)) or _shared(base)


def _shared(base: MmdebstrapBase) -> MadeBase | None:
    directory = paths.SHARED_CACHE / cache_dir_for(base).relative_to(paths.cache_dir())
    if paths.cache_dir() == paths.SHARED_CACHE:
        return None  # this is the shared cache (a build through sudo): looked in already
    try:
        for probe in (directory, *directory.parents):
            st = probe.lstat()
            if stat.S_ISLNK(st.st_mode) or st.st_uid != 0 or st.st_mode & 0o022:
                return None  # a link, or a directory someone other than root could change
            if probe == paths.SHARED_CACHE:
                break
    except OSError:
        return None
    return MadeBase.load(directory)


def build(box: Box, *, force: bool = False) -> MadeBase:
    """Build the box's mmdebstrap base once; later calls return the cached one."""
    base = box.spec.base
    if not isinstance(base, MmdebstrapBase):
        raise UsageError(f"box {box.name!r} has a base of kind {base.kind!r}; only mmdebstrap bases are built locally")
    if not force and (hit := cached(base)):
        ui.info(f"base box {hit.name} {hit.version} is cached: {hit.box_file}")
        return hit
    if os.geteuid() != 0:
        raise UsageError(
            f"the base box of {box.name} is built once, as root (loop devices, mount, chroot)",
            hint=f'sudo "$(command -v vagabond)" base build {box.name}: it goes to {paths.SHARED_CACHE}, '
            f"which every user reads; then vagabond up {box.name} runs as you",
        )
    for tool in ("mmdebstrap", "losetup", "partx", "mkfs.ext4", "qemu-img"):
        if not process.which(tool):
            raise UsageError(f"'{tool}' is needed to build base boxes", hint="run scripts/install.sh")
    out_dir = cache_dir_for(base)
    files.make_dirs(out_dir)
    with diskimage.scratch_dir(out_dir, "vagabond-base-") as work:
        rootfs_tar = rootfs(base)
        raw = work / "disk.raw"
        kernel = out_dir / "vmlinuz"
        with ui.step(f"disk image ({base.disk} GiB, ext4, GRUB)"):
            make_disk(raw, rootfs_tar, base.disk, kernel_out=kernel)
        qcow = work / "box.img"
        with ui.step("qemu-img convert to compressed qcow2"):
            diskimage.convert_to_qcow2(raw, qcow)
        raw.unlink()
        version = time.strftime("%Y%m%d.%H%M%S", time.gmtime())
        box_file = out_dir / f"{base.box.replace('/', '-')}.box"
        archive.write_box(qcow, box_file, virtual_size_gib=base.disk)
    sha = files.sha256_file(box_file)
    catalog = out_dir / "metadata.json"
    archive.write_catalog(
        catalog,
        name=base.box,
        description=f"{base.suite} base box built by vagabond",
        version=version,
        box_url=box_file.resolve().as_uri(),
        sha256=sha,
    )
    # The probe kernel lets `vagabond doctor` smoke-boot a real kernel under KVM.
    kernels = paths.cache_dir() / "kernels"
    files.copy(kernel, files.make_dirs(kernels) / f"vmlinuz-{base.suite}")
    result = MadeBase(name=base.box, version=version, box_file=box_file, catalog=catalog, sha256=sha)
    result.save(out_dir)
    ui.info(f"base box {base.box} {version}: {box_file} ({box_file.stat().st_size / 2**20:.0f} MiB)")
    return result


def rootfs(base: MmdebstrapBase, extra_packages: list[str] | None = None, *, keep_debs: bool = False) -> Path:
    """The suite's root file system as a tar, cached by its package list (the slow, download part)."""
    packages = BASE_PACKAGES + base.packages + (extra_packages or [])
    key = hashlib.sha256(json.dumps([base.suite, packages, keep_debs]).encode()).hexdigest()[:12]
    target = paths.cache_dir() / "rootfs" / f"{base.suite}-{key}.tar"
    if target.is_file():
        return target
    files.make_dirs(target.parent)
    # mmdebstrap's chroot (with /proc, /sys and /dev mounted in it) and its tar go into a directory
    # of ours: when it is stopped before it can clean up, vagabond unmounts and removes what it left;
    # the tar takes its name only whole (files.move).
    with diskimage.scratch_dir(target.parent, "mmdebstrap-") as work:
        made = work / "rootfs.tar"
        with ui.step(f"mmdebstrap {base.suite} ({len(packages)} packages)"):
            run_mmdebstrap(base, made, packages, keep_debs=keep_debs, tmpdir=work)
        files.move(made, target)
    return target


# Each distribution's archive keyring, and the package that ships it (Debian and Ubuntu package both).
# An Ubuntu host (GitHub's runners) has no Debian keyring: mmdebstrap then trusts nothing for a
# Debian suite and apt stops at NO_PUBKEY, so vagabond names the keyring itself.
ARCHIVE_KEYRINGS = {
    "debian": (Path("/usr/share/keyrings/debian-archive-keyring.gpg"), "debian-archive-keyring"),
    "ubuntu": (Path("/usr/share/keyrings/ubuntu-archive-keyring.gpg"), "ubuntu-keyring"),
}
# Ubuntu's suites, for hosts without distro-info-data (where mmdebstrap itself looks them up).
UBUNTU_SUITES = {"focal", "jammy", "noble", "oracular", "plucky", "questing", "resolute"}
DISTRO_INFO = Path("/usr/share/distro-info")


def distribution(suite: str) -> str:
    """'ubuntu' or 'debian': whose archive a suite is in (distro-info-data's lists, else vagabond's own)."""
    with contextlib.suppress(OSError):
        for line in (DISTRO_INFO / "ubuntu.csv").read_text().splitlines()[1:]:
            fields = line.split(",")
            if len(fields) > 2 and fields[2] == suite:
                return "ubuntu"
    return "ubuntu" if suite in UBUNTU_SUITES else "debian"


def archive_keyring(suite: str) -> Path:
    """The keyring that signs the suite's archive, or a UsageError that says which package has it."""
    path, package = ARCHIVE_KEYRINGS[distribution(suite)]
    if not path.is_file():
        raise UsageError(
            f"building a {suite} base box needs {distribution(suite).capitalize()}'s archive key ({path} is missing)",
            hint=f"sudo apt-get install {package}",
        )
    return path


def run_mmdebstrap(
    base: MmdebstrapBase, target: Path, packages: list[str], *, keep_debs: bool = False, tmpdir: Path | None = None
) -> None:
    # No mirror argument: mmdebstrap uses the distribution's mirror for the suite, as the host's apt does.
    keyring = archive_keyring(base.suite)
    argv = [
        "mmdebstrap",
        "--variant=apt",
        "--mode=root",
        "--format=tar",
        f"--keyring={keyring}",
        "--include=" + ",".join(packages),
        "--dpkgopt=path-exclude=/usr/share/doc/*",
        "--dpkgopt=path-include=/usr/share/doc/*/copyright",
        "--dpkgopt=path-exclude=/usr/share/man/*",
        "--dpkgopt=path-exclude=/usr/share/locale/*",
    ]
    if keep_debs:
        # Keep the downloaded .debs: they become a local apt repository for offline guests.
        argv.append("--skip=download/empty")
    argv += [base.suite, str(target)]
    env = dict(os.environ, TMPDIR=str(tmpdir)) if tmpdir else None  # where mmdebstrap makes its chroot
    try:
        process.check(argv, env=env, timeout=timeouts.MMDEBSTRAP, stream=_progress("mmdebstrap"))
    except CommandFailed as err:
        if "NO_PUBKEY" in err.stderr or "NO_PUBKEY" in err.stdout:
            _, package = ARCHIVE_KEYRINGS[distribution(base.suite)]
            raise UsageError(
                f"mmdebstrap could not check the {base.suite} archive's signature with {keyring}: a key is missing",
                hint=f"sudo apt-get install --reinstall {package} (a newer one may be needed for {base.suite})",
            ) from err
        raise


def _progress(prefix: str):
    def sink(line: str) -> None:
        if line.startswith(("I: ", "E: ", "W: ")):
            ui.info(f"{prefix}: {line.strip()}")

    return sink


# Where udev keeps a file system's link by UUID (made here by hand while GRUB is configured).
BY_UUID = Path("/dev/disk/by-uuid")


def make_disk(
    raw: Path, rootfs_tar: Path, size_gib: int, *, kernel_out: Path, vagrant_user: bool = True, gpt: bool = False
) -> None:
    """The rootfs on a bootable raw disk: one MBR partition (vagabond's base boxes), or with gpt the
    layout of a distribution's generic cloud image (BIOS boot partition, root last)."""
    (diskimage.write_gpt if gpt else diskimage.write_mbr)(raw, size_gib * 2**30)
    with contextlib.ExitStack() as stack:
        loop, parts = stack.enter_context(diskimage.attached(raw))
        part = parts[-1]
        process.check(["mkfs.ext4", "-q", "-L", "root", "-m", "1", part], timeout=timeouts.FILESYSTEM)
        uuid = process.check(["blkid", "-s", "UUID", "-o", "value", part], timeout=timeouts.TOOL).stdout.strip()
        mnt = raw.parent / "mnt"
        mnt.mkdir()
        process.check(["mount", part, str(mnt)], timeout=timeouts.TOOL)
        stack.callback(process.run, ["umount", "--recursive", str(mnt)], timeout=timeouts.TOOL)
        process.check(
            [
                "tar",
                "--extract",
                "--preserve-permissions",
                "--numeric-owner",
                "--xattrs",
                "--file",
                str(rootfs_tar),
                "--directory",
                str(mnt),
            ],
            timeout=timeouts.UNPACK,
        )
        configure_guest(mnt, uuid, vagrant_user=vagrant_user)
        for fs in ("dev", "proc", "sys"):
            process.check(
                ["mount", "--rbind" if fs == "dev" else "--bind", f"/{fs}", str(mnt / fs)], timeout=timeouts.TOOL
            )
        process.check(
            [
                "chroot",
                str(mnt),
                "grub-install",
                "--target=i386-pc",
                f"--modules={'part_gpt' if gpt else 'part_msdos'} ext2",
                loop,
            ],
            timeout=timeouts.CHROOT,
        )
        # grub-mkconfig writes root=UUID=... only when /dev/disk/by-uuid has the link, which udev
        # would make; without udev the kernel would be told root=/dev/loopNp1.
        by_uuid = BY_UUID / uuid
        by_uuid.parent.mkdir(parents=True, exist_ok=True)
        by_uuid.symlink_to(part)
        stack.callback(by_uuid.unlink, missing_ok=True)
        # The initramfs again, with only the drivers guest.INITRAMFS_MODULES lists.
        process.check(
            ["chroot", str(mnt), "update-initramfs", "-u", "-k", "all"], timeout=timeouts.CHROOT, env=_chroot_env()
        )
        process.check(["chroot", str(mnt), "update-grub"], timeout=timeouts.CHROOT, env=_chroot_env())
        grub_cfg = (mnt / "boot/grub/grub.cfg").read_text()
        if f"root=UUID={uuid}" not in grub_cfg:
            raise VagabondError("update-grub did not write root=UUID=... into grub.cfg; the box would not boot")
        kernel = sorted((mnt / "boot").glob("vmlinuz-*"))[-1]
        shutil.copy2(kernel, kernel_out)
        _scrub(mnt)


def _chroot_env() -> dict[str, str]:
    # A minimal, predictable environment for commands run inside the guest's root.
    return {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", "DEBIAN_FRONTEND": "noninteractive"}


def configure_guest(root: Path, uuid: str, *, vagrant_user: bool = True) -> None:
    """Everything that turns a Debian root file system into a Vagrant base box (or, without the
    vagrant user, into a generic cloud image that cloud-init completes)."""
    (root / "etc/fstab").write_text(f"UUID={uuid} / ext4 errors=remount-ro 0 0\n")  # no fsck (guest.py)
    (root / "etc/hostname").write_text("vagabond\n")
    (root / "etc/hosts").write_text(
        "127.0.0.1 localhost\n127.0.1.1 vagabond\n::1 localhost ip6-localhost ip6-loopback\n"
    )
    (root / "etc/default/grub").write_text(GRUB_DEFAULTS)
    # sshd runs commands with a PATH that lacks the sbin directories (getenforce, sysctl ...);
    # pam_env gives every session this one, as Ubuntu does.
    (root / "etc/environment").write_text('PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"\n')
    net = root / "etc/systemd/network/20-dhcp.network"
    net.write_text(NETWORK_UNIT)
    dropin = root / "etc/systemd/system/ssh.service.d"
    dropin.mkdir(parents=True, exist_ok=True)
    (dropin / "host-keys.conf").write_text(guest.SSH_KEYGEN_DROPIN)
    # Keys only (and no reverse DNS lookup of the host, which makes every login wait under emulation).
    sshd = root / "etc/ssh/sshd_config.d"
    sshd.mkdir(parents=True, exist_ok=True)
    (sshd / "vagabond.conf").write_text(guest.SSHD_DROPIN + guest.SSHD_HOST_KEY)
    (root / "etc/initramfs-tools/conf.d").mkdir(parents=True, exist_ok=True)
    (root / "etc/initramfs-tools/conf.d/vagabond.conf").write_text(guest.INITRAMFS_CONF)
    with (root / "etc/initramfs-tools/modules").open("a") as modules:
        modules.write("# vagabond: a libvirt guest's root disk\n" + "".join(f"{m}\n" for m in guest.INITRAMFS_MODULES))
    script = root / guest.AUTHORIZED_KEY_SCRIPT_PATH.lstrip("/")
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_text(guest.AUTHORIZED_KEY_SCRIPT)
    script.chmod(0o755)
    (root / "etc/systemd/system" / guest.AUTHORIZED_KEY_UNIT_NAME).write_text(guest.AUTHORIZED_KEY_UNIT)
    env = _chroot_env()
    chroot = ["chroot", str(root)]
    process.check(
        chroot + ["systemctl", "enable", "systemd-networkd", "ssh", guest.AUTHORIZED_KEY_UNIT_NAME],
        env=env,
        timeout=timeouts.CHROOT,
    )
    # Boot must not wait for "network online": DHCP comes when it comes, and vagrant waits for it.
    process.check(
        chroot + ["systemctl", "mask", "systemd-networkd-wait-online.service", *guest.MASKED_TIMERS],
        env=env,
        timeout=timeouts.CHROOT,
    )
    if not vagrant_user:
        return
    process.check(
        chroot + ["useradd", "--create-home", "--shell", "/bin/bash", "--user-group", "vagrant"],
        env=env,
        timeout=timeouts.CHROOT,
    )
    # No password for anyone: vagrant logs in with a key (sudo needs none), root not at all.
    ssh_dir = root / "home/vagrant/.ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    (ssh_dir / "authorized_keys").write_text(guest.INSECURE_PUBLIC_KEY + "\n")
    (ssh_dir / "authorized_keys").chmod(0o600)
    process.check(chroot + ["chown", "-R", "vagrant:vagrant", "/home/vagrant/.ssh"], env=env, timeout=timeouts.CHROOT)
    sudoers = root / "etc/sudoers.d/vagrant"
    sudoers.write_text("vagrant ALL=(ALL) NOPASSWD: ALL\nDefaults:vagrant !requiretty\n")
    sudoers.chmod(0o440)


def _scrub(root: Path) -> None:
    """Per-instance identity out: each VM gets its own machine-id and SSH host keys on first boot."""
    (root / "etc/machine-id").write_text("")
    with contextlib.suppress(FileNotFoundError):
        (root / "var/lib/dbus/machine-id").unlink()
    for key in (root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    for leftover in ("var/cache/apt/archives", "var/lib/apt/lists", "var/lib/apt/periodic"):
        for item in (root / leftover).glob("*"):
            if item.is_file():
                item.unlink()


# --- the kind's face (vagabond.bases.kinds) --------------------------------------------------------


def cache_key(box: Box) -> str:
    return f"vagabond-base-{files.safe_name(box.spec.base.box)}-{recipe_digest(box.spec.base)}"


def cache_path(box: Box) -> Path:
    return cache_dir_for(box.spec.base)


def make(box: Box, image: str | None = None) -> MadeBase:
    return build(box)
