#!/usr/bin/env bash
# Run vagabond's tests: unit, process-seam and real (Vagrant, libvirt, qemu, Ansible) tiers.
# Extra arguments go to pytest, e.g. scripts/test.sh tests/unit -k render
set -euo pipefail
cd "$(dirname "$0")/.."
export VAGRANT_CHECKPOINT_DISABLE=1
VENV=${VAGABOND_VENV:-$PWD/.venv}
if [[ ! -x "$VENV/bin/pytest" ]]; then
  echo "test: $VENV has no pytest; run scripts/install.sh first" >&2
  exit 2
fi
# libvirtd must be up for the real tier; without a service manager it lives in the sandbox.
if [[ $EUID -eq 0 && "$(ps -p 1 -o comm= 2>/dev/null)" != systemd ]]; then
  scripts/sandbox.sh start
fi
# The whole suite runs in two lanes at once (tests/lanes.py): the VMs on this host's libvirt in
# one, the runner twins (hosts of their own) in the other, the rest wherever a worker is free.
if [[ $# -eq 0 ]]; then
  set -- -n 2
fi
exec "$VENV/bin/python" -m pytest "$@"
