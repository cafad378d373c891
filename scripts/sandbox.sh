#!/usr/bin/env bash
# Run libvirt's daemons, and anything that talks to VMs, inside a private network namespace.
#
# Used on hosts without a service manager (containers, some CI machines) and by vagabond's own
# tests: the VMs' private networks (192.168.121.0/24 ...) exist only inside the namespace and
# disappear with it, and nothing reaches them from the host's own network.
#
# vagabond itself runs outside it (mmdebstrap and downloads need the host's network) and starts only
# the programs that talk to VMs (vagrant up, ssh, ansible-playbook) inside: `start` records the
# namespace in /run/vagabond/netns, where vagabond finds it ($VAGABOND_NETNS overrides it).
#
#   scripts/sandbox.sh start         create the namespace, start virtlogd + libvirtd in it, pool 'default'
#   scripts/sandbox.sh exec CMD ...  run CMD inside the namespace (vagrant, virsh, ssh by hand)
#   scripts/sandbox.sh stop          stop the daemons and delete the namespace
#   scripts/sandbox.sh status
set -euo pipefail

NETNS="${VAGABOND_NETNS:-vagabond}"
IMAGES=/var/lib/libvirt/images
SETTING=/run/vagabond/netns  # read by vagabond (vagabond/sandbox.py)
export VAGRANT_CHECKPOINT_DISABLE=1  # never phone home for version checks

log() { echo "sandbox: $*" >&2; }

netns_of() {  # print the namespace name a pid lives in ("" for the root namespace)
  ip netns identify "$1" 2>/dev/null || true
}

daemon_pid() { pgrep -x "$1" | head -n1 || true; }

ensure_netns() {
  if ! ip netns list | awk '{print $1}' | grep -qx "$NETNS"; then
    ip netns add "$NETNS"
    log "created network namespace $NETNS"
  fi
  ip netns exec "$NETNS" ip link set lo up
}

configure_qemu() {
  # This host has a /dev/kvm that libvirt cannot use as the qemu user (mode 0600, no udev). Running
  # qemu as root lets libvirt open it once and cache its capabilities, instead of re-probing on
  # every call (4 s each). VMs still get the qemu driver: vagabond's detection decides that.
  local conf=/etc/libvirt/qemu.conf
  if ! grep -q '^# vagabond sandbox' "$conf" 2>/dev/null; then
    cat >>"$conf" <<'CONF'
# vagabond sandbox: qemu runs as root, without a security driver (no AppArmor/SELinux on this host)
user = "root"
group = "root"
dynamic_ownership = 0
security_driver = "none"
CONF
    log "configured $conf for the sandbox"
  fi
  # libvirt's own 'default' network (192.168.122.0/24) is not needed: vagrant-libvirt makes its own.
  rm -f /etc/libvirt/qemu/networks/autostart/default.xml
}

start_daemon() {
  local name=$1; shift
  local pid; pid=$(daemon_pid "$name")
  if [[ -n "$pid" && "$(netns_of "$pid")" != "$NETNS" ]]; then
    log "$name (pid $pid) runs outside namespace $NETNS: restarting it inside"
    kill "$pid"; for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    pid=""
  fi
  if [[ -z "$pid" ]]; then
    reaped ip netns exec "$NETNS" "$name" "$@"
    log "started $name in $NETNS"
  fi
}

# A daemon started under a process that reaps what it leaves, as a service manager does. An
# orphan (each QEMU libvirtd starts, dnsmasq, the daemon itself once it forks into the background)
# goes to the nearest subreaper above it, else to PID 1; a PID 1 that is no service manager may
# reap it late (this sandbox's: about 2 s), and libvirtd waits for each QEMU it stops to be gone,
# so every destroy and shutdown waited those seconds. `reaped CMD ...` runs CMD (a daemon that
# forks into the background) under such a reaper in a session of its own, and returns CMD's exit
# status once CMD has returned; the reaper stays, holding none of the caller's files (nor its
# working directory).
REAPER='
import ctypes, os, signal, sys
if ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0) != 0:  # PR_SET_CHILD_SUBREAPER
    sys.stderr.write("sandbox: no subreaper (prctl failed): orphans go to PID 1\n")
