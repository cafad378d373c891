#!/usr/bin/env bash
# The main job: boot debian12-selinux for real and show SELinux enforcing from inside the VM.
#
# When the VMs live in the sandbox namespace (no service manager; scripts/sandbox.sh), the guest
# has no route to Debian's mirror: Debian's SELinux packages then come from a local mirror that
# this script builds from Debian's packages and serves inside the namespace. vagabond itself runs
# on the host either way, as a user types it.
# Set KEEP=1 to leave the VM running afterwards (vagabond destroy debian12-selinux removes it).
set -euo pipefail
ROOT=$(dirname "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")")
cd "$ROOT"
VENV=${VAGABOND_VENV:-$ROOT/.venv}
CACHE=${VAGABOND_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vagabond}
PORT=8321
VAGABOND=("$VENV/bin/vagabond")
export VAGRANT_CHECKPOINT_DISABLE=1

netns=${VAGABOND_NETNS-$(cat /run/vagabond/netns 2>/dev/null || true)}
args=()
mirror=""
vars=""
cleanup() {
  [[ -z "$mirror" ]] || kill "$mirror" 2>/dev/null || true
  [[ -z "$vars" ]] || rm -f "$vars"
  if [[ "${KEEP:-0}" != 1 ]]; then "${VAGABOND[@]}" destroy debian12-selinux || true; fi
}
trap cleanup EXIT

if [[ -n "$netns" ]]; then
  "$ROOT/scripts/local-apt-repo.sh" "$CACHE/apt-repo" bookworm selinux-basics selinux-policy-default auditd
  "$ROOT/scripts/sandbox.sh" exec python3 -m http.server --bind 0.0.0.0 "$PORT" --directory "$CACHE/apt-repo" \
    >/dev/null 2>&1 &
  mirror=$!
  vars=$(mktemp --suffix=.json)
  # 192.168.121.1 is the host side of vagrant-libvirt's management network, as the guest sees it.
  echo "{\"vagabond_apt_sources\": [\"deb [trusted=yes] http://192.168.121.1:$PORT/ ./\"]}" >"$vars"
  args=(-e "@$vars")
fi

"${VAGABOND[@]}" up debian12-selinux "${args[@]}"
echo "getenforce inside the VM says: $("${VAGABOND[@]}" run debian12-selinux -- getenforce)"
