"""PID 1 of the runner twin's PID namespace, as a runner's init is: it runs the command given and
reaps every process that ends up its child (libvirt's qemu daemonizes; a zombie left unreaped makes
libvirt wait for a kill that never completes), then exits with the command's status.

    python3 tests/twin_init.py COMMAND [ARG...]
"""

from __future__ import annotations

import os
import sys


def main() -> int:
    child = os.fork()
    if child == 0:
        os.execvp(sys.argv[1], sys.argv[1:])
    while True:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            return 1
        if pid == child:
            return os.waitstatus_to_exitcode(status)


if __name__ == "__main__":
    sys.exit(main())
