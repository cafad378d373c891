#!/usr/bin/env bash
# The main job: boot debian12-selinux for real and show SELinux enforcing from inside the VM.
#
# Debian's SELinux packages come from a local mirror that this script builds from Debian's
# packages and serves inside the sandbox namespace, so the guest needs no route to the internet.
# Set KEEP=1 to leave the VM running afterwards (vagabond destroy debian12-selinux removes it).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=${VAGABOND_VENV:-$ROOT/.venv}
CACHE=${VAGABOND_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vagabond}
PORT=8321
SANDBOX=("$ROOT/scripts/sandbox.sh" exec)
export VAGRANT_CHECKPOINT_DISABLE=1

"$ROOT/scripts/local-apt-repo.sh" "$CACHE/apt-repo" bookworm selinux-basics selinux-policy-default auditd

"${SANDBOX[@]}" python3 -m http.server --bind 0.0.0.0 "$PORT" --directory "$CACHE/apt-repo" >/dev/null 2>&1 &
mirror=$!
vars=$(mktemp --suffix=.json)
cleanup() {
  kill "$mirror" 2>/dev/null || true
  rm -f "$vars"
  if [[ "${KEEP:-0}" != 1 ]]; then "${SANDBOX[@]}" "$VENV/bin/vagabond" destroy debian12-selinux || true; fi
}
trap cleanup EXIT
# 192.168.121.1 is the host side of vagrant-libvirt's management network, as the guest sees it.
echo "{\"vagabond_apt_sources\": [\"deb [trusted=yes] http://192.168.121.1:$PORT/ ./\"]}" >"$vars"

"${SANDBOX[@]}" "$VENV/bin/vagabond" up debian12-selinux -e "@$vars"
echo "getenforce inside the VM says: $("${SANDBOX[@]}" "$VENV/bin/vagabond" run debian12-selinux -- getenforce)"