child = os.fork()
if child == 0:
    os.closerange(3, os.sysconf("SC_OPEN_MAX"))
    for ignored in (signal.SIGPIPE, signal.SIGXFSZ):  # as Python set them: the daemon gets the defaults
        signal.signal(ignored, signal.SIG_DFL)
    os.execvp(sys.argv[1], sys.argv[1:])
_, status = os.waitpid(child, 0)
os.write(3, b"%d" % os.waitstatus_to_exitcode(status))
os.chdir("/")
nothing = os.open(os.devnull, os.O_RDWR)
for fd in (0, 1, 2):
    os.dup2(nothing, fd)
os.closerange(3, os.sysconf("SC_OPEN_MAX"))
while True:
    try:
        os.wait()
    except ChildProcessError:
        break
'
reaped() {
  local status
  status=$(setsid -f python3 -c "$REAPER" "$@" 3>&1 1>&2 </dev/null)
  return "${status:-1}"
}

wait_libvirt() {
  for _ in $(seq 100); do
    virsh -c qemu:///system uri >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  log "libvirtd did not answer"; return 1
}

ensure_pool() {
  if ! virsh -q pool-info default >/dev/null 2>&1; then
    mkdir -p "$IMAGES"
    virsh -q pool-define-as default dir --target "$IMAGES" >/dev/null
    virsh -q pool-autostart default >/dev/null
  fi
  if [[ "$(virsh -q pool-info default)" != *running* ]]; then
    virsh -q pool-start default >/dev/null
  fi
}

# The system bus, as a host with a service manager has one: libvirtd asks polkit over it whether a
# user who is not root may use qemu:///system (the libvirt package's polkit rule lets members of
# the libvirt group in). Without it only root can use libvirt here.
ensure_system_bus() {
  if pgrep -x dbus-daemon >/dev/null && [[ -S /run/dbus/system_bus_socket ]]; then return 0; fi
  if ! command -v dbus-daemon >/dev/null; then log "no dbus-daemon: only root can use libvirt here"; return 0; fi
  mkdir -p /run/dbus
  rm -f /run/dbus/system_bus_socket /run/dbus/pid  # a bus that died left them
  dbus-daemon --system --fork
  log "started the system bus (dbus-daemon): libvirt's polkit rule lets the libvirt group in"
}

start() {
  ensure_netns
  configure_qemu
  ensure_system_bus
  mkdir -p /run/libvirt /var/log/libvirt
  start_daemon virtlogd -d
  start_daemon libvirtd -d
  wait_libvirt
  ensure_pool
  mkdir -p "$(dirname "$SETTING")"
  echo "$NETNS" >"$SETTING.tmp" && mv "$SETTING.tmp" "$SETTING"
  log "ready: libvirtd in namespace $NETNS, pool 'default' running; vagabond starts VM-facing programs there ($SETTING)"
}

stop() {
  rm -f "$SETTING"
  for name in libvirtd virtlogd; do
    pid=$(daemon_pid "$name")
    [[ -n "$pid" ]] && kill "$pid" && log "stopped $name"
  done
  if ip netns list | awk '{print $1}' | grep -qx "$NETNS"; then
    ip netns pids "$NETNS" | xargs -r kill 2>/dev/null || true
    ip netns delete "$NETNS"
    log "deleted network namespace $NETNS"
  fi
}

status() {
  for name in virtlogd libvirtd; do
    pid=$(daemon_pid "$name")
    if [[ -n "$pid" ]]; then echo "$name: pid $pid, namespace '$(netns_of "$pid")'"; else echo "$name: not running"; fi
  done
  echo "vagabond's setting: $(cat "$SETTING" 2>/dev/null || echo "none ($SETTING missing)")"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  exec) shift; ensure_netns; exec ip netns exec "$NETNS" "$@" ;;
  *) echo "usage: $0 start|stop|status|exec CMD..." >&2; exit 2 ;;
esac
