"""udev's part for the runner twin's /dev (a tmpfs, as a container's is): the loop devices and
their partitions appear and go as the kernel makes them (a hosted runner's udev does this), each
node with the kernel's own device number, so `losetup` and `partx --add` work inside the twin.

    python3 tests/udev_standin.py ROOT
"""

from __future__ import annotations

import contextlib
import os
import stat
import sys
import time


def sync(root: str) -> None:
    want = {}
    for name in os.listdir("/dev"):
        if not name.startswith("loop"):
            continue
        with contextlib.suppress(OSError):
            st = os.stat(f"/dev/{name}")
            if stat.S_ISBLK(st.st_mode) or stat.S_ISCHR(st.st_mode):
                want[name] = (stat.S_IFMT(st.st_mode), st.st_rdev)
    here = f"{root}/dev"
    for name in os.listdir(here):
        if name.startswith("loop") and name not in want:
            os.unlink(f"{here}/{name}")
    for name, (kind, rdev) in want.items():
        path = f"{here}/{name}"
        try:
            if os.lstat(path).st_rdev == rdev:
                continue
            os.unlink(path)  # a number the kernel gave another device since: never left pointing there
        except FileNotFoundError:
            pass
        os.mknod(path, kind | 0o660, rdev)
        os.chown(path, 0, 6)  # root:disk, as udev makes them


if __name__ == "__main__":
    while True:
        sync(sys.argv[1])
        time.sleep(0.05)
